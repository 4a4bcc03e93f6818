"""Who may send a plain (non-latching) leg its RTP: the one decision that keeps the gateway's inside leg from being
taken over by a packet from anywhere (security review C1). Pure: no sockets, no clock, no logging.

The rule comes from signalling: the address and port in the phone's SDP, or, for a registered phone behind NAT
(its SDP address is not the address its REGISTER came from), that registered source address only; there the first
packet pins the port (the NAT's mapping) and the leg sends to it from then on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

Address = tuple[str, int]


class SourceVerdict(enum.Enum):
    """What to do with one received datagram."""

    ACCEPT = "accept"
    """From the expected address: process it."""
    PIN = "pin"
    """NAT: the first packet from the registered source address; accept it and send to this port from now on."""
    WRONG_SOURCE = "wrong-source"
    """Not from the phone's address: drop and count, never process, never move the leg."""
    WRONG_PORT = "wrong-port"
    """From the phone's address but another port than the one expected (or pinned): drop and count."""


@dataclass(frozen=True)
class SourceRule:
    """Where a leg's RTP may come from. ``port`` None: any port of ``host`` until one is pinned (NAT)."""

    host: str
    port: int | None

    @property
    def behind_nat(self) -> bool:
        return self.port is None


def expected_source(sdp: Address, registered: Address | None) -> SourceRule:
    """The rule for a phone whose SDP says ``sdp`` and whose current registration came from ``registered`` (None:
    a static phone, or not registered). A registered phone whose SDP address differs from its registered source
    is behind NAT: its RTP can only come from the registered source address, from a port we cannot know."""
    if registered is not None and registered[0] != sdp[0]:
        return SourceRule(registered[0], None)
    return SourceRule(sdp[0], sdp[1])


def decide_source(rule: SourceRule, pinned: Address | None, addr: Address) -> SourceVerdict:
    """The verdict on a datagram from ``addr``, with ``pinned`` the port already pinned under a NAT rule."""
    if addr[0] != rule.host:
        return SourceVerdict.WRONG_SOURCE
    if rule.port is not None:
        return SourceVerdict.ACCEPT if addr[1] == rule.port else SourceVerdict.WRONG_PORT
    if pinned is None:
        return SourceVerdict.PIN
    return SourceVerdict.ACCEPT if addr == pinned else SourceVerdict.WRONG_PORT
