"""The media ratchet when the two ends start their sessions seconds apart (a 200 OK retransmitted for seconds).

Found by the impairment report: with a 3.5 s start offset (beyond the 2 s skew window) about 75 % of the frames
both ways were refused for the whole call. The receiver now takes its interval reference from authenticated
frames during the call's first seconds, and is strict afterwards.
"""

from __future__ import annotations

import pytest

from ratchet import errors
from ratchet.session import START_LEARNING_S, MediaConfig, MediaSession
from tests.support.ratchet_pairs import make_pair

pytestmark = pytest.mark.hardening

T0 = 1_767_225_600.0
FRAME_S = 0.02
CONFIG = MediaConfig(max_skew_ms=2000)


def pair(receiver_starts_after_s: float) -> tuple[MediaSession, MediaSession]:
    a, b = make_pair(interval_ms=2000)
    return MediaSession(a, T0, CONFIG), MediaSession(b, T0 + receiver_starts_after_s, CONFIG)


@pytest.mark.parametrize("offset", [-3.5, -2.5, 2.5, 3.5, 20.0])
def test_every_frame_opens_whatever_the_start_offset(offset: float) -> None:
    tx, rx = pair(offset)
    start = max(0.0, offset)
    for k in range(500):
        t = T0 + start + k * FRAME_S
        assert rx.open(tx.seal(bytes([k % 256]), t), t + 0.03) == bytes([k % 256])


def test_old_buffered_frames_first_then_live_ones_all_open() -> None:
    """The phone keeps the frames that arrived before its keys existed and opens them first, with the time of
    opening: seconds old. The live frames after them must not be refused against that stale reference."""
    tx, rx = pair(3.5)
    early = [tx.seal(b"early", T0 + k * FRAME_S) for k in range(50)]
    now = T0 + 3.5
    assert all(rx.open(f, now) == b"early" for f in early)
    for k in range(200):
        t = now + k * FRAME_S
        assert rx.open(tx.seal(b"live", t), t + 0.02) == b"live"


def test_a_forged_frame_outside_the_window_keeps_its_time_reason_and_moves_nothing() -> None:
    tx, rx = pair(0.0)
    _, stranger = pair(0.0)
    forged = stranger.seal(b"x", T0 + 9.0)  # another call's keys, 9 s ahead of us
    with pytest.raises(errors.FutureFrame):
        rx.open(forged, T0)
    assert rx.open(tx.seal(b"ok", T0 + 0.02), T0 + 0.03) == b"ok"  # the reference did not move to +9 s


def test_after_the_learning_phase_the_window_is_strict_again() -> None:
    tx, rx = pair(0.0)
    assert rx.open(tx.seal(b"a", T0), T0 + 0.02) == b"a"
    late = T0 + START_LEARNING_S + 1.0
    assert rx.open(tx.seal(b"b", late), late + 1.0) == b"b"  # 1 s of extra delay: inside the window
    with pytest.raises(errors.StaleFrame):
        rx.open(tx.seal(b"c", late + 1.0), late + 5.0)  # 4 s: beyond it
    with pytest.raises(errors.FutureFrame):
        rx.open(tx.seal(b"d", late + 9.0), late + 2.0)
    assert rx.stats.refused == {"stale-interval": 1, "future-interval": 1}
