"""Calls and registrations through Kamailio (registrar + record-routing proxy) with digest auth."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.requires import requires
from tests.testbed.kamailio import Kamailio
from tests.testbed.rtpengine import Rtpengine
from tests.testbed.sip_peer import LONG_ATTR, SipPeer, running_stack, sdp
from voipgw.sip import Answered, Confirmed, Ended, Failed, RegistrationFailed, SipCall, SipEvent, SipStack

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "rtpengine")]

USERS = {"alice": "alicepw", "bob": "bobpw"}
WIRE = "voipgw.sip.wire"


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[Kamailio]:
    with Kamailio(tmp_path, users=USERS, auth=True, min_expires=1) as k:
        yield k


@pytest.fixture
def bob(kamailio: Kamailio) -> Iterator[SipPeer]:
    """A peer process registered as bob at the Kamailio, answering calls."""
    p = SipPeer()
    try:
        p.set_mode(incoming="answer", answer_sdp=sdp(9002))
        p.send(
            op="register",
            registrar=list(kamailio.addr),
            aor="sip:bob@127.0.0.1",
            username="bob",
            password="bobpw",
        )
        assert p.expect("registered")["state"]["code"] == 200
        yield p
    finally:
        p.stop()


def wire_messages(caplog: pytest.LogCaptureFixture, direction: str) -> list[str]:
    """SIP messages our stack logged as SENDING or RECEIVED, message text only."""
    return [
        r.getMessage().split("\n", 1)[1]
        for r in caplog.records
        if r.name == WIRE and r.getMessage().startswith(direction)
    ]


async def until(call: SipCall, kind: type[SipEvent]) -> SipEvent:
    while True:
        ev = await call.next_event(5.0)
        if isinstance(ev, kind):
            return ev
        assert not isinstance(ev, (Failed, Ended)), ev


async def failure(call: SipCall) -> Failed:
    """The call's Failed event, whatever comes before it."""
    ev = await call.next_event(5.0)
    while not isinstance(ev, Failed):
        ev = await call.next_event(5.0)
    return ev


async def call_through(stack: SipStack, k: Kamailio, caller: str, callee: str, offer: str) -> SipCall:
    """``caller`` calls ``callee`` through the proxy, answering its challenge with the caller's credentials."""
    return await stack.place_call(
        f"sip:{callee}@127.0.0.1:{k.port}",
        f"sip:{caller}@127.0.0.1",
        lambda _: offer,
        proxy=k.addr,
        username=caller,
        password=USERS[caller],
    )


def test_register_401_then_200_refresh_before_expiry_and_unregister(
    kamailio: Kamailio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=WIRE)

    async def main() -> None:
        async with running_stack() as stack:
            reg = await stack.register(kamailio.addr, "sip:alice@127.0.0.1", "alice", "alicepw", expires=2)
            assert reg.state is not None and reg.state.registered and reg.state.granted_expires == 2
            assert "alicepw" not in repr(reg._core) and "alicepw" not in repr(reg.state)
            # refreshed at 60 % of 2 s, so a third REGISTER (after 401 + 200) goes out well before expiry
            for _ in range(40):
                if sum(m.startswith("REGISTER ") for m in wire_messages(caplog, "SENDING")) >= 3:
                    break
                await asyncio.sleep(0.05)
            state = await reg.unregister()
            assert not state.registered and state.code == 200 and state.granted_expires == 0

    asyncio.run(asyncio.wait_for(main(), 20.0))
    sent = [m for m in wire_messages(caplog, "SENDING") if m.startswith("REGISTER ")]
    got = [m.split("\r\n", 1)[0] for m in wire_messages(caplog, "RECEIVED")]
    assert got[:2] == ["SIP/2.0 401 Unauthorized", "SIP/2.0 200 OK"]
    assert "Authorization: Digest " not in sent[0] and "Authorization: Digest " in sent[1]
    assert "Contact: <sip:alice@127.0.0.1:" in sent[0] and ">;expires=2\r\n" in sent[0]
    assert len(sent) >= 4  # 401'd, 200, refresh, unregister
    assert ">;expires=2\r\n" in sent[2]
    assert ">;expires=0\r\n" in sent[-1]


