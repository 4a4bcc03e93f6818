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
_CACHE_SIZE = 2 * MAX_WINDOW_INTERVALS + 3


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
    ) -> None:
        self._prk = hkdf_extract(stream_salt, bytes(time_secret))
        self._metadata = stream_metadata(call_id, direction, stream_salt)
        self.interval_ms = interval_ms
        self._per_second = 1000.0 / interval_ms
        self.origin = origin
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def interval_at(self, now: float) -> int:
        return math.floor((now - self.origin) * self._per_second)

    def key(self, interval: int) -> bytes:
        tk = self._cache.get(interval)
        if tk is None:
            tk = time_key(self._prk, self._metadata, interval)
            self._cache[interval] = tk
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return tk

    @staticmethod
    def window_intervals(max_skew_ms: int, interval_ms: int) -> int:
        """Intervals accepted either side of the receiver's own (at least 1: boundary crossings must open)."""
        return max(1, math.ceil(max_skew_ms / interval_ms))
