"""The SIP UDP socket: a datagram over 8192 bytes gets 513 Message Too Large (or is dropped when it cannot be answered),
is never accepted, and the receive buffer is raised above the kernel default (hardening fixes)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.sip_probe import request
from tests.testbed.sip_peer import running_stack
from voipgw.sip import SipStats
from voipgw.sip.guard import MAX_DATAGRAM, DatagramGuard, Drop, Reply

pytestmark = pytest.mark.hardening


REPLY_WAIT_S = 2.0


def _exchange(port: int, data: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(REPLY_WAIT_S)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


@pytest.mark.integration
def test_oversized_datagrams_get_513_when_answerable_else_are_dropped_and_the_buffer_is_raised() -> None:
    over = b"v=0\r\n" + b"a=x:" + b"y" * MAX_DATAGRAM + b"\r\n"

    def options(size: int) -> bytes:  # rport: sippy answers an accepted request at its Via port otherwise
        return request(body=b"z" * size).replace(b";branch=", b";rport;branch=")

    fill = next(n for n in range(MAX_DATAGRAM) if len(options(n)) >= MAX_DATAGRAM)
    assert len(options(fill)) == MAX_DATAGRAM
    cases = {
        "one byte over the limit": (options(fill + 1), 513),
        "an INVITE with a huge SDP": (request("INVITE", body=over), 513),
        "60 kB": (request(body=b"z" * 60000), 513),
        "a response": (b"SIP/2.0 200 OK\r\n" + request()[30:] + over, None),
        "an ACK": (request("ACK", body=over), None),
        "no Via": (request(body=over).replace(b"Via:", b"Xia:"), None),
        "at the limit (accepted)": (options(fill), 200),
    }

    async def main() -> tuple[dict[str, bytes | None], int | None, int, int, int]:
        async with running_stack() as stack:
            replies = {
                name: await asyncio.to_thread(_exchange, stack.local_port, data) for name, (data, _) in cases.items()
            }
            st = stack.stats
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fresh:
                default = fresh.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            return replies, stack.udp_receive_buffer, default, st.oversized, st.replied_513

    replies, rcvbuf, default, oversized, replied_513 = asyncio.run(asyncio.wait_for(main(), 60))
    for name, (data, want) in cases.items():
        reply = replies[name]
        first = reply.split(b"\r\n", 1)[0] if reply else "no reply"
        print(f"{name} ({len(data)} B): {first!r}")
        if want is None:
            assert reply is None, (name, reply)
            continue
        assert reply is not None and reply.startswith(f"SIP/2.0 {want} ".encode()), (name, reply)
        if want == 513:
            assert b"Message Too Large" in reply and b"Call-ID: junk-1" in reply and b"Warning: 399 " in reply
    assert oversized == 6 and replied_513 == 3, (oversized, replied_513)
    print(f"SIP UDP SO_RCVBUF {rcvbuf} (a fresh socket: {default})")
    assert rcvbuf is not None and rcvbuf > default, (rcvbuf, default)


@given(st.binary(max_size=300), st.booleans())
@settings(max_examples=100, deadline=None)
def test_an_oversized_datagram_is_never_accepted(junk: bytes, as_request: bool) -> None:
    data = request(body=junk + b"z" * MAX_DATAGRAM) if as_request else junk + bytes(MAX_DATAGRAM + 1)
    stats = SipStats()
    verdict = DatagramGuard("127.0.0.1", "t", stats).check(data, ("127.0.0.1", 9))
    assert isinstance(verdict, Reply | Drop), verdict
    if as_request:
        assert isinstance(verdict, Reply) and verdict.code == 513 and verdict.data.startswith(b"SIP/2.0 513 ")
    assert stats.oversized == stats.malformed == 1 and stats.malformed_by_reason() == {"oversized": 1}
    # a stream transport (TCP, TLS) frames its messages with its own limits: no datagram limit there
    streamed = DatagramGuard("127.0.0.1", "t", SipStats()).check(data, ("127.0.0.1", 9), None)
    assert not (isinstance(streamed, Reply) and streamed.code == 513), streamed
