"""The time-key cache is sized to what each side can use: a sealer keeps its current interval's key (and the one
before), an opener every index while it learns the start offset and then only its window's worth, so a call's
ratchet memory stops growing with its age (tracemalloc) while a forged-frame flood over the accepted intervals still
derives each key once."""

from __future__ import annotations

import gc
import os
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from ratchet.errors import FrameError
from ratchet.frame import COUNTER_SHIFT, HEADER_LEN, INTERVAL_MASK, INTERVAL_SHIFT
from ratchet.params import Direction
from ratchet.sealer import SEND_TIME_KEYS
from ratchet.session import MediaConfig, MediaSession
from ratchet.timekeys import INTERVAL_MOD, MAX_CACHED_KEYS, TimeKeySchedule
from tests.support.ratchet_pairs import make_pair

T0 = 1_700_000_000.0
FRAME_S = 0.02
INTERVAL_MS = 2000  # the default
PAYLOAD = bytes(60)


def _pair() -> tuple[MediaSession, MediaSession]:
    ko, ka = make_pair(interval_ms=INTERVAL_MS, seed=b"timekeys")
    return MediaSession(ko, T0), MediaSession(ka, T0)


def _talk(a: MediaSession, b: MediaSession, start: float, seconds: float) -> float:
    now = start
    for _ in range(int(seconds / FRAME_S)):
        b.open(a.seal(PAYLOAD, now), now)
        a.open(b.seal(PAYLOAD, now), now)
        now += FRAME_S
    return now


def test_a_two_minute_call_keeps_only_the_time_keys_it_can_use() -> None:
    a, b = _pair()
    _talk(a, b, T0, 130.0)  # 65 intervals of 2 s: the old cache held one key per interval, both directions
    window = TimeKeySchedule.window_intervals(MediaConfig().max_skew_ms, INTERVAL_MS)
    for s in (a, b):
        assert len(s.sealer._tks._cache) <= SEND_TIME_KEYS
        assert len(s.opener._tks._cache) <= TimeKeySchedule.window_capacity(window) == 5
        assert s.opener._tks.derived <= 130 / 2 + 2  # one derivation per interval it saw, never twice


def test_a_calls_ratchet_memory_stops_growing_with_its_age() -> None:
    """tracemalloc: both ends of one call at 10 s and at 130 s. Before the cache was sized, the older call held
    about 21 KB more per end (60 more time keys each way); now what grows is only the DH step state."""
    _talk(*_pair(), T0, 3.0)  # warm up shared caches (padding prefixes, imports) outside the measurement
    sizes = {}
    for seconds in (10.0, 130.0):
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            a, b = _pair()
            _talk(a, b, T0, seconds)
            gc.collect()
            sizes[seconds] = (tracemalloc.get_traced_memory()[0] - base) / 2  # per end
        finally:
            tracemalloc.stop()
        del a, b
    assert sizes[130.0] - sizes[10.0] < 8_000, sizes


def _forge(frame: bytes, interval_index: int, counter: int) -> bytes:
    word = int.from_bytes(frame[:HEADER_LEN], "big")
    word &= ~((INTERVAL_MASK << INTERVAL_SHIFT) | (0x3FFF << COUNTER_SHIFT))
    word |= (interval_index << INTERVAL_SHIFT) | (counter << COUNTER_SHIFT)
    return word.to_bytes(HEADER_LEN, "big") + os.urandom(len(frame) - HEADER_LEN)


def test_a_forged_flood_over_every_interval_index_derives_each_key_once() -> None:
    """While the opener still learns the start offset, a stranger's frames may name any of the 64 indexes: each
    key is derived once however often it is named. After learning, only the window is tried, from the small cache,
    again without a second derivation."""
    a, b = _pair()
    template = a.seal(PAYLOAD, T0)
    rx = b.opener
    for rnd in range(3):
        for index in range(INTERVAL_MOD):
            try:
                rx.open(_forge(template, index, 5 + rnd), T0)
            except FrameError:
                pass
    assert rx._tks.derived == INTERVAL_MOD
    assert len(rx._tks._cache) <= MAX_CACHED_KEYS
    now = _talk(a, b, T0, 8.0)  # a genuine frame opened at T0 + 0: learning is over 5 s later
    assert len(rx._tks._cache) <= 5
    before = rx._tks.derived
    template = a.seal(PAYLOAD, now)
    word = int.from_bytes(template[:HEADER_LEN], "big")
    own = (word >> INTERVAL_SHIFT) & INTERVAL_MASK
    for rnd in range(3):
        for delta in (-1, 0, 1):
            try:
                rx.open(_forge(template, (own + delta) % INTERVAL_MOD, 40 + rnd), now)
            except FrameError:
                pass
    assert rx._tks.derived - before <= 1  # the next interval's key at most (the current and last are cached)


@given(
    window=st.integers(1, 6),
    moves=st.lists(st.tuples(st.integers(0, 3), st.lists(st.integers(-6, 6), max_size=6)), max_size=60),
)
def test_first_in_first_out_never_drops_a_key_still_accepted(window: int, moves: list[tuple[int, list[int]]]) -> None:
    """The local interval only moves forward; every interval it accepts is asked for in any order: with
    ``window_capacity`` keys none is ever derived twice."""
    tks = TimeKeySchedule(bytes(32), bytes(16), "c", Direction.OFFERER_TO_ANSWERER, 1000, 0.0)
    tks.shrink(TimeKeySchedule.window_capacity(window))
    local = 0
    asked: set[int] = set()
    for step, deltas in moves:
        local += step
        for d in deltas:
            if abs(d) <= window:
                tks.key(local + d)
                asked.add(local + d)
    assert tks.derived == len(asked)


def test_a_wide_window_keeps_what_it_needs_after_learning() -> None:
    """max_skew_ms of 40 s at 2 s intervals: a window of 20, whose 81 keys exceed the learning-phase cache."""
    ko, ka = make_pair(interval_ms=INTERVAL_MS, seed=b"timekeys-wide")
    config = MediaConfig(max_skew_ms=40_000)
    a, b = MediaSession(ko, T0, config), MediaSession(ka, T0, config)
    _talk(a, b, T0, 10.0)
    assert b.opener._tks.capacity == TimeKeySchedule.window_capacity(20) == 81 > MAX_CACHED_KEYS
