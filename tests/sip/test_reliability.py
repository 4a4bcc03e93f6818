"""The 183 retransmission schedule (RFC 3262 section 3 without PRACK)."""

from __future__ import annotations

import pytest

from voipgw.sip.reliability import LIMIT, T1, T2, retransmit_offsets


def test_default_schedule_doubles_from_t1_caps_at_t2_and_stops_before_64_t1() -> None:
    assert retransmit_offsets() == (0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5)
    assert (T1, T2, LIMIT) == (0.5, 4.0, 32.0)


@pytest.mark.parametrize(
    ("t1", "t2", "limit", "expected"),
    [
        (1.0, 4.0, 10.0, (1.0, 3.0, 7.0)),
        (1.0, 1.0, 3.5, (1.0, 2.0, 3.0)),
        (2.0, 4.0, 2.0, ()),
    ],
)
def test_schedule_table(t1: float, t2: float, limit: float, expected: tuple[float, ...]) -> None:
    assert retransmit_offsets(t1, t2, limit) == expected
