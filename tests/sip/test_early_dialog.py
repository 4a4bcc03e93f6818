"""The early dialog between two voipgw SIP stacks over loopback (this process is the callee, a SipPeer child
process the caller), and against sipp where a far end must do what voipgw never does (fork, send a Reason).

What it proves: progress() sends the same 183 again until progress_acknowledged() or a final response, and the
caller reports it once; 180 follows 183 in the same early dialog; reject() after progress() ends the call with the
status and Reason the caller then reports; every final status arrives as itself; CANCEL in the early dialog ends
the callee's call; a second fork's 2xx is ACKed and BYEd, never reported.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.requires import requires
from tests.testbed.pjsua2_peer import Pjsua2Peer
from tests.testbed.sip_peer import SipPeer, running_stack, sdp
from tests.testbed.sipp import SippUas, run_uac
from voipgw.sip import Answered, Confirmed, Ended, Failed, IncomingCall, Ringing, SipCall, SipEvent, SipStack
from voipgw.sip.reliability import T1, T2

pytestmark = pytest.mark.integration

WAIT_S = 10.0
WIRE = "voipgw.sip.wire"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60.0))


@pytest.fixture
def wire(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger=WIRE)
    yield caplog


def sent(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    """The messages our stack logged as SENDING whose first line starts with ``start``, message text only."""
    out = []
    for r in caplog.records:
        msg = r.getMessage()
        if r.name == WIRE and msg.startswith("SENDING"):
            text = msg.split("\n", 1)[1]
            if text.startswith(start):
                out.append(text)
    return out


def header(msg: str, name: str) -> str:
    for line in msg.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in {msg[:300]}")


async def incoming_from(stack: SipStack, caller: SipPeer, offer: str = "") -> IncomingCall:
    caller.send(
        op="call", target=f"sip:bob@127.0.0.1:{stack.local_port}", sdp=offer or sdp(9000),
        **{"from": "sip:alice@127.0.0.1"},
    )  # fmt: skip
    call = await asyncio.wait_for(stack.incoming.get(), WAIT_S)
    assert isinstance(call, IncomingCall)
    return call


async def wait_until(predicate: Any, what: str, timeout: float = WAIT_S) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def next_of(call: SipCall, kind: type[SipEvent]) -> Any:
    while True:
        ev = await call.next_event(WAIT_S)
        if isinstance(ev, kind):
            return ev
        assert not isinstance(ev, (Failed, Ended)), ev


# Waiting past the next scheduled retransmission proves that none comes: after two retransmissions the next interval
# is 2*T1*2 = 2 s (never more than T2), so T2 + T1 of silence is more than any interval left.
QUIET_S = T2 + T1


def test_progress_is_retransmitted_until_acknowledged_and_reported_once(
    peer: SipPeer, wire: pytest.LogCaptureFixture
) -> None:
    early = sdp(9100, "a=x-early:1\r\n")

    async def main() -> None:
        async with running_stack() as stack:
            call = await incoming_from(stack, peer)
            call.progress(early, (("P-Asserted-Identity", "<sip:bob@127.0.0.1>"),))
            ringing = (await peer.acall_event("Ringing", WAIT_S))["data"]
            assert ringing["code"] == 183 and ringing["remote_sdp"] == early and ringing["dialog"]
            await wait_until(lambda: stack.stats.progress_retransmits >= 2, "two 183 retransmissions")
            call.progress(sdp(9999))  # a second progress() is a no-op: the first 183 stands
            call.progress_acknowledged()
            await asyncio.sleep(0.2)  # the acknowledgement crosses to the reactor thread
            after_ack = stack.stats.progress_sent
            await asyncio.sleep(QUIET_S)
            assert stack.stats.progress_sent == after_ack
            call.answer(early)
            answered = (await peer.acall_event("Answered", WAIT_S))["data"]
            assert answered == {"remote_sdp": early, "dialog": ringing["dialog"]}
            assert isinstance(await call.next_event(WAIT_S), Confirmed)
            # Every event before Answered has been read by now: a second Ringing would be among them.
            with pytest.raises(TimeoutError):
                peer.call_event("Ringing", timeout=0.2)
            call.hangup()
            await peer.acall_event("Ended", WAIT_S)
            assert stack.active_calls == 0

    run(main())
    wire183 = sent(wire, "SIP/2.0 183 ")
    assert len(wire183) >= 3  # the first plus at least two retransmissions
    assert len(set(wire183)) == 1, "every 183 is the same message (same To-tag, same body)"
    assert header(wire183[0], "P-Asserted-Identity") == "<sip:bob@127.0.0.1>"
    assert wire183[0].endswith(early)


def test_final_response_stops_progress_and_reject_carries_the_reason(
    peer: SipPeer, wire: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with running_stack() as stack:
            call = await incoming_from(stack, peer)
            call.progress(sdp(9102))
            await peer.acall_event("Ringing", WAIT_S)
            await wait_until(lambda: stack.stats.progress_retransmits >= 1, "a 183 retransmission")
            call.ring(headers=(("P-Asserted-Identity", '"Bob" <sip:bob@127.0.0.1>'),))  # 180 after 183
            ring180 = (await peer.acall_event("Ringing", WAIT_S))["data"]
            assert ring180["code"] == 180 and ring180["remote_sdp"] is None
            call.reject(486, "Busy Here", cause=(486, 'in a "meeting"\r\nX-Evil: 1'))
            ended = await call.next_event(WAIT_S)
            assert ended == Ended(reason="rejected: 486 Busy Here", by_remote=False)
            failed = (await peer.acall_event("Failed", WAIT_S))["data"]
            assert failed == {"code": 486, "reason": "Busy Here", "warning": None, "cause": "in a meetingX-Evil: 1"}
            after_final = stack.stats.progress_sent
            await asyncio.sleep(QUIET_S)
            assert stack.stats.progress_sent == after_final
            assert stack.active_calls == 0

    run(main())
    tags = {header(m, "To").rsplit("tag=", 1)[1] for m in sent(wire, "SIP/2.0 18")}
    assert len(tags) == 1, "183 and 180 belong to one early dialog"
    final = sent(wire, "SIP/2.0 486 ")
    assert final and header(final[0], "Reason") == 'SIP; cause=486; text="in a meetingX-Evil: 1"'
    assert header(sent(wire, "SIP/2.0 180 ")[0], "P-Asserted-Identity") == '"Bob" <sip:bob@127.0.0.1>'


def test_each_final_status_after_progress_arrives_as_itself(peer: SipPeer) -> None:
    statuses = [
        (404, "Not Found"), (408, "Request Timeout"), (480, "Temporarily Unavailable"), (486, "Busy Here"),
        (603, "Decline"),
    ]  # fmt: skip

    async def main() -> None:
        async with running_stack() as stack:
            for code, reason in statuses:
                call = await incoming_from(stack, peer)
                call.progress(sdp(9104))
                await peer.acall_event("Ringing", WAIT_S)
                call.reject(code, reason, cause=(code, f"callee said {code}"))
                failed = (await peer.acall_event("Failed", WAIT_S))["data"]
                assert (failed["code"], failed["reason"], failed["cause"]) == (code, reason, f"callee said {code}")
            assert stack.active_calls == 0

    run(main())


def test_cancel_in_the_early_dialog_ends_the_callee_call(peer: SipPeer, wire: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with running_stack() as stack:
            call = await incoming_from(stack, peer)
            call.progress(sdp(9106))
            await peer.acall_event("Ringing", WAIT_S)
            peer.send(op="cancel")
            ended = await call.next_event(WAIT_S)
            assert ended == Ended(reason="cancelled by caller", by_remote=True)
            caller_end = await peer.acall_event("Ended", WAIT_S)
            assert caller_end["data"]["by_remote"] is False
            after = stack.stats.progress_sent
            await asyncio.sleep(QUIET_S)
            assert stack.stats.progress_sent == after, "CANCEL stops the 183 retransmission"
            assert stack.active_calls == 0

    run(main())
    assert sent(wire, "SIP/2.0 487 "), "the INVITE got 487 Request Terminated"


# --- against sipp ---------------------------------------------------------------------------------------------


@requires("sipp")
def test_a_second_fork_answering_is_acked_and_byed_not_reported(tmp_path: Path) -> None:
    async def main() -> None:
        trace = tmp_path / "forks-messages.log"  # every message sipp sent and got, for a failure's report
        extra = ["-trace_msg", "-message_file", str(trace)]
        with SippUas(tmp_path, name="forks", scenario_name="uas_two_forks", calls=1, extra=extra) as uas:
            async with running_stack() as stack:
                call = await stack.place_call(f"sip:bob@{uas.address}", "sip:alice@127.0.0.1", lambda _: sdp(9200))
                rings = [await next_of(call, Ringing), await next_of(call, Ringing)]
                assert [(r.code, r.dialog) for r in rings] == [(183, "forkA"), (183, "forkB")]
                assert [r.remote_sdp.endswith(f"a=x-fork:{f}\r\n") for r, f in zip(rings, "AB", strict=True)] == [
                    True,
                    True,
                ]
                answered = await next_of(call, Answered)
                assert answered.dialog == "forkA" and answered.remote_sdp.endswith("a=x-fork:A\r\n")
                try:
                    await wait_until(lambda: stack.stats.stray_2xx == 1, "the second fork's 2xx handled")
                except AssertionError as exc:
                    messages = trace.read_text(errors="replace")[-6000:] if trace.exists() else "(no trace)"
                    raise AssertionError(
                        f"{exc}; stack stats: {stack.stats}; sipp: {uas.stop().log[-2000:]}\nsipp messages:\n{messages}"
                    ) from None
                call.hangup()
                assert isinstance(await call.next_event(WAIT_S), Ended)
                assert call.events.empty(), "nothing about forkB reached the call"
                result = await asyncio.to_thread(uas.wait, 15.0)
                assert stack.active_calls == 0
        # sipp checked the ACK and BYE of forkB (To-tag, Request-URI) and the BYE of forkA, in that order.
        assert result.all_ok and result.successful == 1, result.log[-3000:]

    run(main())


@requires("sipp")
def test_183_then_486_with_reason_from_sipp_arrives_as_486_with_its_cause(tmp_path: Path) -> None:
    async def main() -> None:
        with SippUas(tmp_path, name="busy", scenario_name="uas_183_486_reason", calls=1) as uas:
            async with running_stack() as stack:
                call = await stack.place_call(f"sip:bob@{uas.address}", "sip:alice@127.0.0.1", lambda _: sdp(9202))
                ringing = await next_of(call, Ringing)
                assert ringing.code == 183 and ringing.remote_sdp is not None and ringing.dialog
                failed = await call.next_event(WAIT_S)
                assert failed == Failed(code=486, reason="Busy Here", warning=None, cause="in another call")
                result = await asyncio.to_thread(uas.wait, 15.0)
        assert result.all_ok, result.log[-3000:]

    run(main())


@requires("sipp")
def test_a_caller_offering_100rel_gets_a_reliable_183_its_prack_answered_and_the_200_after_it(
    tmp_path: Path, wire: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with running_stack() as stack:
            target = f"127.0.0.1:{stack.local_port}"
            uac = functools.partial(
                run_uac, tmp_path, target, calls=1, rate=1.0, service="bob", scenario_name="uac_100rel", timeout=20.0
            )
            placing = asyncio.create_task(asyncio.to_thread(uac))
            call = await asyncio.wait_for(stack.incoming.get(), WAIT_S)
            assert call.reliable_progress
            call.progress(sdp(9210))
            call.answer(sdp(9210))  # held until the PRACK: sipp fails the call if the 200 comes first
            assert isinstance(await call.next_event(WAIT_S), Confirmed)
            ended = await call.next_event(WAIT_S)
            assert isinstance(ended, Ended) and ended.by_remote
            result = await placing
            assert result.all_ok and result.successful == 1, result.log[-3000:]
            assert (stack.stats.prack_ok, stack.stats.prack_refused) == (1, 0)
            assert stack.active_calls == 0

    run(main())
    wire183 = sent(wire, "SIP/2.0 183 ")
    assert header(wire183[0], "Require") == "100rel" and int(header(wire183[0], "RSeq")) >= 1
    prack_200 = sent(wire, "SIP/2.0 200 OK\r\n")
    assert [header(m, "CSeq").split()[1] for m in prack_200[:2]] == ["PRACK", "INVITE"]


@requires("sipp")
def test_a_forged_second_2xx_from_elsewhere_is_not_acked_or_byed(
    tmp_path: Path, wire: pytest.LogCaptureFixture
) -> None:
    """An attacker at 127.0.0.66 who knows the Call-ID and branch sends a 2xx with a new To-tag and a Contact of its
    own: ACK + BYE would be requests we send wherever it likes. Only the INVITE's next hop may answer for a fork."""

    async def main() -> None:
        with SippUas(tmp_path, name="plain", calls=1) as uas:
            async with running_stack() as stack:
                call = await stack.place_call(f"sip:bob@{uas.address}", "sip:alice@127.0.0.1", lambda _: sdp(9204))
                await next_of(call, Answered)
                invite = sent(wire, "INVITE ")[0]
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as evil:
                    evil.bind(("127.0.0.66", 0))
                    evil.settimeout(0.5)
                    evil_port = evil.getsockname()[1]
                    forged = (
                        "SIP/2.0 200 OK\r\n"
                        f"Via: {header(invite, 'Via')}\r\nFrom: {header(invite, 'From')}\r\n"
                        f"To: {header(invite, 'To')};tag=mallory\r\nCall-ID: {header(invite, 'Call-ID')}\r\n"
                        f"CSeq: {header(invite, 'CSeq')}\r\nContact: <sip:mallory@127.0.0.66:{evil_port}>\r\n"
                        "Content-Length: 0\r\n\r\n"
                    )
                    evil.sendto(forged.encode(), ("127.0.0.1", stack.local_port))
                    await wait_until(lambda: stack.stats.stray_2xx_ignored == 1, "the forged 2xx refused")
                    with pytest.raises(TimeoutError):
                        evil.recvfrom(65535)  # no ACK, no BYE
                assert stack.stats.stray_2xx == 0
                call.hangup()
                assert isinstance(await call.next_event(WAIT_S), Ended)
                result = await asyncio.to_thread(uas.wait, 15.0)
        assert result.all_ok, result.log[-3000:]

    run(main())


