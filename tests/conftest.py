"""Fixtures shared by more than one test module (a module's own fixture of the same name takes precedence)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.testbed.sip_peer import SipPeer


@pytest.fixture
def peer() -> Iterator[SipPeer]:
    """A voipgw SIP stack in a child process (tests/testbed/sip_peer.py), stopped by PID after the test."""
    p = SipPeer()
    try:
        yield p
    finally:
        p.stop()
