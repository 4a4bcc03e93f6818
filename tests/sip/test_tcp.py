"""SIP over TCP: stream framing, connection reuse, keep-alives, automatic selection and hostile connections."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.testbed.ports import reserve_block
from tests.testbed.sip_peer import SipPeer, running_stack, sdp
from voipgw.sip import Answered, Confirmed, Ended, Failed, IncomingCall, SipStack, TcpOptions
from voipgw.sip.framing import (
    BadContentLength,
    BodyTooLarge,
    HeaderTooLarge,
    Message,
    MissingContentLength,
    Ping,
    StreamFramer,
    top_via_branch,
)

EVENT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 10.0
POLL_S = 0.05


def sip_message(
    method: str = "OPTIONS", body: bytes = b"", branch: str = "z9hG4bKtcp1", compact: bool = False
) -> bytes:
    length = f"l: {len(body)}" if compact else f"Content-Length: {len(body)}"
    return (
        f"{method} sip:x@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:9;branch={branch}\r\n"
        "From: <sip:junk@127.0.0.1>;tag=abc\r\nTo: <sip:x@127.0.0.1>\r\n"
        f"Call-ID: tcp-{branch}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{length}\r\n\r\n"
    ).encode() + body


# --- framing (pure) ------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    pings=st.lists(st.booleans(), min_size=4, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
def test_framing_is_independent_of_how_the_stream_is_cut(
    bodies: list[bytes], pings: list[bool], cuts: list[int]
) -> None:
    stream = b""
    expected: list[Message | Ping] = []
    for i, body in enumerate(bodies):
        if pings[i]:
            stream += b"\r\n\r\n"
            expected.append(Ping())
        msg = sip_message("MESSAGE", body, branch=f"z9hG4bK{i}", compact=i % 2 == 1)
        stream += msg
        expected.append(Message(msg))
    framer = StreamFramer()
    got: list[Message | Ping] = []
    edges = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for a, b in itertools.pairwise(edges):
        got += framer.feed(stream[a:b])
    assert got == expected
    assert not framer.in_message


def test_lone_crlf_is_skipped_and_half_a_ping_waits() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == [Ping()]
    msg = sip_message()
    assert framer.feed(b"\r\n" + msg) == [Message(msg)]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"OPTIONS sip:x SIP/2.0\r\nX: " + b"a" * 20000, HeaderTooLarge),
        (b"OPTIONS sip:x SIP/2.0\r\nX: " + b"a" * 17000 + b"\r\n\r\n", HeaderTooLarge),
        (b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 70000\r\n\r\n", BodyTooLarge),
        (b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\n", MissingContentLength),
        (b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 2\r\nl: 3\r\n\r\n", BadContentLength),
        (b"OPTIONS sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n", BadContentLength),
        (b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 99999999999999\r\n\r\n", BadContentLength),
    ],
)
def test_unframeable_streams_raise_and_stay_dead(data: bytes, error: type[Exception]) -> None:
    framer = StreamFramer()
    with pytest.raises(error):
        framer.feed(data)
    with pytest.raises(error):
        framer.feed(sip_message())


def test_folded_content_length_and_top_via_branch() -> None:
    msg = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP a;branch=z9hG4bKfirst, SIP/2.0/UDP b;branch=z9hG4bKsecond\r\n"
        b"Via: SIP/2.0/UDP c;branch=z9hG4bKthird\r\nContent-Length:\r\n 3\r\n\r\nabc"
    )
    assert StreamFramer().feed(msg) == [Message(msg)]
    assert top_via_branch(msg) == "z9hG4bKfirst"
    assert top_via_branch(b"OPTIONS sip:x SIP/2.0\r\nv: SIP/2.0/TCP a ; branch = z9hG4bKc\r\n\r\n") == "z9hG4bKc"
    assert top_via_branch(b"OPTIONS sip:x SIP/2.0\r\n\r\n") is None


# --- a real stack on TCP -------------------------------------------------------------------------------------


@pytest.fixture
def tcp_peer() -> Iterator[SipPeer]:
    with SipPeer(tcp=True) as p:
        yield p


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    return s


def read_message(sock: socket.socket) -> bytes:
    framer = StreamFramer()
    while True:
        data = sock.recv(65536)
        assert data, "the stack closed the connection instead of answering"
        for frame in framer.feed(data):
            if isinstance(frame, Message):
                return frame.data


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True once the stack closed (or reset) the connection; False if it is still open after ``timeout``."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


async def wait_stats(stack: SipStack, ok: object, timeout: float = CLOSE_TIMEOUT) -> None:
    assert callable(ok)
    deadline = time.monotonic() + timeout
    while not ok(stack.tcp_stats):
        assert time.monotonic() < deadline, stack.tcp_stats
        await asyncio.sleep(POLL_S)


@pytest.mark.integration
def test_response_goes_back_on_the_request_connection_and_pings_get_pongs() -> None:
    async def main() -> None:
        async with running_stack(tcp=TcpOptions()) as stack:
            # The Via names port 9, where nothing listens: only connection reuse can deliver the answer.
            with await asyncio.to_thread(connect, stack.local_port) as sock:
                await asyncio.to_thread(sock.sendall, sip_message("OPTIONS", branch="z9hG4bKreuse"))
                reply = await asyncio.to_thread(read_message, sock)
                assert reply.startswith(b"SIP/2.0 200 ")
                assert b"SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKreuse" in reply
                await asyncio.to_thread(sock.sendall, b"\r\n\r\n")
                assert await asyncio.to_thread(sock.recv, 16) == b"\r\n"
            stats = stack.tcp_stats
            assert stats is not None and stats.pings_answered == 1 and stats.messages_in == 1

    asyncio.run(asyncio.wait_for(main(), 30.0))


@pytest.mark.integration
def test_large_invite_goes_over_tcp_by_itself_and_the_connection_is_reused(tcp_peer: SipPeer) -> None:
    """The peer's INVITE (sdp() carries a 1.6 KB attribute) exceeds 1300 bytes, so it picks TCP unasked; two
    calls to us share one outbound connection, and our answers and BYE travel over TCP too."""

    async def main() -> None:
        async with running_stack(tcp=TcpOptions()) as stack:
            for n in range(2):
                offer = sdp(6000 + n)
                assert len(offer) > 1300
                tcp_peer.send(op="call", target=f"sip:carol@127.0.0.1:{stack.local_port}", sdp=offer,
                              **{"from": "sip:dave@127.0.0.1"})  # fmt: skip
                inc = await asyncio.wait_for(stack.incoming.get(), EVENT_TIMEOUT)
                assert isinstance(inc, IncomingCall) and inc.remote_sdp == offer
                answer = sdp(7000 + n, "a=callee\r\n")
                inc.answer(answer)
                assert isinstance(await inc.next_event(EVENT_TIMEOUT), Confirmed)
                assert (await tcp_peer.acall_event("Answered"))["data"]["remote_sdp"] == answer
                inc.hangup()
                assert await inc.next_event(EVENT_TIMEOUT) == Ended(reason="local hangup", by_remote=False)
                assert (await tcp_peer.acall_event("Ended"))["data"]["by_remote"] is True
            # Every message the stack handled came over TCP (the guard sees both transports; TCP counts first).
            await wait_stats(stack, lambda s: s.messages_in == stack.stats.datagrams_in)
            ours = stack.tcp_stats
            assert ours is not None and ours.messages_in >= 4  # INVITE + ACK per call, 200 to our BYE
            tcp_peer.send(op="stats")
            theirs = (await tcp_peer.aexpect("stats"))["tcp"]
            assert theirs["connected"] == 1 and theirs["connect_failures"] == 0
            assert theirs["messages_in"] >= 6  # 180/200 per call and our BYE, all on that one connection

    asyncio.run(asyncio.wait_for(main(), 60.0))


@pytest.mark.integration
def test_outgoing_tcp_call_by_uri_parameter_and_a_dead_tcp_target_fails_fast(tcp_peer: SipPeer) -> None:
    answer = sdp(5002, "a=answer-side\r\n")
    tcp_peer.set_mode(incoming="answer", answer_sdp=answer)

    async def main() -> None:
        async with running_stack(tcp=TcpOptions()) as stack:
            short = (
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
            )
            call = await stack.place_call(
                f"sip:bob@127.0.0.1:{tcp_peer.port};transport=tcp", "sip:alice@127.0.0.1", lambda _: short
            )
            ev = None
            while not isinstance(ev, Answered):
                ev = await call.next_event(EVENT_TIMEOUT)
                assert not isinstance(ev, Failed | Ended), ev
            call.hangup()
            await tcp_peer.acall_event("Ended")
            stats = stack.tcp_stats
            assert stats is not None and stats.connected == 1 and stats.messages_out >= 3  # INVITE, ACK, BYE
            with reserve_block(1) as block:  # nothing listens there
                dead = await stack.place_call(
                    f"sip:nobody@127.0.0.1:{block[0]}", "sip:alice@127.0.0.1", lambda _: short, transport="tcp"
                )
                failed = await dead.next_event(EVENT_TIMEOUT)  # well before timer B's 32 s
            assert isinstance(failed, Failed) and failed.code == 503, failed
            assert "connect failed" in failed.reason

    asyncio.run(asyncio.wait_for(main(), 60.0))


@pytest.mark.integration
def test_a_large_request_goes_back_to_udp_when_the_peer_refuses_tcp() -> None:
    """RFC 3261 18.1.1: TCP was chosen only for the size, so a refused connection means retry over UDP."""
    answer = sdp(5004, "a=udp-only\r\n")

    async def main(peer: SipPeer) -> None:
        async with running_stack(tcp=TcpOptions()) as stack:
            offer = sdp(4010)
            assert len(offer) > 1300
            call = await stack.place_call(f"sip:bob@127.0.0.1:{peer.port}", "sip:alice@127.0.0.1", lambda _: offer)
            ev = None
            while not isinstance(ev, Answered):
                ev = await call.next_event(EVENT_TIMEOUT)
                assert not isinstance(ev, Failed | Ended), ev
            assert ev.remote_sdp == answer
            assert (await peer.aexpect("incoming"))["remote_sdp"] == offer
            stats = stack.tcp_stats
            assert stats is not None and stats.connect_failures == 1 and stats.messages_out == 0, stats
            call.hangup()
            await peer.acall_event("Ended")

    with SipPeer() as udp_only:  # no TCP listener: the connection is refused
        udp_only.set_mode(incoming="answer", answer_sdp=answer)
        asyncio.run(asyncio.wait_for(main(udp_only), 60.0))


def test_tcp_transport_must_be_enabled_to_be_asked_for() -> None:
    async def main() -> None:
        async with running_stack() as stack:
            with pytest.raises(Exception, match="not enabled"):
                await stack.place_call("sip:b@127.0.0.1:9;transport=tcp", "sip:a@127.0.0.1", lambda _: "")

    asyncio.run(asyncio.wait_for(main(), 20.0))


IDLE_FLOOD = 200
CAP = 100


@pytest.mark.integration
def test_garbage_and_idle_floods_on_the_tcp_port_stay_within_limits_and_calls_keep_working(
    tcp_peer: SipPeer,
) -> None:
    opts = TcpOptions(max_connections=CAP, message_timeout_s=1.0, unproven_timeout_s=60.0, sweep_interval_s=0.1)

    async def main() -> None:
        async with running_stack(tcp=opts) as stack:
            port = stack.local_port

            def hostile() -> dict[str, bool]:
                out: dict[str, bool] = {}
                with connect(port) as s:  # headers that never end
                    s.sendall(b"INVITE sip:x SIP/2.0\r\nX: " + b"a" * 20000)
                    out["oversized header"] = closed_by_peer(s, CLOSE_TIMEOUT)
                with connect(port) as s:
                    s.sendall(b"INVITE sip:x SIP/2.0\r\nContent-Length: 999999\r\n\r\n")
                    out["oversized body"] = closed_by_peer(s, CLOSE_TIMEOUT)
                with connect(port) as s:
                    s.sendall(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9\r\n\r\n")
                    out["no content-length"] = closed_by_peer(s, CLOSE_TIMEOUT)
                with connect(port) as s:  # half a message, then silence
                    s.sendall(sip_message("MESSAGE", b"x" * 100)[:-50])
                    out["partial"] = closed_by_peer(s, CLOSE_TIMEOUT)
                with connect(port) as s:  # slowloris: a byte every 0.2 s never completes within 1 s
                    s.settimeout(0.2)
                    cut = False
                    for byte in sip_message("MESSAGE", b"y" * 200)[:-1]:
                        try:
                            s.send(bytes([byte]))
                            if s.recv(1) == b"":
                                cut = True
                                break
                        except TimeoutError:
                            continue
                        except (BrokenPipeError, ConnectionResetError):
                            cut = True
                            break
                    out["slowloris"] = cut
                return out

            results = await asyncio.to_thread(hostile)
            assert all(results.values()), results
            stats = stack.tcp_stats
            assert stats is not None and stats.closed_framing >= 3 and stats.closed_slow >= 2, stats

            idle = await asyncio.to_thread(lambda: [connect(port) for _ in range(IDLE_FLOOD)])
            try:
                await wait_stats(stack, lambda s: s.accepted >= IDLE_FLOOD + 5)
                stats = stack.tcp_stats
                assert stats is not None and stats.open_inbound <= CAP, stats
                assert stats.evicted + stats.refused_over_cap >= IDLE_FLOOD - CAP, stats
                # A call still gets through while the flood holds the port: its connection evicts an idle one.
                offer = sdp(6100)
                tcp_peer.send(op="call", target=f"sip:carol@127.0.0.1:{port}", sdp=offer,
                              **{"from": "sip:dave@127.0.0.1"})  # fmt: skip
                inc = await asyncio.wait_for(stack.incoming.get(), EVENT_TIMEOUT)
                assert isinstance(inc, IncomingCall) and inc.remote_sdp == offer
                inc.answer(sdp(7100))
                assert isinstance(await inc.next_event(EVENT_TIMEOUT), Confirmed)
                tcp_peer.send(op="hangup")
                ended = await inc.next_event(EVENT_TIMEOUT)
                assert isinstance(ended, Ended) and ended.by_remote
                assert stack.running and stack.tcp_stats is not None
                assert stack.tcp_stats.open_inbound <= CAP
            finally:
                for s in idle:
                    s.close()

    asyncio.run(asyncio.wait_for(main(), 120.0))


# --- configuration: which suites a transport may offer -----------------------------------------------------


def test_transport_setting_gates_the_hybrid_offer() -> None:
    from ratchet.params import Suite
    from voipgw.config import ConfigError, phone_config_from_mapping

    both = ["x25519", "x25519-mlkem768"]
    auto = phone_config_from_mapping({"aor": "a@b", "suites": both})
    assert auto.transport == "auto" and Suite.X25519_MLKEM768 in auto.offer_handshake.suites
    tcp = phone_config_from_mapping({"aor": "a@b", "suites": both, "transport": "tcp"})
    assert Suite.X25519_MLKEM768 in tcp.offer_handshake.suites
    udp = phone_config_from_mapping({"aor": "a@b", "suites": both, "transport": "udp"})
    assert udp.offer_handshake.suites == frozenset({Suite.X25519})
    assert Suite.X25519_MLKEM768 in udp.handshake.suites  # a hybrid offer that arrives is still answered
    with pytest.raises(ConfigError, match="transport: expected one of"):
        phone_config_from_mapping({"aor": "a@b", "transport": "sctp"})


THOUSAND = 1000


@pytest.mark.integration
def test_a_thousand_idle_connections_fit_under_the_default_cap_and_the_next_ones_evict(tcp_peer: SipPeer) -> None:
    opts = TcpOptions()  # the defaults a phone runs with: cap 1024
    extra = opts.max_connections - THOUSAND + 50

    async def main() -> None:
        async with running_stack(tcp=opts) as stack:
            port = stack.local_port
            idle = await asyncio.to_thread(lambda: [connect(port) for _ in range(THOUSAND)])
            try:
                await wait_stats(stack, lambda s: s.open_inbound == THOUSAND)
                idle += await asyncio.to_thread(lambda: [connect(port) for _ in range(extra)])
                await wait_stats(stack, lambda s: s.accepted == THOUSAND + extra)
                stats = stack.tcp_stats
                assert stats is not None and stats.open_inbound == opts.max_connections, stats
                assert stats.evicted == THOUSAND + extra - opts.max_connections, stats
                offer = sdp(6200)
                tcp_peer.send(op="call", target=f"sip:carol@127.0.0.1:{port}", sdp=offer,
                              **{"from": "sip:dave@127.0.0.1"})  # fmt: skip
                inc = await asyncio.wait_for(stack.incoming.get(), EVENT_TIMEOUT)
                assert isinstance(inc, IncomingCall) and inc.remote_sdp == offer
                inc.answer(sdp(7200))
                assert isinstance(await inc.next_event(EVENT_TIMEOUT), Confirmed)
                inc.hangup()
                assert (await tcp_peer.acall_event("Ended"))["data"]["by_remote"] is True
            finally:
                for s in idle:
                    s.close()
            await wait_stats(stack, lambda s: s.open_inbound <= 1)

    asyncio.run(asyncio.wait_for(main(), 120.0))
