"""Terminal emphasis for what must not be missed (a changed key, NOT SECURE, an SAS mismatch): bold red and a bell
on a terminal; plain text without one, or with ``NO_COLOR`` set (https://no-color.org), or ``TERM=dumb``."""

from __future__ import annotations

import os
from typing import TextIO

RED_BOLD = "\x1b[1;31m"
RESET = "\x1b[0m"
BELL = "\a"


def use_colour(stream: TextIO) -> bool:
    """Colour and bells only for a person at a terminal that wants them."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream: plain
        return False


def loud(text: str, stream: TextIO, *, bell: bool = True) -> str:
    """``text`` in bold red (and a bell first) when ``stream`` is a terminal that wants colour; else unchanged."""
    if not use_colour(stream):
        return text
    return (BELL if bell else "") + RED_BOLD + text + RESET
