"""Who may send the inside leg its RTP (voipgw.rtp.source): the rule from signalling and the verdict per datagram."""

from __future__ import annotations

import pytest

from voipgw.rtp.source import SourceRule, SourceVerdict, decide_source, expected_source

PHONE = ("10.0.0.20", 4000)
NAT = ("198.51.100.7", 5062)
"""A registered phone's SIP source, behind NAT: its SDP still says 10.0.0.20."""


@pytest.mark.parametrize(
    ("sdp", "registered", "rule"),
    [
        (PHONE, None, SourceRule("10.0.0.20", 4000)),  # static phone: its SDP address and port
        (PHONE, ("10.0.0.20", 5060), SourceRule("10.0.0.20", 4000)),  # registered, same host: not behind NAT
        (PHONE, NAT, SourceRule("198.51.100.7", None)),  # behind NAT: the registered address, port unknown
        (("::1", 4000), ("::1", 5060), SourceRule("::1", 4000)),
    ],
)
def test_expected_source(sdp: tuple[str, int], registered: tuple[str, int] | None, rule: SourceRule) -> None:
    assert expected_source(sdp, registered) == rule
    assert rule.behind_nat is (rule.port is None)


SDP_RULE = SourceRule("10.0.0.20", 4000)
NAT_RULE = SourceRule("198.51.100.7", None)


@pytest.mark.parametrize(
    ("rule", "pinned", "addr", "verdict"),
    [
        (SDP_RULE, None, ("10.0.0.20", 4000), SourceVerdict.ACCEPT),
        (SDP_RULE, None, ("10.0.0.20", 4002), SourceVerdict.WRONG_PORT),
        (SDP_RULE, None, ("127.0.0.66", 4000), SourceVerdict.WRONG_SOURCE),  # the attacker, right port
        (SDP_RULE, None, ("10.0.0.21", 31337), SourceVerdict.WRONG_SOURCE),
        (NAT_RULE, None, ("198.51.100.7", 40000), SourceVerdict.PIN),  # the NAT's mapping, first packet
        (NAT_RULE, ("198.51.100.7", 40000), ("198.51.100.7", 40000), SourceVerdict.ACCEPT),
        (NAT_RULE, ("198.51.100.7", 40000), ("198.51.100.7", 40002), SourceVerdict.WRONG_PORT),  # no re-pinning
        (NAT_RULE, None, ("10.0.0.20", 4000), SourceVerdict.WRONG_SOURCE),  # the SDP address is not the source
        (NAT_RULE, None, ("127.0.0.66", 40000), SourceVerdict.WRONG_SOURCE),
    ],
)
def test_decide_source(
    rule: SourceRule, pinned: tuple[str, int] | None, addr: tuple[str, int], verdict: SourceVerdict
) -> None:
    assert decide_source(rule, pinned, addr) is verdict
