"""Test helper: two real MediaSessions with the in-call post-quantum ratchet (hybrid suite, zfec coder) over a
simulated path that drops, delays (reorders) and delivers frames on a simulated clock, one frame each way every
20 ms. Used by tests/ratchet/test_pq_*.py and the pq-ratchet bench's tests."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ratchet.errors import FrameError
from ratchet.events import Event
from ratchet.params import Suite
from ratchet.session import MediaConfig, MediaSession
from tests.support.ratchet_pairs import make_pair
from voipgw.erasure import ZfecCoder

FRAME_S = 0.02
T0 = 1_700_000_000.0
PAYLOAD = 60

Drop = Callable[[], bool]


def no_loss() -> bool:
    return False


def gilbert(rate: float, mean_burst: float, rnd: random.Random) -> Drop:
    """Bursty loss (Gilbert model): ``rate`` of all frames lost on average, in bursts of mean ``mean_burst``."""
    if rate <= 0:
        return no_loss
    p_end = 1.0 / mean_burst
    p_start = rate * p_end / (1.0 - rate)
    state = {"bad": False}

    def drop() -> bool:
        bad = state["bad"]
        state["bad"] = (rnd.random() >= p_end) if bad else (rnd.random() < p_start)
        return bad

    return drop


@dataclass
class Path:
    """One direction: drop, or hold a frame back ``delay`` frames (so later frames overtake it), else deliver."""

    sender: MediaSession
    receiver: MediaSession
    drop: Drop = no_loss
    reorder: float = 0.0
    rnd: random.Random = field(default_factory=lambda: random.Random(0))
    held: list[tuple[int, int, bytes]] = field(default_factory=list)
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    refused: int = 0
    """Delivered genuine frames the receiver refused: audio lost to the protocol, not to the path."""
    lengths: set[int] = field(default_factory=set)

    def step(self, now: float) -> None:
        k = self.sent
        content = bytes([k & 0xFF]) * (PAYLOAD - self.sender.control_size(now))
        frame = self.sender.seal(content, now)
        self.sent += 1
        self.lengths.add(len(frame))
        if not self.drop():
            delay = self.rnd.randint(1, 4) if self.reorder and self.rnd.random() < self.reorder else 0
            self.held.append((k + delay, k, frame))
        due = [h for h in self.held if h[0] <= k]
        self.held = [h for h in self.held if h[0] > k]
        for _, index, f in sorted(due, key=lambda h: (h[0], -h[1])):  # a delayed frame arrives after newer ones
            self.delivered += 1
            try:
                self.receiver.open(f, now)
            except FrameError:
                self.refused += 1
            else:
                self.opened += 1
            del index


@dataclass
class PqCall:
    a: MediaSession
    b: MediaSession
    ab: Path
    ba: Path
    now: float = T0
    events: dict[str, list[Event]] = field(default_factory=lambda: {"a": [], "b": []})

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / FRAME_S)):
            self.ab.step(self.now)
            self.ba.step(self.now)
            for name, s in (("a", self.a), ("b", self.b)):
                while (ev := s.next_event()) is not None:
                    self.events[name].append(ev)
            self.now += FRAME_S

    def of(self, side: str, kind: type) -> list[Event]:
        return [e for e in self.events[side] if isinstance(e, kind)]


def make_pq_call(
    config: MediaConfig | None = None,
    *,
    loss: float = 0.0,
    burst: float = 5.0,
    reorder: float = 0.0,
    seed: int = 0,
    suite: Suite = Suite.X25519_MLKEM768,
    coder_a: bool = True,
    coder_b: bool = True,
    payload_size: int | None = PAYLOAD,
) -> PqCall:
    ko, ka = make_pair(interval_ms=1000)
    ko.suite = ka.suite = suite
    cfg = config or MediaConfig(pq_interval_s=10.0)
    a = MediaSession(ko, T0, cfg, coder=ZfecCoder() if coder_a else None)
    b = MediaSession(ka, T0, cfg, coder=ZfecCoder() if coder_b else None, reveal_at_start=True)
    if payload_size is not None:
        a.set_payload_size(payload_size)
        b.set_payload_size(payload_size)
    rnd_ab, rnd_ba = random.Random(seed * 2 + 1), random.Random(seed * 2 + 2)
    ab = Path(a, b, gilbert(loss, burst, rnd_ab), reorder, rnd_ab)
    ba = Path(b, a, gilbert(loss, burst, rnd_ba), reorder, rnd_ba)
    return PqCall(a, b, ab, ba)
