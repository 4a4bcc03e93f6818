"""Wire v3 recovery: outages shorter than the media timeout recover within 2 s (the 14-bit counter, the time-bounded
forward steps, the time-estimate candidate past 150 s), and a long call crosses the counter and epoch wraps."""

from __future__ import annotations

import pytest

from ratchet.events import Degradation, MediaDegraded, MediaRestored
from ratchet.params import SendParams
from ratchet.session import MediaConfig
from tests.support.media_sim import FRAME_S, make_call, random_loss, window

CONFIG = MediaConfig(dh_interval_s=5.0)


@pytest.mark.parametrize("fpk", [50, 1])
@pytest.mark.parametrize(("before_s", "outage_s"), [(7.0, 90.0), (170.0, 200.0)])
def test_an_outage_shorter_than_the_media_timeout_recovers_within_2_s(
    fpk: int, before_s: float, outage_s: float
) -> None:
    call = make_call(CONFIG, SendParams(frames_per_key=fpk))
    call.run(before_s)
    assert call.a.stats.local_steps >= 1
    start = call.now
    call.ab.drop = call.ba.drop = window(start, start + outage_s)
    call.run(outage_s + 4.0)
    first_after = round((outage_s + before_s) / FRAME_S)
    for d in (call.ab, call.ba):
        resumed = [k for k in d.opened if k >= first_after - 1]
        assert resumed, "the direction never recovered"
        assert resumed[0] - first_after <= 100  # within 2 s (100 frames)
        assert d.opened[-1] == len(d.sent) - 1
        assert d.lost_after_delivery <= 100
    # The peer's DH steps stopped for longer than peer_dh_timeout_s: raised, then restored once steps resumed.
    assert [e.reason for e in call.of("a", MediaDegraded)].count(Degradation.NO_PEER_STEP) == 1  # type: ignore[attr-defined]
    assert [e.reason for e in call.of("a", MediaRestored)].count(Degradation.NO_PEER_STEP) == 1  # type: ignore[attr-defined]
    assert call.a.stats.local_steps == call.b.stats.peer_steps


def test_the_time_estimate_candidate_is_what_recovers_after_200_s() -> None:
    """Past half the 14-bit range the plain reconstruction lands in the past; only the estimate opens the frame."""
    call = make_call(MediaConfig(dh_interval_s=0))
    call.run(170.0)  # far enough from 0 that no wrap of a negative candidate hides the problem
    sent_before = len(call.ab.sent)
    call.ab.drop = window(call.now, call.now + 200.0)
    call.run(200.2)
    assert len(call.ab.sent) - sent_before > 8192  # the counter moved past half its range
    assert call.ab.opened[-1] == len(call.ab.sent) - 1
    assert call.b.last_index == len(call.ab.sent) - 1


def test_a_long_lossy_call_crosses_the_counter_and_epoch_wraps() -> None:
    call = make_call(CONFIG, SendParams(frames_per_key=4))
    call.ab.drop = random_loss(0.05, 5)
    call.run(20_000 * FRAME_S)
    assert len(call.ab.sent) == 20_000 > 16_384
    assert call.b.last_index == 19_999 or call.ab.opened[-1] == 19_998
    assert call.ab.lost_after_delivery == call.ba.lost_after_delivery == 0
    assert len(call.ab.opened) == call.ab.delivered
    assert call.a.stats.local_epoch > 16 and call.b.stats.peer_epoch == call.a.stats.local_epoch
    assert call.b.stats.local_epoch == call.a.stats.peer_epoch > 16
