"""Who may send what on which listener: the gateway's zone screening as a table (pure, microseconds)."""

from __future__ import annotations

import ipaddress

import pytest

from voipgw.gateway.zones import ScreenPolicy, screen
from voipgw.portrange import RtpRange
from voipgw.sip.zone import Refusal, RequestFacts, Zone

PBX = frozenset({("10.0.0.5", 5060)})
AUTH = ScreenPolicy(PBX, auth=True)
TRUSTING = ScreenPolicy(PBX, auth=False, trusted_networks=(ipaddress.ip_network("192.168.1.0/24"),))
FROM_PBX = Refusal(403, "pbx_on_inside", "the PBX may not send to the inside listener")
UNTRUSTED = Refusal(403, "untrusted_source", "source not in inside.trusted_networks")


def req(zone: Zone, source: tuple[str, int], method: str = "INVITE") -> RequestFacts:
    return RequestFacts(zone, method, source, "alice", "bob")


ROWS = [
    ("outside: the PBX's INVITEs go on to routing", AUTH, req(Zone.OUTSIDE, ("10.0.0.5", 5060)), None),
    ("outside: any source's INVITE goes on to routing", AUTH, req(Zone.OUTSIDE, ("127.0.0.66", 5060)), None),
    ("inside: the PBX's INVITE is refused", AUTH, req(Zone.INSIDE, ("10.0.0.5", 5060)), FROM_PBX),
    ("inside: the PBX's REGISTER is refused", AUTH, req(Zone.INSIDE, ("10.0.0.5", 5060), "REGISTER"), FROM_PBX),
    ("inside with auth: any other source goes on to digest", AUTH, req(Zone.INSIDE, ("127.0.0.66", 5060)), None),
    ("inside, same PBX host, other port: digest decides", AUTH, req(Zone.INSIDE, ("10.0.0.5", 5062)), None),
    ("inside without auth: a trusted phone", TRUSTING, req(Zone.INSIDE, ("192.168.1.20", 5060)), None),
    ("inside without auth: the attacker", TRUSTING, req(Zone.INSIDE, ("127.0.0.66", 5060)), UNTRUSTED),
    ("inside without auth: the PBX first", TRUSTING, req(Zone.INSIDE, ("10.0.0.5", 5060)), FROM_PBX),
    ("inside without auth: not an IP", TRUSTING, req(Zone.INSIDE, ("phone.lan", 5060)), UNTRUSTED),
    ("inside without auth: IPv6 outside the list", TRUSTING, req(Zone.INSIDE, ("[fd00::1]", 5060)), UNTRUSTED),
]


@pytest.mark.parametrize(("policy", "request_", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_screen_decides_per_zone(policy: ScreenPolicy, request_: RequestFacts, expected: Refusal | None) -> None:
    assert screen(policy, request_) == expected


@pytest.mark.parametrize(
    ("low", "high", "first_few"),
    [(20000, 20007, [20000, 20002, 20004, 20006]), (20001, 20006, [20002, 20004]), (20000, 20001, [20000])],
)
def test_rtp_ports_are_even_and_leave_room_for_rtcp(low: int, high: int, first_few: list[int]) -> None:
    assert sorted(RtpRange("127.0.0.1", low, high).candidates(start=first_few[0])) == first_few
