"""Hostile RTP at a live secure call's media port: random floods, a replay of the call's own captured frames
(from the relay's address and from elsewhere), and frames sealed under another call's keys. All are refused and
counted by reason; the call's audio is unaffected and the receiver never moves its media destination.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ratchet.frame import COUNTER_MOD, COUNTER_SHIFT
from tests.support.live_call import foreign_frames, live_secure_call, udp_burst
from voipgw.rtp.packet import build_rtp, parse_rtp

pytestmark = [pytest.mark.integration, pytest.mark.hardening]

RANDOM_DATAGRAMS = 500
"""Random bytes: almost all are not RTP at all (counted by the endpoint, not by the call summary)."""
RANDOM_FRAMES = 1000
"""Well-formed RTP of the call's payload type and SSRC with random payloads: each reaches the frame opener."""
FOREIGN_FRAMES = 100


def test_hostile_rtp_during_a_secure_call(tmp_path: Path) -> None:
    rng = random.Random(6)
    with live_secure_call(tmp_path) as call:
        call.wait_media(100, timeout=30)
        bob = call.bob_media()
        captured = list(call.relay.recorded)
        sample = parse_rtp(captured[-1])
        pt, ssrc = sample.payload_type, sample.ssrc
        counter = (int.from_bytes(sample.payload[:4], "big") >> COUNTER_SHIFT) % COUNTER_MOD

        udp_burst(bob, [rng.randbytes(rng.randrange(1, 1400)) for _ in range(RANDOM_DATAGRAMS)])
        junk = [
            build_rtp(pt, rng.randrange(65536), rng.randrange(2**32), ssrc, rng.randbytes(rng.randrange(0, 300)))
            for _ in range(RANDOM_FRAMES)
        ]
        udp_burst(bob, junk)
        udp_burst(bob, captured)  # a replay from a stranger's address
        call.relay_thread.send_as_relay(captured)  # ... and from the address bob latched onto
        udp_burst(bob, foreign_frames(pt, ssrc, sample.sequence + 50, counter + 50, FOREIGN_FRAMES))
        sent_at_bob = RANDOM_FRAMES + 2 * len(captured) + FOREIGN_FRAMES

        assert call.alice.wait(90) == 0, call.alice.log()
        assert call.bob.wait(20) == 0, call.bob.log()
        stats = call.relay.stats

    a, b = call.alice.summary(), call.bob.summary()
    print(f"bob refused {b['frames_refused']} of {sent_at_bob} hostile frames: {b['refused_by_reason']}")
    assert a["state"] == b["state"] == "ended" and a["security"] == b["security"] == "secure, unverified"
    assert a["sas"] == b["sas"] is not None
    reasons = b["refused_by_reason"]
    # every hostile frame of our payload type was refused, and each one was counted under a reason
    assert b["frames_refused"] == sum(reasons.values())
    assert b["frames_opened"] + b["frames_refused"] == b["frames_received"]
    assert b["frames_refused"] >= sent_at_bob - 5  # a few early junk frames may land before keys exist
    assert reasons.get("replayed", 0) + reasons.get("expired-key", 0) >= 2 * len(captured) - 5
    assert reasons.get("key-desync", 0) >= FOREIGN_FRAMES - 5
    # and none of it cost the call anything
    assert b["frames_opened"] >= stats.a_to_b.forwarded - 5
    assert a["frames_refused"] == 0
    for proc in (call.alice, call.bob):
        assert call.heard(proc).windowed >= 0.9, (proc.name, call.heard(proc))
    log = call.bob.log()
    assert "Traceback" not in log
    assert len(log.splitlines()) <= 60, log
