"""End to end through the contract: a real handshake's SessionKeys drive the media ratchet (ratchet.session),
frames open in both directions, and both sides reach the same SAS: the answerer after the offerer's in-band reveal
of r, the offerer only after the answerer's reveal of s, which waits for ``reveal_sas()``."""

from __future__ import annotations

import pytest

from ratchet.errors import FrameError
from ratchet.params import FrameSuite, SendParams, Suite
from ratchet.session import MediaSession
from tests.support.handshake_fixtures import CLASSICAL, HYBRID, T0, answer, make_offerer


@pytest.mark.parametrize("suites", [CLASSICAL, HYBRID], ids=["x25519", "hybrid"])
def test_handshake_keys_carry_a_call(suites: frozenset[Suite]) -> None:
    offerer = make_offerer(suites, send_params=SendParams(frames_per_key=5))
    wire, bob_keys = answer(
        offerer.offer_bytes, suites=suites, send_params=SendParams(frame_suite=FrameSuite.AES256_GCM_128)
    )
    alice_keys = offerer.accept_answer(wire, T0 + 0.1)
    alice, bob = MediaSession(alice_keys, T0 + 0.2), MediaSession(bob_keys, T0 + 0.2)
    assert alice.sas is None and bob.sas is None  # neither side has both contributions yet
    now = T0 + 0.2
    for i in range(60):
        now += 0.02
        payload = bytes([i]) * 60
        assert bob.open(alice.seal(payload, now), now) == payload
        assert alice.open(bob.seal(payload[::-1], now), now) == payload[::-1]
    assert bob.sas is not None and alice.sas is None  # Bob can show it while ringing; Alice waits for s
    bob.reveal_sas()  # Bob's phone rings with the SAS
    for _ in range(10):
        now += 0.02
        assert alice.open(bob.seal(b"ring", now), now) == b"ring"
    assert alice.sas == bob.sas and not bob.sas_failed and not alice.sas_failed


def test_mismatched_handshakes_do_not_interoperate() -> None:
    """Keys from two different handshakes (what a relaying MITM would give each end) never open frames."""
    first, second = make_offerer(), make_offerer()
    wire1, _ = answer(first.offer_bytes)
    _, bob_keys = answer(second.offer_bytes)
    alice = MediaSession(first.accept_answer(wire1, T0 + 0.1), T0 + 0.2)
    bob = MediaSession(bob_keys, T0 + 0.2)
    with pytest.raises(FrameError):
        bob.open(alice.seal(b"x" * 60, T0 + 0.25), T0 + 0.25)