@requires("sipp")
def test_a_prack_for_no_reliable_18x_gets_481_and_the_183_keeps_waiting(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_stack() as stack:
            target = f"127.0.0.1:{stack.local_port}"
            uac = functools.partial(
                run_uac, tmp_path, target, calls=1, rate=1.0, service="bob", scenario_name="uac_100rel_bad_rack",
                timeout=20.0,
            )  # fmt: skip
            placing = asyncio.create_task(asyncio.to_thread(uac))
            call = await asyncio.wait_for(stack.incoming.get(), WAIT_S)
            call.progress(sdp(9212))
            await wait_until(lambda: stack.stats.prack_refused == 1, "the wrong PRACK refused")
            assert stack.stats.prack_ok == 0
            call.reject(486, "Busy Here")
            assert isinstance(await call.next_event(WAIT_S), Ended)
            result = await placing
            assert result.all_ok and result.successful == 1, result.log[-3000:]
            assert stack.active_calls == 0

    run(main())


@requires("pjsua2")
def test_pjsua2_caller_prack_s_our_reliable_183_and_the_held_answer_then_connects(
    tmp_path: Path, wire: pytest.LogCaptureFixture
) -> None:
    """PJSIP offers 100rel by default: a real RFC 3262 caller, not a script."""
    answer = (
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 9214 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )

    async def main() -> None:
        async with running_stack() as stack:
            with Pjsua2Peer(tmp_path, user="pj") as pj:
                pj.call(f"sip:bob@127.0.0.1:{stack.local_port}")
                call = await asyncio.wait_for(stack.incoming.get(), WAIT_S)
                assert call.reliable_progress
                call.progress(answer)
                call.answer(answer)  # held until pjsua's PRACK
                assert isinstance(await call.next_event(WAIT_S), Confirmed)
                assert (await asyncio.to_thread(pj.wait_state, "CONFIRMED"))["role"] == "caller"
                assert (stack.stats.prack_ok, stack.stats.prack_refused) == (1, 0)
                call.hangup()
                await asyncio.to_thread(pj.wait_event, "disconnected")
                assert stack.active_calls == 0

    run(main())
    finals = [header(m, "CSeq") for m in sent(wire, "SIP/2.0 200 OK\r\n")]
    assert finals.index(next(c for c in finals if c.endswith("PRACK"))) < finals.index(
        next(c for c in finals if c.endswith("INVITE"))
    ), "the 200 to the PRACK went before the 200 to the INVITE"
