"""Early dialogs through a real Kamailio (registrar + record-routing proxy with digest auth): a callee's final status
reaches the caller as itself with its Reason, and an AOR registered from two voipgw stacks is forked in parallel
(usrloc ``lookup`` appends the second contact as a branch; ``t_relay`` sends both), each fork with its own early
dialog; the one that answers wins and Kamailio cancels the other."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.requires import requires
from tests.testbed.kamailio import Kamailio
from tests.testbed.sip_peer import SipPeer, running_stack, sdp
from voipgw.sip import Answered, Ended, Failed, Ringing, SipCall, SipStack

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio")]

USERS = {"alice": "alicepw", "bob": "bobpw"}
WAIT_S = 10.0
WIRE = "voipgw.sip.wire"


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[Kamailio]:
    with Kamailio(tmp_path, users=USERS, auth=True, min_expires=1) as k:
        yield k


def registered_bob(k: Kamailio, progress_sdp: str) -> SipPeer:
    """A peer process registered as bob that answers every INVITE with progress(progress_sdp) and waits."""
    p = SipPeer()
    try:
        p.set_mode(incoming="progress", progress_sdp=progress_sdp)
        p.send(op="register", registrar=list(k.addr), aor="sip:bob@127.0.0.1", username="bob", password="bobpw")
        assert p.expect("registered")["state"]["code"] == 200
    except BaseException:
        p.stop()
        raise
    return p


async def call_bob(stack: SipStack, k: Kamailio, offer: str) -> SipCall:
    return await stack.place_call(
        f"sip:bob@127.0.0.1:{k.port}", "sip:alice@127.0.0.1", lambda _: offer, proxy=k.addr, username="alice",
        password=USERS["alice"],
    )  # fmt: skip


async def next_event(call: SipCall, kinds: tuple[type, ...]) -> Any:
    while True:
        ev = await call.next_event(WAIT_S)
        if isinstance(ev, kinds):
            return ev
        assert not isinstance(ev, (Failed, Ended)), ev


def received_183s(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        1
        for r in caplog.records
        if r.name == WIRE and r.getMessage().startswith("RECEIVED") and "\nSIP/2.0 183 " in r.getMessage()
    )


async def peer_stats(p: SipPeer) -> dict[str, Any]:
    p.send(op="stats")
    return await p.aexpect("stats", WAIT_S)


def test_final_statuses_from_the_callee_pass_through_kamailio_as_themselves(kamailio: Kamailio) -> None:
    statuses = [
        (486, "Busy Here"), (603, "Decline"), (480, "Temporarily Unavailable"), (404, "Not Found"),
        (408, "Request Timeout"),
    ]  # fmt: skip
    bob = registered_bob(kamailio, sdp(9310))

    async def main() -> None:
        async with running_stack() as stack:
            for code, reason in statuses:
                call = await call_bob(stack, kamailio, sdp(9300))
                await bob.aexpect("incoming", WAIT_S)
                ringing = await next_event(call, (Ringing,))
                assert ringing.code == 183 and ringing.remote_sdp == sdp(9310)
                bob.send(op="reject", code=code, reason=reason, cause=[code, f"bob says {code}"])
                failed = await call.next_event(WAIT_S)
                assert failed == Failed(code=code, reason=reason, warning=None, cause=f"bob says {code}")
            # The callee giving up while its 183 is out: 487 Request Terminated reaches the caller as itself.
            call = await call_bob(stack, kamailio, sdp(9300))
            await bob.aexpect("incoming", WAIT_S)
            await next_event(call, (Ringing,))
            bob.send(op="hangup")
            failed = await call.next_event(WAIT_S)
            assert isinstance(failed, Failed) and (failed.code, failed.reason) == (487, "Request Terminated")
            assert stack.active_calls == 0
        assert (await peer_stats(bob))["active_calls"] == 0

    try:
        asyncio.run(asyncio.wait_for(main(), 60.0))
    finally:
        bob.stop()


def test_parallel_forking_two_early_dialogs_one_answers_the_other_is_cancelled(
    kamailio: Kamailio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=WIRE)
    fork_sdp = {1: sdp(9321, "a=x-fork:1\r\n"), 2: sdp(9322, "a=x-fork:2\r\n")}
    bobs = {n: registered_bob(kamailio, fork_sdp[n]) for n in (1, 2)}

    async def main() -> None:
        async with running_stack() as stack:
            call = await call_bob(stack, kamailio, sdp(9320))
            for p in bobs.values():
                await p.aexpect("incoming", WAIT_S)
            rings = [await next_event(call, (Ringing,)), await next_event(call, (Ringing,))]
            dialog_of = {r.remote_sdp: r.dialog for r in rings}
            assert set(dialog_of) == set(fork_sdp.values()), "each fork's 183 with its own SDP"
            assert len(set(dialog_of.values())) == 2 and all(dialog_of.values()), "two early dialogs, two To-tags"
            # Both forks send their 183 again (no PRACK) and Kamailio relays them: wait until some have crossed.
            for _ in range(int(WAIT_S / 0.05)):
                if received_183s(caplog) >= 4:
                    break
                await asyncio.sleep(0.05)
            assert received_183s(caplog) >= 4
            assert call.events.empty(), "the repeated 183s were absorbed, not reported again"
            bobs[1].send(op="answer", sdp=fork_sdp[1])
            answered = await next_event(call, (Answered,))
            assert answered == Answered(remote_sdp=fork_sdp[1], dialog=dialog_of[fork_sdp[1]])
            cancelled = await bobs[2].acall_event("Ended", WAIT_S)
            # Kamailio's CANCEL of the losing branch says why (RFC 3326 Reason, cause 200).
            assert cancelled["data"] == {"reason": "cancelled by caller: Call completed elsewhere", "by_remote": True}
            await bobs[1].acall_event("Confirmed", WAIT_S)
            call.hangup()
            assert (await bobs[1].acall_event("Ended", WAIT_S))["data"]["by_remote"] is True
            assert stack.active_calls == 0 and stack.stats.stray_2xx == 0
        for p in bobs.values():
            stats = await peer_stats(p)
            assert stats["active_calls"] == 0
            assert stats["stats"]["progress_retransmits"] >= 1

    try:
        asyncio.run(asyncio.wait_for(main(), 60.0))
    finally:
        for p in bobs.values():
            p.stop()
