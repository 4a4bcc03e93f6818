"""Junk on the SIP port: the stack survives, counts it, answers 400/505 where RFC 3261 asks, keeps working."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.sip_probe import request
from tests.testbed.sip_peer import SipPeer, running_stack, sdp
from voipgw.sip import Answered, Ended, Failed, SipStack, SipStats
from voipgw.sip.guard import Accept, DatagramGuard, Drop, Reply

pytestmark = pytest.mark.hardening

REPLY_WAIT = 1.0
FLOOD = 500
FLOOD_BATCH = 50
FLOOD_PAUSE_S = 0.01
FLOOD_SETTLE_POLLS = 100


def exchange(port: int, data: bytes, wait: float = REPLY_WAIT) -> bytes | None:
    """Send one datagram from a fresh loopback socket; return the reply or None after `wait`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(wait)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


CASES: list[tuple[str, bytes, int | None]] = [
    ("garbage", b"\x00\x01hello this is definitely not SIP at all\xff" * 2, None),
    ("version 9.9", request(version="SIP/9.9"), 505),
    ("non-utf8 header", request(extra=b"Subject: caf\xe9 \xff\xfe\r\n"), 400),
    ("body shorter than Content-Length", request(body=b"v=0\r\n", content_length="500"), 400),
    ("Content-Length not a number", request(body=b"v=0\r\n", content_length="abc"), 400),
    ("truncated before the blank line", request()[:-2], 400),
    ("CSeq method mismatch", request().replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"), 400),
    ("header line without colon", request(extra=b"this line has no colon\r\n"), 400),
    ("From without an address (sippy cannot parse it)", request(from_hf=b";tag=1"), 400),
    (
        "Via port not a number (sippy cannot parse it)",
        request().replace(b"127.0.0.1:9;", b"127.0.0.1:x;"),
        400,
    ),
    ("ACK with a bad version is never answered", request("ACK", version="SIP/9.9"), None),
    ("response with a bad body length is dropped", b"SIP/2.0 200 OK\r\n" + request()[30:], None),
    ("no Via: cannot answer", request().replace(b"Via:", b"Xia:"), None),
]


@pytest.mark.integration
def test_malformed_datagrams_are_answered_counted_and_harmless(
    peer: SipPeer, capfd: pytest.CaptureFixture[str]
) -> None:
    peer.set_mode(incoming="answer", answer_sdp=sdp(7002))

    async def main() -> tuple[SipStats, list[tuple[str, bytes | None]]]:
        async with running_stack() as stack:
            replies = []
            for name, data, _code in CASES:
                replies.append((name, await asyncio.to_thread(exchange, stack.local_port, data)))
            rng = random.Random(1234)
            junk = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 1400))) for _ in range(FLOOD)]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for i, j in enumerate(junk):
                    s.sendto(j, ("127.0.0.1", stack.local_port))
                    if i % FLOOD_BATCH == 0:
                        # paced so the kernel's receive buffer does not drop part of the flood
                        await asyncio.sleep(FLOOD_PAUSE_S)
            for _ in range(FLOOD_SETTLE_POLLS):
                if stack.stats.datagrams_in >= len(CASES) + FLOOD:
                    break
                await asyncio.sleep(0.05)
            # the flood must not stop a real call from working afterwards
            call = await stack.place_call(f"sip:bob@127.0.0.1:{peer.port}", "sip:alice@127.0.0.1", lambda _: sdp(7000))
            while not isinstance(ev := await call.next_event(5.0), Answered):
                assert not isinstance(ev, (Failed, Ended)), ev
            stats = stack.stats
            call.hangup()
        return stats, replies

    stats, replies = asyncio.run(asyncio.wait_for(main(), 30.0))
    for (name, _data, code), (_, reply) in zip(CASES, replies, strict=True):
        if code is None:
            assert reply is None, f"{name}: unexpected reply {reply!r}"
        else:
            assert reply is not None, f"{name}: no reply"
            assert reply.startswith(f"SIP/2.0 {code} ".encode()), f"{name}: {reply[:40]!r}"
            assert b"Call-ID: junk-1\r\n" in reply
            assert b"Warning: 399 127.0.0.1 " in reply
            assert b";tag=" in reply.split(b"\r\nTo: ", 1)[1].split(b"\r\n", 1)[0]
    n_junk = FLOOD + len(CASES)
    assert stats.datagrams_in == n_junk + 3  # + the call's 100/180/200
    assert stats.malformed >= n_junk - 1  # the garbage flood may, with tiny odds, contain nothing but CRLFs
    assert stats.replied_505 == 1
    assert stats.replied_400 == sum(1 for _, _, c in CASES if c == 400)
    assert stats.non_utf8 >= 1 and stats.truncated_body >= 2 and stats.bad_content_length >= 1
    out, _err = capfd.readouterr()
    assert "Traceback" not in out and "Traceback" not in _err


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_guard_never_raises_and_replies_are_sip(data: bytes) -> None:
    stats = SipStats()
    verdict = DatagramGuard("127.0.0.1", "t", stats).check(data, ("127.0.0.1", 9))
    assert isinstance(verdict, (Accept, Reply, Drop))
    if isinstance(verdict, Reply):
        assert verdict.data.startswith(b"SIP/2.0 ")
    assert stats.datagrams_in == 1
    assert stats.accepted + stats.malformed == 1


@given(
    st.sampled_from(["OPTIONS", "INVITE", "BYE"]),
    st.binary(max_size=300),
    st.integers(min_value=0, max_value=400),
)
@settings(max_examples=200, deadline=None)
def test_guard_content_length_rule(method: str, body: bytes, declared: int) -> None:
    data = request(method, body=body, content_length=str(declared))
    verdict = DatagramGuard("127.0.0.1", "t", SipStats()).check(data, ("127.0.0.1", 9))
    valid_utf8 = True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        valid_utf8 = False
    if declared > len(body) or not valid_utf8:
        assert isinstance(verdict, Reply) and verdict.code == 400
    elif b"\r\n\r\n" not in body and b"\n\n" not in body:
        assert isinstance(verdict, Accept)


@pytest.mark.integration
def test_sippy_internal_errors_are_counted_and_logged_not_printed(capfd: pytest.CaptureFixture[str]) -> None:
    """An INVITE that passes the guard but breaks sippy deeper in (its Contact cannot be parsed)."""

    async def main() -> SipStats:
        stack: SipStack
        async with running_stack() as stack:
            bad = request("INVITE", extra=b"Contact: ;;;\r\n").replace(b";branch=", b";rport;branch=")
            reply = await asyncio.to_thread(exchange, stack.local_port, bad)
            assert reply is not None and reply.startswith(b"SIP/2.0 400 ")
            # still alive: a stray in-dialog BYE gets its 481
            bye = request("BYE").replace(b"To: <sip:x@127.0.0.1>", b"To: <sip:x@127.0.0.1>;tag=zz")
            bye = bye.replace(b";branch=", b";rport;branch=").replace(b"junk-1", b"junk-2")
            reply = await asyncio.to_thread(exchange, stack.local_port, bye)
            assert reply is not None and reply.startswith(b"SIP/2.0 481 ")
            return stack.stats

    stats = asyncio.run(asyncio.wait_for(main(), 20.0))
    assert stats.sippy_errors >= 1
    out, err = capfd.readouterr()
    assert "Traceback" not in out and "Traceback" not in err
