"""When a 183 Session Progress is sent again: the RFC 3262 section 3 schedule, applied without PRACK.

Pure: no sippy, no clock. ``voipgw.sip.dialog`` turns the offsets into reactor timers.

Theory of operation
-------------------
The callee's 183 carries the SDP answer (the key exchange), so it must not be lost on UDP. RFC 3262 would make it
reliable with PRACK; sippy's UA state machines do not know PRACK (see ``voipgw.sip.dialog``), so voipgw sends the
same 183 (same To-tag, same body) again on RFC 3262's schedule instead: first after T1, each interval doubling,
capped at T2, for at most 64*T1 after the first send. The call layer stops it as soon as the caller proves the
answer arrived (its first authenticated sealed frame), and any final response stops it too.
"""

from __future__ import annotations

T1 = 0.5
"""RFC 3261 T1, the round-trip estimate (seconds)."""
T2 = 4.0
"""RFC 3261 T2: no retransmission interval grows beyond it."""
LIMIT = 64 * T1
"""No retransmission once this long has passed since the first send."""


def retransmit_offsets(t1: float = T1, t2: float = T2, limit: float = LIMIT) -> tuple[float, ...]:
    """Seconds after the first send at which the 183 goes out again, unless stopped before."""
    offsets: list[float] = []
    at, interval = 0.0, t1
    while at + interval < limit:
        at += interval
        offsets.append(at)
        interval = min(interval * 2, t2)
    return tuple(offsets)
