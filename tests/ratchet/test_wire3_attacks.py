"""Issue 14's attacker tests at the protocol level: real MediaSessions on a simulated clock, an attacker that
injects what it can build from the wire, and a relay that drops what it likes."""

from __future__ import annotations

import os
import random

import pytest

from ratchet.events import Degradation, LocalRatchetStep, MediaDegraded, MediaRestored, PeerRatchetStep
from ratchet.frame import COUNTER_MOD, COUNTER_SHIFT, EPOCH_MOD, EPOCH_SHIFT
from ratchet.session import MediaConfig
from tests.support.media_sim import Call, Drop, Inject, bursty_loss, make_call, never, random_loss, window

CONFIG = MediaConfig(dh_interval_s=5.0, peer_dh_timeout_s=10.0)


def forger(seed: int, per_frame: int = 20) -> Inject:
    """1,000 forged frames/s at 50 genuine frames/s: next-epoch frames with a plausible header, replays with a bit
    flipped, far-ahead counters in the current epoch, random bytes. Only values read off the wire are used."""
    rnd = random.Random(seed)

    def inject(_now: float, sent: list[bytes]) -> list[bytes]:
        last = sent[-1]
        word = int.from_bytes(last[:4], "big")
        out = []
        for i in range(per_frame):
            kind = i % 4
            if kind == 0:  # the next epoch, as a new DH step would look
                e = ((word >> EPOCH_SHIFT) + 1) % EPOCH_MOD
                w = (word & ~((EPOCH_MOD - 1) << EPOCH_SHIFT)) | (e << EPOCH_SHIFT)
                c = ((word >> COUNTER_SHIFT) + rnd.randrange(1, 64)) % COUNTER_MOD
                w = (w & ~((COUNTER_MOD - 1) << COUNTER_SHIFT)) | (c << COUNTER_SHIFT)
                out.append(w.to_bytes(4, "big") + rnd.randbytes(len(last) - 4))
            elif kind == 1:  # a recent genuine frame, replayed with one bit flipped
                frame = bytearray(sent[-rnd.randrange(1, min(len(sent), 50) + 1)])
                frame[rnd.randrange(len(frame))] ^= 1 << rnd.randrange(8)
                out.append(bytes(frame))
            elif kind == 2:  # the current epoch, far ahead: chain look-ahead
                c = ((word >> COUNTER_SHIFT) + rnd.randrange(64, COUNTER_MOD // 2)) % COUNTER_MOD
                w = (word & ~((COUNTER_MOD - 1) << COUNTER_SHIFT)) | (c << COUNTER_SHIFT)
                out.append(w.to_bytes(4, "big") + rnd.randbytes(len(last) - 4))
            else:
                out.append(os.urandom(len(last)))
        return out

    return inject


def _steps_followed(call: Call) -> tuple[int, int]:
    a, b = call.a.stats, call.b.stats
    assert a.local_steps == b.peer_steps, "a step of a's direction was not followed by b"
    assert b.local_steps == a.peer_steps, "a step of b's direction was not followed by a"
    assert len(call.of("a", LocalRatchetStep)) == a.local_steps
    assert len(call.of("b", PeerRatchetStep)) == b.peer_steps
    return a.local_steps, b.local_steps


def test_a_flood_of_forged_frames_costs_no_audio_and_no_dh_step() -> None:
    """1,000 forged frames/s each way for 2 minutes with DH steps every 5 s: every step is followed both ways and
    exactly as much audio opens as without the flood (all of it)."""
    quiet = make_call(CONFIG)
    quiet.run(120.0)
    flood = make_call(CONFIG)
    flood.ab.inject = forger(1)
    flood.ba.inject = forger(2)
    flood.run(120.0)
    assert flood.ab.forged == flood.ba.forged == 6000 * 20
    assert flood.ab.forged_opened == flood.ba.forged_opened == 0
    for d_quiet, d_flood in ((quiet.ab, flood.ab), (quiet.ba, flood.ba)):
        assert d_flood.lost_after_delivery == d_quiet.lost_after_delivery == 0
        assert len(d_flood.opened) == len(d_quiet.opened) == 6000
    steps = _steps_followed(flood)
    assert steps == _steps_followed(quiet)
    assert min(steps) >= 22  # 120 s / 5 s, less the ack round trips
    # No DH on unauthenticated input: one X25519 per distinct authenticated announcement, as without the flood.
    assert flood.b.opener.dh_computations == quiet.b.opener.dh_computations == flood.a.stats.local_steps
    assert not flood.events["a"] or not any(isinstance(e, MediaDegraded) for e in flood.events["a"])


@pytest.mark.parametrize(
    "loss",
    [
        pytest.param(lambda s: random_loss(0.3, s), id="random-30"),
        pytest.param(lambda s: bursty_loss(0.3, 4.0, s), id="bursty-30"),
    ],
)
def test_every_dh_step_completes_under_30_percent_loss(loss: object) -> None:
    call = make_call(CONFIG)
    call.ab.drop = loss(11)  # type: ignore[operator]
    call.ba.drop = loss(12)  # type: ignore[operator]
    call.run(120.0)
    call.ab.drop = call.ba.drop = never
    call.run(0.5)  # the last step's first frames arrive
    assert 0.25 < 1 - call.ab.delivered / len(call.ab.sent) < 0.35
    assert call.ab.lost_after_delivery == call.ba.lost_after_delivery == 0
    steps = _steps_followed(call)
    assert min(steps) >= 22
    assert not any(isinstance(e, MediaDegraded) for side in "ab" for e in call.events[side])


def _blocked(start: float, end: float) -> Drop:
    return window(start, end)


def test_a_relay_blocking_everything_for_20_s_around_a_step_degrades_then_recovers() -> None:
    call = make_call(CONFIG)
    call.run(12.0)
    steps_before = call.a.stats.local_steps
    assert steps_before >= 1
    start = call.now
    last_step = {side: call.of(side, LocalRatchetStep)[-1].at for side in "ab"}  # type: ignore[attr-defined]
    call.ab.drop = call.ba.drop = _blocked(start, start + 20.0)
    call.run(30.0)
    # Raised within 2 × the interval: our next step was due 5 s after the last one, unacked 10 s after that; the
    # peer's last step is at most 5 s old at the block, NO_PEER_STEP comes 10 s after it.
    for side in "ab":
        degraded = {e.reason: e.since for e in call.of(side, MediaDegraded)}  # type: ignore[attr-defined]
        restored = {e.reason: e.at for e in call.of(side, MediaRestored)}  # type: ignore[attr-defined]
        assert set(degraded) == set(restored) == {Degradation.OWN_STEP_UNACKED, Degradation.NO_PEER_STEP}
        assert degraded[Degradation.OWN_STEP_UNACKED] <= last_step[side] + 5.0 + 2 * 5.0 + 0.1
        assert degraded[Degradation.NO_PEER_STEP] <= start + 10.0 + 0.1
        for reason, at in restored.items():
            assert start + 20.0 <= at <= start + 21.0, reason
    # No desync: after the block every frame opens and the steps go on, followed both ways.
    assert call.ab.lost_after_delivery == call.ba.lost_after_delivery == 0
    assert call.ab.opened[-1] == len(call.ab.sent) - 1
    assert call.a.stats.local_steps >= steps_before + 2
    _steps_followed(call)
    assert call.a.stats.degraded == call.b.stats.degraded == frozenset()
