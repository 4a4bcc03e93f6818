"""Sliding replay window over a stream's 64-bit frame counter (RFC 3711 §3.3.2 style, width configurable).

Checking is separate from updating, so the receiver commits only after a frame authenticates.
"""

from __future__ import annotations

DEFAULT_WINDOW = 256


class ReplayWindow:
    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 128:
            raise ValueError("replay window must cover at least 128 frames")
        self.size = size
        self.mask = (1 << size) - 1
        self.highest = -1
        self.bits = 0  # public for the opener's in-order fast path; bit k set = frame (highest - k) seen

    def check(self, index: int) -> str | None:
        """Return None if ``index`` may be accepted, else why not ("replayed" or "too-old")."""
        if index > self.highest:
            return None
        delta = self.highest - index
        if delta >= self.size:
            return "too-old"
        if (self.bits >> delta) & 1:
            return "replayed"
        return None

    def update(self, index: int) -> None:
        if index > self.highest:
            shift = index - self.highest
            self.bits = ((self.bits << shift) | 1) & self.mask if shift < self.size else 1
            self.highest = index
        else:
            self.bits |= 1 << (self.highest - index)