def test_register_answers_407_with_proxy_authorization(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=WIRE)

    async def main() -> None:
        with Kamailio(tmp_path, users=USERS, auth=True, register_challenge="proxy") as k:
            async with running_stack() as stack:
                reg = await stack.register(k.addr, "sip:alice@127.0.0.1", "alice", "alicepw", expires=60)
                assert reg.state is not None and reg.state.registered

    asyncio.run(asyncio.wait_for(main(), 20.0))
    sent = [m for m in wire_messages(caplog, "SENDING") if m.startswith("REGISTER ")]
    assert "\r\nProxy-Authorization: Digest " in sent[1]
    assert "\r\nAuthorization:" not in sent[1]


def test_register_with_wrong_password_fails(kamailio: Kamailio) -> None:
    async def main() -> None:
        async with running_stack() as stack:
            with pytest.raises(RegistrationFailed) as info:
                await stack.register(kamailio.addr, "sip:alice@127.0.0.1", "alice", "wrong", expires=60)
            assert info.value.code == 401

    asyncio.run(asyncio.wait_for(main(), 20.0))


@pytest.mark.parametrize("who_hangs_up", ["caller", "callee"])
def test_call_through_proxy_407_lookup_and_record_route(
    kamailio: Kamailio, bob: SipPeer, caplog: pytest.LogCaptureFixture, who_hangs_up: str
) -> None:
    caplog.set_level(logging.DEBUG, logger=WIRE)
    offer = sdp(9000, "a=via-proxy\r\n")

    async def main() -> None:
        async with running_stack() as stack:
            await stack.register(kamailio.addr, "sip:alice@127.0.0.1", "alice", "alicepw")
            call = await call_through(stack, kamailio, "alice", "bob", offer)
            answered = await until(call, Answered)
            assert isinstance(answered, Answered) and answered.remote_sdp == sdp(9002)
            inc = await bob.aexpect("incoming")
            assert inc["remote_sdp"] == offer and inc["from_aor"] == "sip:alice@127.0.0.1"
            assert tuple(inc["source"]) == kamailio.addr  # it came through the proxy, not directly
            await bob.acall_event("Confirmed")
            if who_hangs_up == "caller":
                call.hangup()
                assert (await bob.acall_event("Ended"))["data"]["by_remote"] is True
            else:
                bob.send(op="hangup")
                assert await call.next_event(5.0) == Ended(reason="remote hangup", by_remote=True)

    asyncio.run(asyncio.wait_for(main(), 20.0))
    invites = [m for m in wire_messages(caplog, "SENDING") if m.startswith("INVITE ")]
    assert len(invites) == 2
    assert "Proxy-Authorization: Digest " not in invites[0]
    assert "\r\nProxy-Authorization: Digest " in invites[1]
    received = wire_messages(caplog, "RECEIVED")
    assert any(m.startswith("SIP/2.0 407 ") for m in received)
    ok = next(m for m in received if m.startswith("SIP/2.0 200 OK") and "INVITE" in m.split("CSeq:", 1)[1][:20])
    assert f"\r\nRecord-Route: <sip:127.0.0.1:{kamailio.port};" in ok
    if who_hangs_up == "caller":
        bye = next(m for m in wire_messages(caplog, "SENDING") if m.startswith("BYE "))
        assert f"\r\nRoute: <sip:127.0.0.1:{kamailio.port};" in bye and ";lr>" in bye
        # ... and it was sent to the proxy, not straight to bob's contact in the request line
        sent_to = [
            r.getMessage().split("\n", 1)[0] for r in caplog.records if r.name == WIRE and "\nBYE " in r.getMessage()
        ]
        assert sent_to == [f"SENDING message to udp:127.0.0.1:{kamailio.port}:"]
        assert not bye.startswith(f"BYE sip:bob@127.0.0.1:{kamailio.port} ")
    else:
        bye = next(m for m in received if m.startswith("BYE "))
        assert "Record-Route" not in bye and f"Via: SIP/2.0/UDP 127.0.0.1:{kamailio.port}" in bye


