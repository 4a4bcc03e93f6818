"""The UDP RTP endpoint on loopback: counters, malformed input, authenticated-only latching, RTCP reports."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from voipgw.rtp.endpoint import RtpEndpoint
from voipgw.rtp.packet import RtpPacket, build_rtp

Address = tuple[str, int]


def _collector(sink: list[Any], item: Callable[[RtpPacket, Address], Any]) -> Callable[[RtpPacket, Address], bool]:
    """An on_payload handler that records ``item(packet, addr)`` and reports the packet authentic."""

    def handler(pkt: RtpPacket, addr: Address) -> bool:
        sink.append(item(pkt, addr))
        return True

    return handler


async def _until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def _run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), 20))


def test_send_receive_and_counters() -> None:
    async def main() -> None:
        a = await RtpEndpoint.open(rtcp_interval=0)
        b = await RtpEndpoint.open(remote=a.local, rtcp_interval=0)
        got: list[tuple[RtpPacket, Address]] = []
        b.on_payload = _collector(got, lambda p, addr: (p, addr))
        a.remote = b.local
        try:
            for i in range(20):
                assert a.send(bytes([i]) * 50)
            await _until(lambda: len(got) == 20)
            assert [p.payload[0] for p, _ in got] == list(range(20))
            seqs = [p.sequence for p, _ in got]
            assert all((y - x) & 0xFFFF == 1 for x, y in itertools.pairwise(seqs))
            stamps = [p.timestamp for p, _ in got]
            assert all((y - x) & 0xFFFFFFFF == 960 for x, y in itertools.pairwise(stamps))
            assert {p.ssrc for p, _ in got} == {a.ssrc}
            assert a.stats.packets_sent == b.stats.packets_received == 20
            assert a.stats.bytes_sent == b.stats.bytes_received == 1000
            assert not b.latched  # the source already was the SDP address
        finally:
            await a.close()
            await b.close()

    _run(main)


def test_malformed_and_wrong_payload_type_are_counted_not_delivered() -> None:
    async def main() -> None:
        b = await RtpEndpoint.open(rtcp_interval=0)
        got: list[RtpPacket] = []
        b.on_payload = _collector(got, lambda p, addr: p)
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            raw.sendto(b"\x00\x01", b.local)
            raw.sendto(b"\x40" + bytes(20), b.local)
            raw.sendto(build_rtp(0, 1, 1, 1, b"pcmu"), b.local)
            raw.sendto(build_rtp(111, 2, 2, 2, b"opus"), b.local)
            await _until(lambda: len(got) == 1)
            assert got[0].payload == b"opus"
            assert b.stats.malformed == 2
            assert b.stats.refused == {"payload-type": 1}
        finally:
            raw.close()
            await b.close()

    _run(main)


def test_latching_only_follows_authenticated_sources() -> None:
    async def main() -> None:
        a = await RtpEndpoint.open(rtcp_interval=0)
        sdp_address = ("127.0.0.1", 9)  # what the SDP claimed; the peer really sends from elsewhere (NAT)
        b = await RtpEndpoint.open(remote=sdp_address, rtcp_interval=0)
        latches: list[tuple[Address, Address]] = []
        b.on_latch = lambda old, new: latches.append((old, new))
        # The owner's authentication stand-in: only payloads starting with b"good" open.
        b.on_payload = lambda p, addr: p.payload.startswith(b"good")
        attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        attacker.bind(("127.0.0.1", 0))
        a.remote = b.local
        received_by_a: list[bytes] = []
        a.on_payload = _collector(received_by_a, lambda p, addr: p.payload)
        try:
            for i in range(5):
                attacker.sendto(build_rtp(111, i, i, 99, b"spoof"), b.local)
            await _until(lambda: b.stats.packets_received == 5)
            assert b.remote == sdp_address and not b.latched and latches == []
            a.send(b"good frame")
            await _until(lambda: b.latched)
            assert b.remote == a.local
            assert latches == [(sdp_address, a.local)]
            # The attacker still cannot move the stream once latched.
            attacker.sendto(build_rtp(111, 9, 9, 99, b"spoof"), b.local)
            await _until(lambda: b.stats.packets_received == 7)
            assert b.remote == a.local and b.stats.latches == 1
            assert b.send(b"back to the real peer")
            await _until(lambda: received_by_a == [b"back to the real peer"])
        finally:
            attacker.close()
            await a.close()
            await b.close()

    _run(main)


@pytest.mark.parametrize("mux", [False, True])
def test_rtcp_sender_and_receiver_reports(mux: bool) -> None:
    async def main() -> None:
        a = await RtpEndpoint.open(rtcp_mux=mux, rtcp_interval=0.05, cname="alice")
        b = await RtpEndpoint.open(rtcp_mux=mux, rtcp_interval=0.05, cname="bob", remote=a.local)
        a.remote = b.local
        b.on_payload = lambda p, addr: True
        try:
            if not mux:
                assert a.local[1] % 2 == 0
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                with pytest.raises(OSError):
                    probe.bind(("127.0.0.1", a.local[1] + 1))  # RTCP holds port+1
                probe.close()
            for _ in range(30):
                a.send(b"x" * 40)
                await asyncio.sleep(0.005)
            await _until(lambda: a.last_receiver_report is not None and b.last_sender_report is not None)
            sr = b.last_sender_report
            assert sr is not None and sr.ssrc == a.ssrc and sr.packet_count > 0
            # b never sent RTP, so it reports with RRs, about a's stream.
            await _until(
                lambda: (
                    a.last_receiver_report is not None
                    and any(blk.ssrc == a.ssrc for blk in a.last_receiver_report.reports)
                )
            )
            rr = a.last_receiver_report
            assert rr is not None and rr.ssrc == b.ssrc
            block = next(blk for blk in rr.reports if blk.ssrc == a.ssrc)
            assert block.cumulative_lost == 0
            assert a.stats.rtcp_sent > 0 and b.stats.rtcp_received > 0
            assert a.stats.packets_received == 0  # RTCP never counted as RTP, even when muxed
        finally:
            await a.close()
            await b.close()

    _run(main)


def test_close_releases_sockets_and_is_idempotent() -> None:
    async def main() -> None:
        before = len(os.listdir("/proc/self/fd"))
        eps = [await RtpEndpoint.open(rtcp_interval=0.01) for _ in range(10)]
        assert len(os.listdir("/proc/self/fd")) >= before + 20
        for ep in eps:
            await ep.close()
            await ep.close()
            assert ep.closed and not ep.send(b"after close")
        assert len(os.listdir("/proc/self/fd")) == before

    _run(main)


@pytest.mark.parametrize("mux", [False, True])
def test_binds_a_given_port(mux: bool) -> None:
    async def main() -> None:
        probe = await RtpEndpoint.open(rtcp_mux=mux, rtcp_interval=0)
        port = probe.local[1]
        await probe.close()
        ep = await RtpEndpoint.open("127.0.0.1", port, rtcp_mux=mux, rtcp_interval=0)
        try:
            assert ep.local == ("127.0.0.1", port)
            assert ep.remote_rtcp is None
            ep.remote = ("127.0.0.1", 40000)
            assert ep.remote_rtcp == ("127.0.0.1", 40000 if mux else 40001)
            with pytest.raises(OSError):
                await RtpEndpoint.open("127.0.0.1", port, rtcp_mux=mux, rtcp_interval=0)  # already taken
        finally:
            await ep.close()

    _run(main)


def test_an_endpoint_without_rtcp_sends_none_not_even_a_bye_and_cnames_are_random() -> None:
    """Sealed legs open their endpoint with ``rtcp=False`` (issue 14, item 6): clear, unauthenticated RTCP would
    count the frames for the relay and a fixed CNAME would link calls. A listener on its RTCP peer port sees
    nothing during the stream or at close; a default endpoint next to it does send reports and a BYE."""

    async def main() -> None:
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        sink.setblocking(False)
        peer_rtp = ("127.0.0.1", sink.getsockname()[1] - 1)  # so that the endpoint's RTCP target is the sink
        quiet = await RtpEndpoint.open(rtcp_interval=0.02, remote=peer_rtp, rtcp=False)
        try:
            for _ in range(20):
                quiet.send(b"x" * 40)
                await asyncio.sleep(0.005)
            assert quiet.send_report() is False
        finally:
            await quiet.close()
        assert quiet.stats.rtcp_sent == 0
        got: list[bytes] = []
        with contextlib.suppress(BlockingIOError):
            while True:
                got.append(sink.recv(2048))
        assert got == []  # nothing, BYE included
        chatty = await RtpEndpoint.open(rtcp_interval=0.02, remote=peer_rtp)
        assert quiet.cname != chatty.cname and len(quiet.cname) == len(chatty.cname) == 24
        try:
            chatty.send(b"x" * 40)
            await _until(lambda: chatty.stats.rtcp_sent > 0)
        finally:
            await chatty.close()
        sink.close()

    _run(main)


def test_the_fast_path_delivers_what_parse_rtp_would_and_leaves_the_rest_to_it() -> None:
    """Issue 17: a plain version-2 packet of our payload type is parsed inline; anything else (CSRC, extension,
    padding, another payload type, an empty payload) still goes through parse_rtp. Both give the same packet."""
    from voipgw.rtp.packet import parse_rtp

    datagrams = [
        build_rtp(111, 1, 960, 0xABCDEF01, b"\xf8opus"),
        build_rtp(111, 2, 1920, 0xABCDEF01, b"\xf8marked", marker=True),
        build_rtp(111, 3, 2880, 0xABCDEF01, b"\xf8with-csrc", csrc=(7, 8)),
        build_rtp(111, 4, 3840, 0xABCDEF01, b"\xf8ext", extension_profile=0xBEDE, extension=b"\x10\x01\x00\x00"),
        build_rtp(111, 5, 4800, 0xABCDEF01, b"\xf8padded", padding=4),
        build_rtp(111, 6, 5760, 0xABCDEF01, b""),
        build_rtp(0, 7, 6720, 0xABCDEF01, b"\xffpcmu: another payload type"),
    ]

    async def go() -> None:
        got: list[RtpPacket] = []
        b = await RtpEndpoint.open(rtcp_interval=0)
        b.on_payload = _collector(got, lambda p, _a: p)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for d in datagrams:
                tx.sendto(d, b.local)
            await _until(lambda: len(got) == 6 and b.stats.refused.get("payload-type") == 1)
            assert got == [parse_rtp(d) for d in datagrams[:6]]
            assert b.stats.packets_received == 6
            assert b.stats.bytes_received == sum(len(p.payload) for p in got)
        finally:
            tx.close()
            await b.close()

    _run(go)
