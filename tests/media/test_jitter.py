"""The index-ordered jitter buffer: reordering, gaps, late/duplicate frames, trimming, accounting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voipgw.rtp.jitter import JitterBuffer

F = 0.020


def frame(i: int) -> bytes:
    return i.to_bytes(4, "big")


def test_preroll_then_in_order_playout() -> None:
    jb = JitterBuffer(0.060)
    assert jb.pop(0.0) is None and not jb.started
    for i in range(3):
        jb.put(100 + i, frame(100 + i), 1.0 + i * F)
    assert jb.pop(1.05) is None  # target delay not reached yet
    assert not jb.started
    assert jb.pop(1.06) == frame(100)
    assert jb.started
    assert [jb.pop(1.08), jb.pop(1.10)] == [frame(101), frame(102)]
    assert jb.stats.played == 3


def test_reordering_is_undone_and_gaps_give_none() -> None:
    jb = JitterBuffer(0.060)
    for i in (0, 2, 1, 4, 5):  # 3 is lost, 1 and 2 swapped
        jb.put(i, frame(i), 0.0)
    out = [jb.pop(0.1 + k * F) for k in range(6)]
    assert out == [frame(0), frame(1), frame(2), None, frame(4), frame(5)]
    assert jb.stats.missing == 1 and jb.stats.played == 5


def test_late_and_duplicate_frames_are_dropped_and_counted() -> None:
    jb = JitterBuffer(0.020)
    jb.put(10, frame(10), 0.0)
    jb.put(11, frame(11), 0.0)
    assert jb.put(11, frame(11), 0.0) is False
    assert jb.pop(0.02) == frame(10)
    assert jb.put(10, frame(10), 0.03) is False  # already played
    assert jb.put(9, frame(9), 0.03) is False  # older than anything played
    assert jb.stats.duplicate == 1 and jb.stats.late == 2


def test_underrun_does_not_skip_frames() -> None:
    jb = JitterBuffer(0.020)
    jb.put(0, frame(0), 0.0)
    assert jb.pop(0.02) == frame(0)
    assert jb.pop(0.04) is None and jb.pop(0.06) is None  # sender paused: buffer empty
    assert jb.stats.underruns == 2 and jb.stats.missing == 0
    jb.put(1, frame(1), 0.07)  # arrives late but the playout point waited for it
    assert jb.pop(0.08) == frame(1)


def test_excess_depth_is_trimmed_to_target() -> None:
    jb = JitterBuffer(0.060, trim_frames=2)
    for i in range(20):  # a burst of 20 frames at once (e.g. after a network stall)
        jb.put(i, frame(i), 0.0)
    first = jb.pop(0.06)
    assert first == frame(17)  # jumped to keep 3 frames (the target) in hand
    assert jb.stats.trimmed == 17
    assert [jb.pop(0.08), jb.pop(0.1)] == [frame(18), frame(19)]


def test_far_jump_resynchronizes() -> None:
    jb = JitterBuffer(0.020, capacity=50)
    jb.put(0, frame(0), 0.0)
    jb.put(1, frame(1), 0.0)
    assert jb.pop(0.02) == frame(0)
    jb.put(10_000, frame(10_000), 0.1)  # counter restart far ahead
    assert jb.stats.resyncs == 1 and jb.stats.overflow == 1
    assert jb.pop(0.1) is None  # pre-roll again
    assert jb.pop(0.12) == frame(10_000)


def test_adaptive_target_grows_with_jitter() -> None:
    jb = JitterBuffer(0.040, adaptive=True)
    steady = JitterBuffer(0.040, adaptive=True)
    for i in range(200):
        jitter = 0.03 if i % 2 else 0.0
        jb.put(i, frame(i), i * F + jitter)
        steady.put(i, frame(i), i * F)
    assert jb.target_delay > 0.08
    assert steady.target_delay == pytest.approx(0.020)


def test_rejects_unreasonable_target() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(5.0)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 80), st.floats(0, 0.2)), max_size=120),
    st.integers(1, 10),
    st.integers(0, 60),
)
def test_every_frame_is_accounted_for(arrivals: list[tuple[int, float]], target: int, pops: int) -> None:
    jb = JitterBuffer(target * F, trim_frames=2, capacity=40)
    now = 0.0
    events = sorted(((i * F + d, i) for i, d in arrivals), key=lambda e: e[0])
    played = []
    for t, i in events:
        while now < t and pops > 0:
            got = jb.pop(now)
            if got is not None:
                played.append(int.from_bytes(got, "big"))
            now += F
            pops -= 1
        jb.put(i, frame(i), t)
    s = jb.stats
    assert s.received == len(arrivals)
    assert s.received == s.played + s.late + s.duplicate + s.trimmed + s.overflow + jb.buffered
    # Played frames come out strictly in index order (a resync may restart at any index).
    if s.resyncs == 0:
        assert played == sorted(set(played))


@pytest.mark.parametrize("sender_speed", [1.01, 0.99])
def test_clock_drift_keeps_delay_bounded_without_late_drops(sender_speed: float) -> None:
    """A sender clock 1% fast or slow for 60 s: trimming (fast) or waiting (slow) keeps delay bounded."""
    jb = JitterBuffer(0.060, trim_frames=3)
    frames = 3000
    arrivals = [(i * F / sender_speed, i) for i in range(frames)]
    pos = 0
    now = 0.0
    max_depth = 0
    while pos < frames or jb.buffered:
        while pos < frames and arrivals[pos][0] <= now:
            jb.put(arrivals[pos][1], frame(arrivals[pos][1]), arrivals[pos][0])
            pos += 1
        jb.pop(now)
        max_depth = max(max_depth, jb.buffered)
        now += F
        assert now < frames * F * 1.2  # bounded loop
    s = jb.stats
    assert s.late == 0 and s.duplicate == 0 and s.missing == 0
    assert s.played + s.trimmed == frames
    assert max_depth <= jb.target_frames + jb.trim_frames + 2
    if sender_speed > 1:
        assert 0 < s.trimmed < frames * 0.02  # only the surplus (~1%) is dropped
    else:
        assert s.trimmed == 0 and s.underruns > 0  # the playout point waited instead of skipping
