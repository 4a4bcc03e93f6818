"""Per-interval time keys: time_key(i) = HKDF(session secret, stream metadata ‖ i), on a per-call clock.

The call clock starts when the local side creates its media session (the answerer when it answers, the offerer
when it accepts the answer), so the two clocks differ by the 200 OK's transit time, not by the hosts' clock
skew (which the handshake's timestamp check bounds separately). ``now`` is always passed in.
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict

from ratchet.kdf import LABEL_TIME_KEY, hkdf_expand, hkdf_extract
from ratchet.params import Direction

INTERVAL_BITS = 6
INTERVAL_MOD = 1 << INTERVAL_BITS
MAX_WINDOW_INTERVALS = INTERVAL_MOD // 2 - 1  # a truncated index must stay unambiguous
MAX_CACHED_KEYS = INTERVAL_MOD + 1
"""Every interval a 6-bit index can name around ours, plus one: what a receiver may need while it still learns
the start offset (a forged frame naming any of them then costs at most one derivation per interval, ever)."""


def stream_metadata(call_id: str, direction: Direction, stream_salt: bytes) -> bytes:
    """Call-ID ‖ direction ‖ stream id, length-prefixed so no two tuples encode alike."""
    cid = call_id.encode("utf-8")
    if len(cid) > 255 or len(stream_salt) > 255:
        raise ValueError("call id or stream salt too long")
    return bytes([len(cid)]) + cid + bytes([direction]) + bytes([len(stream_salt)]) + stream_salt


def time_key(prk: bytes, metadata: bytes, interval: int) -> bytes:
    """time_key(i) = HKDF-Expand(PRK, label ‖ metadata ‖ int64(i), 32); PRK = HKDF-Extract(salt, secret)."""
    return hkdf_expand(prk, LABEL_TIME_KEY + metadata + struct.pack(">q", interval), 32)


class TimeKeySchedule:
    """Interval arithmetic and a small cache of time keys for one direction of one call."""

    def __init__(
        self,
        time_secret: bytes | bytearray,
        stream_salt: bytes,
        call_id: str,
        direction: Direction,
        interval_ms: int,
        origin: float,
        capacity: int = MAX_CACHED_KEYS,
    ) -> None:
        self._prk = hkdf_extract(stream_salt, bytes(time_secret))
        self._metadata = stream_metadata(call_id, direction, stream_salt)
        self.interval_ms = interval_ms
        self._per_second = 1000.0 / interval_ms
        self.origin = origin
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self.capacity = capacity
        """Most keys kept, the first derived dropped first (intervals are derived in about the order time reaches
        them; ``window_capacity`` says why that never drops one still accepted). A sender needs only its current
        interval's key, a receiver the intervals it accepts, plus every index while it learns the start offset.
        32 bytes of key cost about 150 bytes here: a full cache was most of a call's ratchet memory."""
        self.derived = 0
        """Keys derived so far (a cache miss each: what a forged-frame flood could make us spend)."""

    def interval_at(self, now: float) -> int:
        return math.floor((now - self.origin) * self._per_second)

    def key(self, interval: int) -> bytes:
        tk = self._cache.get(interval)
        if tk is None:
            tk = time_key(self._prk, self._metadata, interval)
            self.derived += 1
            self._cache[interval] = tk
            if len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return tk

    def shrink(self, capacity: int) -> None:
        """Keep at most ``capacity`` keys from now on, dropping the first derived at once."""
        self.capacity = capacity
        while len(self._cache) > capacity:
            self._cache.popitem(last=False)

    @property
    def cached(self) -> int:
        return len(self._cache)

    @staticmethod
    def window_intervals(max_skew_ms: int, interval_ms: int) -> int:
        """Intervals accepted either side of the receiver's own (at least 1: boundary crossings must open)."""
        return max(1, math.ceil(max_skew_ms / interval_ms))

    @staticmethod
    def window_capacity(window: int) -> int:
        """Keys a receiver keeps once its window is fixed. At local interval L it accepts L - w .. L + w. The key of
        an accepted interval j was derived at some L' >= j - w >= L - 2w, and every key derived after it at some
        L'' in L' .. L, so in L - 3w .. L + w: at most 4w intervals besides j, all distinct (first in, first out
        drops j before any of them). So ``4 * window + 1`` keys never drop an accepted one, and a flood of forged
        frames over the accepted intervals derives each key once."""
        return 4 * window + 1
