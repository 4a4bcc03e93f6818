"""Direct calls between two voipgw SIP stacks (this process and a child process) over loopback UDP."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest

from tests.testbed.sip_peer import SipPeer, running_stack, sdp
from voipgw.sip import (
    Answered,
    Confirmed,
    Ended,
    Failed,
    IncomingCall,
    ReAnswered,
    ReOffer,
    Ringing,
    SipCall,
    SipEvent,
    SipStack,
    SipStackStateError,
    Trying,
)

pytestmark = pytest.mark.integration

EVENT_TIMEOUT = 5.0
CALLS_IN_A_ROW = 30


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30.0))


async def until(call: SipCall, kind: type[SipEvent]) -> SipEvent:
    """Skip provisional events until `kind`; fail on any terminal event that is not `kind`."""
    while True:
        ev = await call.next_event(EVENT_TIMEOUT)
        if isinstance(ev, kind):
            return ev
        if isinstance(ev, (Failed, Ended)):
            raise AssertionError(f"wanted {kind.__name__}, got {ev}")


def test_call_out_answer_ack_bye_from_caller_sdp_byte_for_byte(peer: SipPeer) -> None:
    answer = sdp(5002, "a=answer-side\r\n")
    peer.set_mode(incoming="answer", answer_sdp=answer)

    async def main() -> None:
        async with running_stack() as stack:
            seen_ids: list[str] = []

            def offer(call_id: str) -> str:
                seen_ids.append(call_id)
                return sdp(4002, f"a=bound-call-id:{call_id}\r\n")

            t0 = time.monotonic()
            call = await stack.place_call(
                f"sip:bob@127.0.0.1:{peer.port}", "sip:alice@127.0.0.1", offer, display_name="Alice"
            )
            events = [await call.next_event(EVENT_TIMEOUT) for _ in range(3)]
            setup_ms = (time.monotonic() - t0) * 1000
            assert [type(e) for e in events] == [Trying, Ringing, Answered]
            answered = events[2]
            assert isinstance(answered, Answered)
            assert answered.remote_sdp == answer
            assert seen_ids == [call.call_id]

            inc = await peer.aexpect("incoming")
            assert inc["call_id"] == call.call_id
            assert inc["remote_sdp"] == offer(call.call_id)
            assert inc["from_aor"] == "sip:alice@127.0.0.1"
            assert inc["to_aor"] == f"sip:bob@127.0.0.1:{peer.port}"
            assert inc["from_display"] == "Alice"
            assert tuple(inc["source"]) == ("127.0.0.1", stack.local_port)
            confirmed = await peer.acall_event("Confirmed")
            # CLOCK_MONOTONIC is system-wide: the child's timestamps compare with ours (reported only)
            ack_ms = 1000 * (confirmed["t"] - t0)
            print(f"\nloopback setup: INVITE->200 {setup_ms:.1f} ms, INVITE->ACK (callee) {ack_ms:.1f} ms")

            call.hangup()
            assert await call.next_event(EVENT_TIMEOUT) == Ended(reason="local hangup", by_remote=False)
            ended = await peer.acall_event("Ended")
            assert ended["data"]["by_remote"] is True

    run(main())


@pytest.mark.parametrize("who_hangs_up", ["callee", "caller"])
def test_call_in_ring_answer_confirm_then_bye(peer: SipPeer, who_hangs_up: str) -> None:
    async def main() -> None:
        async with running_stack() as stack:
            offer = sdp(6000)
            peer.send(
                op="call",
                target=f"sip:carol@127.0.0.1:{stack.local_port}",
                sdp=offer,
                **{"from": "sip:dave@127.0.0.1"},
            )
            inc = await asyncio.wait_for(stack.incoming.get(), EVENT_TIMEOUT)
            assert isinstance(inc, IncomingCall)
            assert inc.remote_sdp == offer
            assert inc.to_aor == f"sip:carol@127.0.0.1:{stack.local_port}"
            inc.ring()
            await peer.acall_event("Ringing")
            our_answer = sdp(6002, "a=callee\r\n")
            inc.answer(our_answer)
            assert isinstance(await inc.next_event(EVENT_TIMEOUT), Confirmed)
            answered = await peer.acall_event("Answered")
            assert answered["data"]["remote_sdp"] == our_answer
            if who_hangs_up == "callee":
                inc.hangup()
                assert await inc.next_event(EVENT_TIMEOUT) == Ended(reason="local hangup", by_remote=False)
                assert (await peer.acall_event("Ended"))["data"]["by_remote"] is True
            else:
                peer.send(op="hangup")
                assert await inc.next_event(EVENT_TIMEOUT) == Ended(reason="remote hangup", by_remote=True)

    run(main())


def test_cancel_while_ringing(peer: SipPeer) -> None:
    peer.set_mode(incoming="ring")

    async def main() -> None:
        async with running_stack() as stack:
            call = await stack.place_call(f"sip:bob@127.0.0.1:{peer.port}", "sip:alice@127.0.0.1", lambda _: sdp(4004))
            await until(call, Ringing)
            call.cancel()
            assert await call.next_event(EVENT_TIMEOUT) == Ended(reason="cancelled", by_remote=False)
            ended = await peer.acall_event("Ended")
            assert ended["data"] == {"reason": "cancelled by caller", "by_remote": True}

    run(main())


@pytest.mark.parametrize(("code", "reason"), [(486, "Busy Here"), (603, "Decline")])
def test_busy_and_decline(peer: SipPeer, code: int, reason: str) -> None:
    peer.set_mode(incoming="reject", code=code, reason=reason)

    async def main() -> None:
        async with running_stack() as stack:
            call = await stack.place_call(f"sip:bob@127.0.0.1:{peer.port}", "sip:alice@127.0.0.1", lambda _: sdp(4006))
            failed = await until(call, Failed)
            assert failed == Failed(code=code, reason=reason, warning=None)

    run(main())


def test_488_carries_warning_header_to_the_caller(peer: SipPeer) -> None:
    text = 'peer requires "voipgw" encryption attributes'
    peer.set_mode(incoming="reject", code=488, reason="Not Acceptable Here", warning=text)

    async def main() -> None:
        async with running_stack() as stack:
            call = await stack.place_call(f"sip:bob@127.0.0.1:{peer.port}", "sip:alice@127.0.0.1", lambda _: sdp(4008))
            failed = await until(call, Failed)
            assert isinstance(failed, Failed)
            assert failed.code == 488
            # RFC 3261 20.43: warn-code SP warn-agent SP quoted text (inner quotes replaced)
            assert failed.warning == "399 127.0.0.1 \"peer requires 'voipgw' encryption attributes\""

    run(main())


def test_we_reject_with_warning_seen_by_peer(peer: SipPeer) -> None:
    async def main() -> None:
        async with running_stack() as stack:
            peer.send(
                op="call",
                target=f"sip:carol@127.0.0.1:{stack.local_port}",
                sdp=sdp(6004),
                **{"from": "sip:dave@127.0.0.1"},
            )
            inc = await asyncio.wait_for(stack.incoming.get(), EVENT_TIMEOUT)
            inc.reject(488, "Not Acceptable Here", "no a=voipgw attribute: secure policy is require")
            assert isinstance(await inc.next_event(EVENT_TIMEOUT), Ended)
            failed = await peer.acall_event("Failed")
            assert failed["data"] == {
                "code": 488,
                "reason": "Not Acceptable Here",
                "warning": '399 127.0.0.1 "no a=voipgw attribute: secure policy is require"',
                "cause": None,
            }

    run(main())


def test_no_answer_timeout_cancels_and_fails_408(peer: SipPeer) -> None:
    peer.set_mode(incoming="ring")

    async def main() -> None:
        async with running_stack() as stack:
            call = await stack.place_call(
                f"sip:bob@127.0.0.1:{peer.port}", "sip:alice@127.0.0.1", lambda _: sdp(4010), timeout_s=0.5
            )
            failed = await until(call, Failed)
            assert failed == Failed(code=408, reason="No answer", warning=None)
            assert (await peer.acall_event("Ended"))["data"]["by_remote"] is True

    run(main())


def test_reinvite_both_directions(peer: SipPeer) -> None:
    peer_reanswer = sdp(5010, "a=recvonly\r\n")
    peer.set_mode(incoming="answer", answer_sdp=sdp(5008), reoffer_answer=peer_reanswer)

    async def main() -> None:
        async with running_stack() as stack:
            call = await stack.place_call(f"sip:bob@127.0.0.1:{peer.port}", "sip:alice@127.0.0.1", lambda _: sdp(4012))
            await until(call, Answered)
            await peer.acall_event("Confirmed")

            # we re-offer, the peer's handler answers
            hold = sdp(4012, "a=sendonly\r\n")
            call.reoffer(hold)
            assert await until(call, ReAnswered) == ReAnswered(remote_sdp=peer_reanswer)
            assert (await peer.acall_event("ReOffer"))["data"] == {"remote_sdp": hold, "answered": True}

            # the peer re-offers, our handler answers
            ours = sdp(4012, "a=sendrecv\r\n")
            got: list[str] = []
            call.reoffer_handler = lambda remote: (got.append(remote), ours)[1]
            peer_offer = sdp(5008, "a=resume\r\n")
            peer.send(op="reoffer", sdp=peer_offer)
            assert await until(call, ReOffer) == ReOffer(remote_sdp=peer_offer, answered=True)
            assert got == [peer_offer]
            assert (await peer.acall_event("ReAnswered"))["data"] == {"remote_sdp": ours}
            call.hangup()
            await peer.acall_event("Ended")

    run(main())


def test_one_stack_per_process_and_restart_on_same_port() -> None:
    async def main() -> None:
        async with running_stack() as stack:
            port = stack.local_port
            second = SipStack("127.0.0.1", 0, asyncio.get_running_loop())
            with pytest.raises(SipStackStateError):
                await second.start()
        again = SipStack("127.0.0.1", port, asyncio.get_running_loop())
        await again.start()
        try:
            assert again.local_port == port
        finally:
            await again.stop()
        with pytest.raises(SipStackStateError):
            await again.start()

    run(main())


def test_many_calls_in_a_row_leave_no_call_state_or_threads(peer: SipPeer) -> None:
    peer.set_mode(incoming="answer", answer_sdp=sdp(5020))

    async def main() -> None:
        async with running_stack() as stack:
            threads_before = threading.active_count()
            for i in range(CALLS_IN_A_ROW):
                call = await stack.place_call(
                    f"sip:bob@127.0.0.1:{peer.port}", "sip:alice@127.0.0.1", lambda _: sdp(4020)
                )
                await until(call, Answered)
                if i % 2:
                    call.hangup()
                else:
                    peer.send(op="hangup", call_id=call.call_id)
                assert isinstance(await until(call, Ended), Ended)
                call.hangup()  # a no-op on a finished call
            assert stack.active_calls == 0
            assert threading.active_count() == threads_before
            assert stack.stats.malformed == 0

    run(main())


def test_redirect_is_reported_not_followed() -> None:
    """A bare UDP responder answers 302 with a Contact: the call fails with 302, ACKed back to the responder."""

    def responder(sock: socket.socket) -> bytes:
        data, addr = sock.recvfrom(65535)
        head = data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        keep = [h for h in head[1:] if h.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")]
        keep = [h + ";tag=r1" if h.lower().startswith("to:") else h for h in keep]
        resp = ["SIP/2.0 302 Moved Temporarily", *keep, "Contact: <sip:elsewhere@127.0.0.1:9>", "Content-Length: 0"]
        sock.sendto(("\r\n".join(resp) + "\r\n\r\n").encode(), addr)
        ack, _ = sock.recvfrom(65535)
        return ack

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(EVENT_TIMEOUT)
            port = sock.getsockname()[1]
            async with running_stack() as stack:
                answer = asyncio.create_task(asyncio.to_thread(responder, sock))
                call = await stack.place_call(f"sip:bob@127.0.0.1:{port}", "sip:alice@127.0.0.1", lambda _: sdp(4030))
                assert await until(call, Failed) == Failed(code=302, reason="Moved Temporarily", warning=None)
                # RFC 3261 17.1.1.3: the ACK reuses the INVITE's Request-URI and destination, not the Contact
                assert (await answer).startswith(f"ACK sip:bob@127.0.0.1:{port} SIP/2.0\r\n".encode())

    run(main())
