"""Jitter buffer ordered by our own per-stream frame index, never RTP seq/timestamp (relays rewrite those).

Owns reordering, loss detection and playout delay; never decodes, decrypts or reads a clock (time is an arg).
"""

from __future__ import annotations

from dataclasses import dataclass

# Theory of operation: ``put(index, payload, arrival)`` stores opened frames; ``pop(now)`` is called once per
# 20 ms tick and returns the payload for the next index, or None when there is nothing to play (the caller
# then conceals). Playout starts ``target_delay`` after the first arrival. When the buffer is entirely empty
# the playout point does not advance (an underrun delays playout instead of discarding the next frames); when
# the buffer grows beyond the target by more than ``trim_frames`` (sender clock faster than ours, or a stall),
# the playout point jumps forward to restore the target.

FRAME_SECONDS = 0.020
DEFAULT_TARGET_DELAY = 0.060
MIN_TARGET_DELAY = 0.020
MAX_TARGET_DELAY = 0.400
DEFAULT_TRIM_FRAMES = 3
"""Frames of excess depth tolerated before the playout point jumps forward."""
DEFAULT_CAPACITY = 200
"""Frames held at most (4 s); a frame further ahead than this resynchronizes the buffer."""
JITTER_GAIN = 1.0 / 16.0
"""RFC 3550 A.8 smoothing of the interarrival jitter estimate."""
ADAPTIVE_JITTER_MULTIPLE = 4.0
"""Adaptive target = one frame + this many jitter estimates, clamped to [MIN, MAX]_TARGET_DELAY."""


@dataclass(slots=True)
class JitterStats:
    """Counters. Every frame ``put`` ends in one of played/late/duplicate/trimmed/overflow/buffered."""

    received: int = 0
    played: int = 0
    """Frames returned by pop."""
    missing: int = 0
    """Ticks that returned None because the next index never arrived (lost, or arrived too late)."""
    underruns: int = 0
    """Ticks that returned None with an empty buffer after playout started."""
    late: int = 0
    """Frames dropped because their index was already played or skipped."""
    duplicate: int = 0
    trimmed: int = 0
    """Buffered frames discarded when the playout point jumped forward."""
    overflow: int = 0
    """Frames discarded when an index jumped beyond capacity (the buffer resynchronized)."""
    resyncs: int = 0


class JitterBuffer:
    """Reorders opened frames by index and releases one per tick after a (fixed or adaptive) target delay."""

    def __init__(
        self,
        target_delay: float = DEFAULT_TARGET_DELAY,
        *,
        adaptive: bool = False,
        trim_frames: int = DEFAULT_TRIM_FRAMES,
        capacity: int = DEFAULT_CAPACITY,
        frame_seconds: float = FRAME_SECONDS,
    ) -> None:
        if not MIN_TARGET_DELAY <= target_delay <= MAX_TARGET_DELAY:
            raise ValueError(f"target delay {target_delay} s outside [{MIN_TARGET_DELAY}, {MAX_TARGET_DELAY}]")
        self.frame_seconds = frame_seconds
        self.target_delay = target_delay
        self.adaptive = adaptive
        self.trim_frames = trim_frames
        self.capacity = capacity
        self.stats = JitterStats()
        self.jitter = 0.0
        """Smoothed interarrival jitter in seconds (RFC 3550 A.8 applied to our frame index)."""
        self._frames: dict[int, bytes] = {}
        self._next: int | None = None
        self._highest = -1
        self._first_arrival: float | None = None
        self._last_transit: float | None = None

    @property
    def started(self) -> bool:
        """True once playout has begun (a None from pop is then a gap to conceal, not pre-roll)."""
        return self._next is not None

    @property
    def buffered(self) -> int:
        return len(self._frames)

    @property
    def target_frames(self) -> int:
        return max(1, round(self.target_delay / self.frame_seconds))

    def put(self, index: int, payload: bytes, arrival: float) -> bool:
        """Store an opened frame; returns False if it was dropped (late, duplicate, or overflow)."""
        self.stats.received += 1
        self._track_jitter(index, arrival)
        if self._next is not None and index < self._next:
            self.stats.late += 1
            return False
        if index in self._frames:
            self.stats.duplicate += 1
            return False
        if self._next is not None and index - self._next >= self.capacity:
            # A jump far beyond what we can hold: the sender restarted its counter or we stalled for seconds.
            self.stats.overflow += len(self._frames)
            self.stats.resyncs += 1
            self._frames.clear()
            self._next = None
            self._highest = -1
            self._first_arrival = None
        self._frames[index] = payload
        if index > self._highest:
            self._highest = index
        if self._first_arrival is None:
            self._first_arrival = arrival
        return True

    def pop(self, now: float) -> bytes | None:
        """The next frame's payload for this tick, or None (pre-roll, gap or underrun)."""
        if self._next is None:
            if self._first_arrival is None or now + 1e-9 < self._first_arrival + self.target_delay:
                return None
            self._next = min(self._frames)
        excess = self._highest - self._next + 1 - self.target_frames
        if excess > self.trim_frames:
            new_next = self._highest - self.target_frames + 1
            for i in [i for i in self._frames if i < new_next]:
                del self._frames[i]
                self.stats.trimmed += 1
            self._next = new_next
        payload = self._frames.pop(self._next, None)
        if payload is not None:
            self._next += 1
            self.stats.played += 1
            return payload
        if self._frames:
            self._next += 1
            self.stats.missing += 1
        else:
            self.stats.underruns += 1
        return None

    def _track_jitter(self, index: int, arrival: float) -> None:
        transit = arrival - index * self.frame_seconds
        if self._last_transit is not None:
            d = abs(transit - self._last_transit)
            if d < MAX_TARGET_DELAY * 10:
                self.jitter += (d - self.jitter) * JITTER_GAIN
        self._last_transit = transit
        if self.adaptive:
            target = self.frame_seconds + ADAPTIVE_JITTER_MULTIPLE * self.jitter
            self.target_delay = min(MAX_TARGET_DELAY, max(MIN_TARGET_DELAY, target))
