"""ICMP port unreachable (``voipgw.sip.unreachable``): a request to an address where nothing listens ends at once
as 503 instead of after timer B's 32 s (issue 15, item 5), and only an ICMP error that quotes the request's random
Via branch counts (an off-path forger cannot know it)."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from tests.testbed.sip_peer import running_stack, sdp
from voipgw.sip import Failed
from voipgw.sip.unreachable import IP_RECVERR, port_unreachable, quotes_request

INVITE = (
    b"INVITE sip:bob@127.0.0.1:5099 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK7f3a9c1e0b\r\n"
    b"From: <sip:alice@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: abc\r\n\r\n"
)
VIA_END = INVITE.index(b"\r\n", INVITE.index(b"Via:")) + 2


@pytest.mark.parametrize(
    ("quoted", "counts"),
    [
        (INVITE, True),  # loopback ICMP quotes the whole datagram
        (INVITE[:VIA_END], True),  # a router's quote that reaches past the Via branch
        (INVITE[: VIA_END - 3], False),  # cut inside the branch: a forger could have guessed that much
        (INVITE[:8], False),  # RFC 792's minimum quote: the request line only
        (b"", False),
        (INVITE.replace(b"7f3a9c1e0b", b"0000000000"), False),  # another branch: not our request
    ],
)
def test_an_icmp_error_counts_only_if_it_quotes_our_branch(quoted: bytes, counts: bool) -> None:
    assert quotes_request(quoted, INVITE) is counts


def _ee(origin: int, icmp_type: int, code: int) -> bytes:
    return struct.pack("=IBBBBII", 111, origin, icmp_type, code, 0, 0, 0) + bytes(16)


def test_only_port_unreachable_is_read_from_the_error_queue() -> None:
    assert port_unreachable([(socket.IPPROTO_IP, IP_RECVERR, _ee(2, 3, 3))])
    assert not port_unreachable([(socket.IPPROTO_IP, IP_RECVERR, _ee(2, 3, 1))])  # host unreachable
    assert not port_unreachable([(socket.IPPROTO_IP, IP_RECVERR, _ee(1, 3, 3))])  # local origin, not ICMP
    assert not port_unreachable([(socket.IPPROTO_IP, IP_RECVERR, b"\x00")])  # truncated
    assert not port_unreachable([])


@pytest.mark.integration
def test_a_call_to_a_port_where_nothing_listens_ends_at_once_as_503() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # closed again when the block ends: nothing listens there

    async def main() -> None:
        async with running_stack() as stack:
            call = await stack.place_call(f"sip:bob@127.0.0.1:{closed}", "sip:alice@127.0.0.1", lambda _: sdp(9300))
            while True:
                ev = await call.next_event(10.0)  # timer B would take 32 s: this bound fails the old behaviour
                if isinstance(ev, Failed):
                    break
            assert ev.code == 503 and "ICMP port unreachable" in ev.reason, ev
            assert f"127.0.0.1:{closed}" in ev.reason
            assert stack.stats.icmp_unreachable == 1

    asyncio.run(asyncio.wait_for(main(), 30.0))
