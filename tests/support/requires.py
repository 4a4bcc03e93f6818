"""External tools an integration test needs (Kamailio, baresip, rtpengine, sipp, pjsua2, sox): skipped with the
reason when one is missing, so it can be deselected locally, but failed in CI (``CI=true``), where a missing tool
means a broken set-up, never a silently smaller run. Never installs anything."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Iterable

import pytest

SETUP_HINT = "run scripts/setup.sh"
KAMAILIO = "/usr/sbin/kamailio"


def _on_path(name: str) -> Callable[[], bool]:
    return lambda: shutil.which(name) is not None


TOOLS: dict[str, Callable[[], bool]] = {
    "kamailio": lambda: os.access(KAMAILIO, os.X_OK),
    "baresip": _on_path("baresip"),
    "rtpengine": _on_path("rtpengine"),
    "sipp": _on_path("sipp"),
    "tshark": _on_path("tshark"),
    "sox": _on_path("sox"),
    "espeak-ng": _on_path("espeak-ng"),
    "pjsua2": lambda: importlib.util.find_spec("pjsua2") is not None,
    "chromium": _on_path("chromium"),
    "chromedriver": _on_path("chromedriver"),
    "selenium": lambda: importlib.util.find_spec("selenium") is not None,
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing(tools: Iterable[str]) -> list[str]:
    """The tools of ``tools`` that are not installed (a name outside TOOLS is a typo: KeyError)."""
    return [t for t in tools if not TOOLS[t]()]


def need(*tools: str) -> None:
    """Skip the running test (fail it under CI) when one of ``tools`` is missing; the launchers call this."""
    absent = missing(tools)
    if not absent:
        return
    message = f"{', '.join(absent)} not found: {SETUP_HINT}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def requires(*tools: str) -> pytest.MarkDecorator:
    """``pytestmark = [pytest.mark.integration, requires("kamailio", "baresip")]``: checked before the test's
    fixtures start anything (tests/conftest.py)."""
    unknown = set(tools) - set(TOOLS)
    if unknown:
        raise KeyError(f"unknown tools {sorted(unknown)}; known: {sorted(TOOLS)}")
    return pytest.mark.requires(*tools)
