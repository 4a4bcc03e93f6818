"""The shared log-flood helpers (voipgw.logutil)."""

from __future__ import annotations

import logging

import pytest

from voipgw.logutil import RateLimitedLog, is_log_point


def test_log_points_are_1_10_100() -> None:
    assert [n for n in range(1, 2001) if is_log_point(n)] == [1, 10, 100, 1000]
    assert not is_log_point(0)


def test_rate_limited_log_counts_what_it_suppressed(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr("voipgw.logutil.time.monotonic", lambda: now[0])
    ratelog = RateLimitedLog(logging.getLogger("test.logutil"), interval_s=10.0)
    with caplog.at_level(logging.INFO, logger="test.logutil"):
        ratelog("junk", logging.WARNING, "bad datagram from %s", "a")
        ratelog("junk", logging.WARNING, "bad datagram from %s", "b")
        ratelog("other", logging.WARNING, "other %d", 1)
        now[0] += 10.0
        ratelog("junk", logging.WARNING, "bad datagram from %s", "c")
    assert [r.getMessage() for r in caplog.records] == [
        "bad datagram from a",
        "other 1",
        "bad datagram from c (1 similar suppressed in the last 10 s)",
    ]


def test_the_sip_package_still_exports_it() -> None:
    from voipgw.sip import RateLimitedLog as Exported

    assert Exported is RateLimitedLog