def test_call_to_unregistered_user_gets_404(kamailio: Kamailio) -> None:
    async def main() -> None:
        async with running_stack() as stack:
            call = await call_through(stack, kamailio, "alice", "bob", sdp(9004))
            assert (await failure(call)).code == 404

    asyncio.run(asyncio.wait_for(main(), 20.0))


def test_incoming_call_through_proxy_after_registration(kamailio: Kamailio) -> None:
    async def main() -> None:
        async with running_stack() as stack:
            await stack.register(kamailio.addr, "sip:alice@127.0.0.1", "alice", "alicepw")
            with SipPeer() as carol_as_bob:
                carol_as_bob.send(
                    op="call",
                    target=f"sip:alice@127.0.0.1:{kamailio.port}",
                    sdp=sdp(9006),
                    proxy=list(kamailio.addr),
                    username="bob",
                    password="bobpw",
                    **{"from": "sip:bob@127.0.0.1"},
                )
                inc = await asyncio.wait_for(stack.incoming.get(), 5.0)
                assert inc.remote_sdp == sdp(9006) and inc.source_addr == kamailio.addr
                inc.answer(sdp(9008))
                assert isinstance(await inc.next_event(5.0), Confirmed)
                assert (await carol_as_bob.acall_event("Answered"))["data"]["remote_sdp"] == sdp(9008)
                inc.hangup()
                assert (await carol_as_bob.acall_event("Ended"))["data"]["by_remote"] is True

    asyncio.run(asyncio.wait_for(main(), 20.0))


def test_stop_unregisters(kamailio: Kamailio, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=WIRE)

    async def main() -> None:
        async with running_stack() as stack:
            await stack.register(kamailio.addr, "sip:alice@127.0.0.1", "alice", "alicepw", expires=600)
        # the registrar forgot alice: a call to her now finds nobody
        async with running_stack() as stack:
            call = await call_through(stack, kamailio, "bob", "alice", sdp(9010))
            assert (await failure(call)).code == 404

    asyncio.run(asyncio.wait_for(main(), 20.0))
    sent = [m for m in wire_messages(caplog, "SENDING") if m.startswith("REGISTER ")]
    assert ">;expires=0\r\n" in sent[-1]


def test_kamailio_rtpengine_hook_rewrites_media_address_and_keeps_our_attribute(tmp_path: Path) -> None:
    """The launcher's rtpengine option: the SDP each side gets points at the relay; a=voipgw survives."""
    with Rtpengine(tmp_path) as relay, Kamailio(tmp_path, users=USERS, auth=True, rtpengine_ng=relay.ng_socket) as k:
        lo, hi = relay.rtp_range
        with SipPeer() as bob:
            bob.set_mode(incoming="answer", answer_sdp=sdp(9102))
            bob.send(op="register", registrar=list(k.addr), aor="sip:bob@127.0.0.1", username="bob", password="bobpw")
            bob.expect("registered")

            async def main() -> None:
                async with running_stack() as stack:
                    call = await call_through(stack, k, "alice", "bob", sdp(9100))
                    answered = await until(call, Answered)
                    assert isinstance(answered, Answered)
                    offer_seen = (await bob.aexpect("incoming"))["remote_sdp"]
                    for seen in (offer_seen, answered.remote_sdp):
                        port = int(seen.split("m=audio ", 1)[1].split(" ", 1)[0])
                        assert lo <= port <= hi, seen[:200]
                        assert LONG_ATTR in seen
                    call.hangup()
                    await bob.acall_event("Ended")

            asyncio.run(asyncio.wait_for(main(), 20.0))
