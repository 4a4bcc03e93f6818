"""A deterministic two-way call on the real media ratchet (ratchet.session) through a simulated impaired path.

Both ends seal a 20 ms frame each tick on their own clocks; each frame's fate (loss with Gilbert-Elliott bursts,
an outage, jitter, reordering, duplication) comes from one seeded generator per direction, and it is opened at
its arrival time on the receiver's clock. No sockets and no sleeping: a 30 s call runs in well under a second,
and a failure replays exactly. The figures it reports are what the protocol itself achieves; the live relay
test (tests/phone/test_call_impaired.py) checks the same with real phones, codecs and jitter buffers.
"""

from __future__ import annotations

import collections
import heapq
import math
import random
from dataclasses import dataclass, field

from ratchet.errors import FrameError
from ratchet.session import MediaConfig, MediaSession
from ratchet.timekeys import MAX_WINDOW_INTERVALS, TimeKeySchedule
from tests.support.ratchet_pairs import make_pair
from tests.testbed.impair import next_burst_state

T0 = 1_767_225_600.0
FRAME_S = 0.020
BASE_DELAY_S = 0.015
"""One-way network delay before jitter."""
PAYLOAD = bytes(range(80))
DESYNC_REASONS = frozenset({"key-desync", "tampered", "too-far-ahead", "expired-key"})
"""Refusals of a genuine, first-arrival, in-window frame that mean the ends disagree about keys."""
AWAITING_KEY = "unknown-epoch"
"""A genuine frame of a new epoch whose ratchet-key announcements were all lost so far: refused until the next
redundant announcement arrives (temporary, but audible)."""
RECOVERY_FRAMES = 25
"""The last in-window frames of a call must all open: whatever happened before, the ends are in step again."""


@dataclass(frozen=True)
class Profile:
    name: str
    seconds: float = 10.0
    loss: float = 0.0
    burst_enter: float = 0.0
    burst_exit: float = 0.5
    jitter_s: float = 0.0
    reorder: float = 0.0
    reorder_delay_s: float = 0.045
    duplicate: float = 0.0
    outage: tuple[float, float] | None = None
    """Seconds into the call during which every packet (both ways) is lost."""
    dh_interval_s: float = 5.0
    start_offset_s: float = 0.0
    """How much later (on a common clock) the answerer starts its media session than the offerer."""
    interval_ms: int = 2000
    max_skew_ms: int = 2000
    seed: int = 1


@dataclass
class DirectionResult:
    sent: int = 0
    lost: int = 0
    early: int = 0
    """Arrived before the receiver had started its media session."""
    duplicates: int = 0
    arrived: int = 0
    """First copies that reached the receiver."""
    in_window: int = 0
    """First copies that arrived inside the receiver's windows (time interval, key age, replay window)."""
    opened: int = 0
    opened_in_window: int = 0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    refused_in_window: collections.Counter[str] = field(default_factory=collections.Counter)
    dh_steps_sent: int = 0
    dh_steps_followed: int = 0
    tail: collections.deque[bool] = field(default_factory=lambda: collections.deque(maxlen=RECOVERY_FRAMES))
    """Whether each of the last in-window frames opened."""

    @property
    def awaiting_key(self) -> int:
        return self.refused_in_window[AWAITING_KEY]

    @property
    def desync(self) -> bool:
        """The ends disagreed about keys at some point, or had not recovered by the end of the call."""
        return any(self.refused_in_window[r] for r in DESYNC_REASONS) or not all(self.tail)


@dataclass
class Result:
    profile: Profile
    a_to_b: DirectionResult
    b_to_a: DirectionResult


class _Path:
    """One direction's impairment, with its own seeded generator."""

    def __init__(self, profile: Profile, seed: int) -> None:
        self.p = profile
        self.rng = random.Random(seed)
        self.burst = False

    def fate(self, t: float) -> list[float]:
        """Arrival delays of the copies of a packet sent at call time ``t`` (empty: lost)."""
        p, rng = self.p, self.rng
        self.burst = next_burst_state(self.burst, p.burst_enter, p.burst_exit, rng)
        if self.burst or (p.loss and rng.random() < p.loss):
            return []
        if p.outage is not None and p.outage[0] <= t < p.outage[1]:
            return []
        copies = 2 if p.duplicate and rng.random() < p.duplicate else 1
        delays = []
        for _ in range(copies):
            d = BASE_DELAY_S + (rng.uniform(0.0, p.jitter_s) if p.jitter_s else 0.0)
            if p.reorder and rng.random() < p.reorder:
                d += p.reorder_delay_s
            delays.append(d)
        return delays


