"""A middlebox that rewrites the key-exchange attribute: the call is refused at both ends and no audio flows."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from tests.support.phones import SPEECH, start_caller, start_listener
from tests.testbed.sip_mangler import SipMangler

pytestmark = [pytest.mark.integration, pytest.mark.hardening]

EPHEMERAL_OFFSET = 100  # inside the offer's x25519 ephemeral key (PROTOCOL.md §3.2)


def swap_ephemeral(sdp: str) -> str:
    def flip(m: re.Match[str]) -> str:
        raw = bytearray(base64.urlsafe_b64decode(m.group(1) + "=" * (-len(m.group(1)) % 4)))
        raw[EPHEMERAL_OFFSET] ^= 0x40
        return "a=voipgw:" + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")

    out, n = re.subn(r"a=voipgw:([A-Za-z0-9_-]+)", flip, sdp)
    assert n == 1
    return out


def test_rewritten_key_attribute_refuses_the_call_at_both_ends(tmp_path: Path) -> None:
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH))
    with SipMangler(("127.0.0.1", bob.sip_port), on_offer=swap_ephemeral) as mangler:
        alice = start_caller(tmp_path, "alice", f"sip:bob@127.0.0.1:{mangler.port}", "--play", str(SPEECH))
        try:
            assert alice.wait(30) == 1, alice.log()
            assert bob.wait(10) == 1, bob.log()
        finally:
            alice.stop()
            bob.stop()
        assert mangler.offers_rewritten >= 1
    a, b = alice.summary(), bob.summary()
    assert a["state"] == b["state"] == "failed"
    assert "bad-signature" in b["reason"] and "488" in b["reason"]
    assert "488" in a["reason"] and "bad-signature" in a["reason"], a["reason"]  # the Warning reached the caller
    assert a["frames_sent"] == b["frames_sent"] == 0
    assert a["frames_received"] == b["frames_received"] == 0
    assert not bob.wav.exists() or bob.wav.stat().st_size < 100
