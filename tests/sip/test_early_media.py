"""Early media: IncomingCall.ring(sdp) sends 183 Session Progress with our SDP; a SipStack caller (in a peer
process) sees Ringing(183, remote_sdp) byte for byte, and baresip as the caller reports call progress."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.requires import requires
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from tests.testbed.sip_peer import SipPeer, running_stack, sdp
from voipgw.sip import Confirmed, Ended, IncomingCall

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("baresip", "sox")]

WAIT_S = 15.0


def pcmu_sdp(port: int) -> str:
    return (
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )


def test_183_with_sdp_reaches_a_sipstack_caller_then_the_call_is_answered() -> None:
    early = sdp(9100, "a=x-early:1\r\n")
    final = sdp(9102)

    async def main() -> None:
        async with running_stack() as stack:
            with SipPeer() as caller:
                caller.send(
                    op="call", target=f"sip:bob@127.0.0.1:{stack.local_port}", **{"from": "sip:alice@127.0.0.1"},
                    sdp=sdp(9000),
                )  # fmt: skip
                call = await asyncio.wait_for(stack.incoming.get(), WAIT_S)
                assert isinstance(call, IncomingCall)
                call.ring(early)
                ringing = await caller.acall_event("Ringing", WAIT_S)
                tag = ringing["data"]["dialog"]
                assert tag and ringing["data"] == {"code": 183, "remote_sdp": early, "dialog": tag}
                call.ring()  # a plain 180 may follow the early media, in the same early dialog
                ring180 = (await caller.acall_event("Ringing", WAIT_S))["data"]
                assert ring180 == {"code": 180, "remote_sdp": None, "dialog": tag}
                call.answer(final)
                answered = await caller.acall_event("Answered", WAIT_S)
                assert answered["data"] == {"remote_sdp": final, "dialog": tag}
                assert isinstance(await call.next_event(WAIT_S), Confirmed)
                call.hangup()
                await caller.acall_event("Ended", WAIT_S)

    asyncio.run(asyncio.wait_for(main(), 40.0))


def test_baresip_caller_reports_progress_for_183_and_establishes(tmp_path: Path) -> None:
    clip = speech.make_tone(tmp_path / "tone.wav", 8000, 20.0)

    async def main() -> None:
        async with running_stack() as stack:
            with Baresip(tmp_path, user="alice", play=clip) as phone:
                await asyncio.to_thread(phone.dial, f"sip:bob@127.0.0.1:{stack.local_port}")
                call = await asyncio.wait_for(stack.incoming.get(), WAIT_S)
                assert isinstance(call, IncomingCall)
                call.ring(pcmu_sdp(phone.rtp_range[0] + 30))
                progress = await asyncio.to_thread(phone.wait_event, "CALL_PROGRESS", "CALL_RINGING", timeout=WAIT_S)
                # baresip reports a 18x with SDP as progress (early media), not as plain ringing
                assert progress.type == "CALL_PROGRESS", progress
                call.answer(pcmu_sdp(phone.rtp_range[0] + 30))
                await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", timeout=WAIT_S)
                assert isinstance(await call.next_event(WAIT_S), Confirmed)
                call.hangup()
                await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", timeout=WAIT_S)
                ended = await call.next_event(WAIT_S)
                assert isinstance(ended, Ended) and not ended.by_remote

    asyncio.run(asyncio.wait_for(main(), 40.0))
