"""Names shown next to a security label (the gateway's ringing label, the softphone's call lines) and stored as a
contact's local name: the one cleaning rule both use, so a name can never fake, hide or push away a label.
Pure: no I/O.

A name loses every bracket, quote, control, format (bidi) and unassigned character, and runs of white space; it is
cut to MAX_NAME characters."""

from __future__ import annotations

import unicodedata

MAX_NAME = 32
"""A longer name is cut: it could only push the rest of a phone's screen away."""
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Me", "Ps", "Pe", "Pi", "Pf"})
"""Controls, format characters (bidi overrides, zero width), surrogates, private use, unassigned, line and
paragraph separators, enclosing marks, and every opening/closing bracket and quote of any script."""
_DROP_CHARS = frozenset('<>"\\`[]{}()')
"""ASCII that delimits a label or a SIP display name (``<`` ``>`` are maths symbols, ``"`` plain punctuation)."""


def clean_name(text: str | None) -> str:
    """``text`` without anything that could fake, hide or push away a label: NFKC-normalised (full-width
    brackets become ASCII ones, then go), no brackets, quotes, controls or format characters, white space
    collapsed, at most MAX_NAME characters. "" when nothing is left."""
    if not text:
        return ""
    kept: list[str] = []
    for ch in unicodedata.normalize("NFKC", text):
        if ch.isspace():  # tabs, line breaks and odd spaces separate words: one plain space each
            kept.append(" ")
        elif unicodedata.category(ch) not in _DROP_CATEGORIES and ch not in _DROP_CHARS:
            kept.append(ch)
    return " ".join("".join(kept).split())[:MAX_NAME].strip()


def local_name(text: str | None) -> str | None:
    """A contact's local name as stored: cleaned, None when nothing is left."""
    return clean_name(text) or None


__all__ = ["MAX_NAME", "clean_name", "local_name"]
