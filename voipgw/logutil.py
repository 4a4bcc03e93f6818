"""Log-flood helpers shared by every layer: a per-key rate limiter and the 1, 10, 100... sampling rule.

Standard library only, so any module (sip, media, rtp, gateway, cli) may import it; it never formats secrets itself.
"""

from __future__ import annotations

import logging
import time

LOG_INTERVAL_S = 10.0
"""At most one log line per key per interval; the rest are only counted."""


class RateLimitedLog:
    """One log line per key per interval, then a count of what was suppressed."""

    def __init__(self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S) -> None:
        self._logger = logger
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, key: str, level: int, msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        skipped = self._suppressed.pop(key, 0)
        if skipped:
            msg += " (%d similar suppressed in the last %.0f s)"
            args = (*args, skipped, self._interval)
        self._logger.log(level, msg, *args)


def is_log_point(count: int) -> bool:
    """True for the 1st, 10th, 100th... occurrence: a flood stays visible without filling the log."""
    while count > 0 and count % 10 == 0:  # (0 would loop forever)
        count //= 10
    return count == 1
