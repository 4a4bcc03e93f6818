"""Test helper: a simulated call between two real MediaSessions on a simulated clock (one frame each way every
20 ms), with a relay that may drop frames per direction and an attacker that injects frames per direction.

Only the clock and the network are simulated; both ends are the real ``ratchet`` sessions. Used by the wire-v3
attacker tests (tests/ratchet/test_wire3_*.py).
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ratchet.errors import FrameError
from ratchet.events import Event
from ratchet.params import SendParams
from ratchet.session import MediaConfig, MediaSession
from tests.support.ratchet_pairs import make_pair

FRAME_S = 0.02
T0 = 1_700_000_000.0

Drop = Callable[[int, float], bool]
"""(frame index, now) -> True to drop this frame on this direction."""
Inject = Callable[[float, list[bytes]], list[bytes]]
"""(now, the genuine frames of this direction so far) -> forged frames to deliver before the genuine one."""


def never(_k: int, _now: float) -> bool:
    return False


def random_loss(rate: float, seed: int) -> Drop:
    rnd = random.Random(seed)
    return lambda _k, _now: rnd.random() < rate


def bursty_loss(rate: float, mean_burst: float, seed: int) -> Drop:
    """Gilbert model: bursts of mean length ``mean_burst`` frames, ``rate`` of all frames lost on average."""
    rnd = random.Random(seed)
    p_end = 1.0 / mean_burst
    p_start = rate * p_end / (1.0 - rate)
    state = {"bad": False}

    def drop(_k: int, _now: float) -> bool:
        bad = state["bad"]
        state["bad"] = (rnd.random() >= p_end) if bad else (rnd.random() < p_start)
        return bad

    return drop


def window(start: float, end: float, inner: Drop = never) -> Drop:
    """Drop everything with ``start <= now < end``; elsewhere ask ``inner``."""
    return lambda k, now: start <= now < end or inner(k, now)


@dataclass
class Direction:
    sender: MediaSession
    receiver: MediaSession
    drop: Drop = never
    inject: Inject | None = None
    sent: list[bytes] = field(default_factory=list)
    opened: list[int] = field(default_factory=list)
    """Indexes of the genuine frames that opened."""
    delivered: int = 0
    lost_after_delivery: int = 0
    """Genuine frames the relay delivered that the receiver refused (audio lost to the protocol, not the relay)."""
    forged: int = 0
    forged_opened: int = 0
    lengths: set[int] = field(default_factory=set)
    carried: collections.Counter[str] = field(default_factory=collections.Counter)
    """How many opened frames carried each control TLV (what travelled inside the ciphertext)."""


@dataclass
class Call:
    a: MediaSession
    b: MediaSession
    ab: Direction
    ba: Direction
    now: float = T0
    events: dict[str, list[Event]] = field(default_factory=lambda: {"a": [], "b": []})
    payload_size: int | None = None

    def _drain(self) -> None:
        for name, s in (("a", self.a), ("b", self.b)):
            while (ev := s.next_event()) is not None:
                self.events[name].append(ev)

    def _one(self, d: Direction, k: int, event: bytes | None) -> None:
        now = self.now
        size = self.payload_size
        content_len = 60 if size is None else size - d.sender.control_size(now, event=event is not None)
        frame = d.sender.seal(bytes([k & 0xFF]) * content_len, now, event)
        d.sent.append(frame)
        d.lengths.add(len(frame))
        if d.inject is not None:
            for forged in d.inject(now, d.sent):
                d.forged += 1
                try:
                    d.receiver.open(forged, now)
                    d.forged_opened += 1
                except FrameError:
                    pass
        if d.drop(k, now):
            return
        d.delivered += 1
        try:
            content = d.receiver.open(frame, now)
        except FrameError:
            d.lost_after_delivery += 1
            return
        assert content == bytes([k & 0xFF]) * content_len
        d.opened.append(k)
        control = d.receiver.opener.last_control
        for name in ("ratchet_key", "key_ack", "sas_reveal", "telephone_event", "notice"):
            if getattr(control, name) is not None:
                d.carried[name] += 1

    def run(self, seconds: float, events_ab: dict[int, bytes] | None = None) -> None:
        """Exchange frames for ``seconds``; ``events_ab[k]`` rides in a→b frame k (the call-wide index)."""
        for _ in range(round(seconds / FRAME_S)):
            k = len(self.ab.sent)
            self._one(self.ab, k, (events_ab or {}).get(k))
            self._one(self.ba, len(self.ba.sent), None)
            self._drain()
            self.now += FRAME_S

    def of(self, side: str, kind: type) -> list[Event]:
        return [e for e in self.events[side] if isinstance(e, kind)]


def make_call(
    config: MediaConfig | None = None,
    params: SendParams | None = None,
    *,
    payload_size: int | None = None,
    reveal: bool = True,
    seed: bytes | None = None,
) -> Call:
    ko, ka = make_pair(interval_ms=1000, offerer_params=params, answerer_params=params, seed=seed)
    a = MediaSession(ko, T0, config)
    b = MediaSession(ka, T0, config, reveal_at_start=reveal)
    if payload_size is not None:
        a.set_payload_size(payload_size)
        b.set_payload_size(payload_size)
    return Call(a, b, Direction(a, b), Direction(b, a), payload_size=payload_size)