def run_profile(profile: Profile) -> Result:
    """Run one call; offerer A and answerer B both send for ``profile.seconds``."""
    keys_a, keys_b = make_pair(interval_ms=profile.interval_ms, seed=f"impair-{profile.seed}".encode())
    config = MediaConfig(dh_interval_s=profile.dh_interval_s, max_skew_ms=profile.max_skew_ms)
    start = {"a": T0, "b": T0 + profile.start_offset_s}
    sessions = {"a": MediaSession(keys_a, start["a"], config), "b": MediaSession(keys_b, start["b"], config)}
    window = TimeKeySchedule.window_intervals(profile.max_skew_ms, profile.interval_ms)
    paths = {"a": _Path(profile, profile.seed * 2), "b": _Path(profile, profile.seed * 2 + 1)}
    results = {"a": DirectionResult(), "b": DirectionResult()}  # keyed by sender
    seen: dict[str, set[bytes]] = {"a": set(), "b": set()}
    reference: dict[str, int] = {}
    queue: list[tuple[float, int, str, bytes, float]] = []  # (arrival, order, sender, frame, sent at)
    order = 0
    ticks = int(profile.seconds / FRAME_S)

    def deliver_until(t: float) -> None:
        while queue and queue[0][0] <= t:
            arrival, _, sender, frame, sent_at = heapq.heappop(queue)
            receiver = "b" if sender == "a" else "a"
            res = results[sender]
            if arrival < start[receiver]:
                res.early += 1  # the receiver has no media session yet: the packet meets a closed port
                continue
            first = frame not in seen[sender]  # a duplicate is byte-identical
            seen[sender].add(frame)
            # The receiver's clock reads its own session time; a frame is in the window when its interval (on
            # the sender's session clock) is within the skew window of the receiver's, and it is not too old.
            sent_interval = math.floor((sent_at - start[sender]) * 1000 / profile.interval_ms)
            recv_interval = math.floor((arrival - start[receiver]) * 1000 / profile.interval_ms)
            # The receiver takes the first frame's interval offset as the call's reference (the ends start their
            # sessions at different moments); the 6-bit interval index can only tell offsets up to 31 apart.
            ref = reference.setdefault(sender, sent_interval - recv_interval)
            in_window = (
                first
                and abs(ref) <= MAX_WINDOW_INTERVALS
                and abs(sent_interval - recv_interval - ref) <= window
                and arrival - sent_at < 1.0
            )
            if first:
                res.arrived += 1
                res.in_window += in_window
            try:
                sessions[receiver].open(frame, arrival)
            except FrameError as exc:
                res.refused[exc.reason] += 1
                if in_window:
                    res.refused_in_window[exc.reason] += 1
                    res.tail.append(False)
            else:
                res.opened += 1
                res.opened_in_window += in_window
                if in_window:
                    res.tail.append(True)

    for i in range(ticks):
        t = T0 + i * FRAME_S
        deliver_until(t)
        for sender in ("a", "b"):
            if t < start[sender]:
                continue
            frame = sessions[sender].seal(PAYLOAD, t)
            res = results[sender]
            res.sent += 1
            delays = paths[sender].fate(t - T0)
            if not delays:
                res.lost += 1
            res.duplicates += max(0, len(delays) - 1)
            for d in delays:
                order += 1
                heapq.heappush(queue, (t + d, order, sender, frame, t))
    deliver_until(math.inf)
    for sender, receiver in (("a", "b"), ("b", "a")):
        results[sender].dh_steps_sent = sessions[sender].stats.local_epoch
        results[sender].dh_steps_followed = sessions[receiver].stats.peer_epoch
    for s in sessions.values():
        s.close()
    return Result(profile, results["a"], results["b"])


PROFILES = [
    Profile("clean"),
    Profile("loss 5% + bursts", loss=0.05, burst_enter=0.005, burst_exit=0.5),
    Profile("loss 15% + bursts", loss=0.15, burst_enter=0.01, burst_exit=0.4),
    Profile("loss 30% + bursts", loss=0.30, burst_enter=0.02, burst_exit=0.3),
    Profile("jitter 100 ms", jitter_s=0.100),
    Profile("reorder 10% (+45 ms)", reorder=0.10),
    Profile("duplicate 10%", duplicate=0.10),
    Profile("2 s outage mid-call", seconds=20.0, outage=(9.0, 11.0)),
    Profile("30 s, DH every 5 s, 5% loss, 40 ms jitter", seconds=30.0, loss=0.05, jitter_s=0.04),
    Profile("30 s, DH every 2 s, 30% bursty loss", seconds=30.0, dh_interval_s=2.0, loss=0.3, burst_enter=0.02),
    Profile("start offset +1.5 s", start_offset_s=1.5),
    Profile("start offset -1.5 s", start_offset_s=-1.5),
    Profile("start offset +3.5 s (a 200 OK lost three times)", seconds=15.0, start_offset_s=3.5),
    Profile("start offset -3.5 s", start_offset_s=-3.5),
    Profile(
        "start offset +8 s with 200 ms intervals (outside what the 6-bit interval index tells)",
        seconds=20.0,
        start_offset_s=8.0,
        interval_ms=200,
    ),
    Profile(
        "everything: 30% bursty loss, 100 ms jitter, reorder, dup, 2 s outage, DH 3 s",
        seconds=30.0,
        loss=0.3,
        burst_enter=0.02,
        jitter_s=0.1,
        reorder=0.1,
        duplicate=0.1,
        outage=(14.0, 16.0),
        dh_interval_s=3.0,
    ),
]
