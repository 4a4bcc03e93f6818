"""Stopping a SIP stack with a call up: BYE goes out, the peer sees the end, and every socket is closed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import pytest

from tests.testbed.ports import port_is_bound
from tests.testbed.sip_peer import SipPeer, running_stack, sdp, udp_socket_inodes
from voipgw.sip import Answered, Confirmed, Ended, SipStack

pytestmark = pytest.mark.integration


def can_bind_udp(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_stop_with_call_up_sends_bye_and_closes_sockets(peer: SipPeer) -> None:
    peer.set_mode(incoming="answer", answer_sdp=sdp(8002))
    before = udp_socket_inodes(os.getpid())

    async def main() -> int:
        stack = SipStack("127.0.0.1", 0, asyncio.get_running_loop())
        await stack.start()
        try:
            call = await stack.place_call(f"sip:bob@127.0.0.1:{peer.port}", "sip:alice@127.0.0.1", lambda _: sdp(8000))
            while not isinstance(await call.next_event(5.0), Answered):
                pass
            await peer.acall_event("Confirmed")
            assert udp_socket_inodes(os.getpid()) - before, "the stack's socket should be open now"
        finally:
            await stack.stop()
        assert await call.next_event(1.0) == Ended(reason="stack shutdown", by_remote=False)
        return stack.local_port

    port = asyncio.run(asyncio.wait_for(main(), 30.0))
    ended = peer.call_event("Ended")
    assert ended["data"] == {"reason": "remote hangup", "by_remote": True}
    assert udp_socket_inodes(os.getpid()) - before == set()
    assert not port_is_bound(port)
    assert can_bind_udp(port)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_peer_process_signalled_mid_call_sends_bye_and_exits_clean(peer: SipPeer, sig: int) -> None:
    async def main() -> None:
        async with running_stack() as stack:
            peer.send(
                op="call",
                target=f"sip:carol@127.0.0.1:{stack.local_port}",
                sdp=sdp(8004),
                **{"from": "sip:p@127.0.0.1"},
            )
            inc = await asyncio.wait_for(stack.incoming.get(), 5.0)
            inc.answer(sdp(8006))
            assert isinstance(await inc.next_event(5.0), Confirmed)
            os.kill(peer.pid, sig)
            assert await inc.next_event(5.0) == Ended(reason="remote hangup", by_remote=True)

    asyncio.run(asyncio.wait_for(main(), 30.0))
    stopped = peer.expect("stopped", timeout=5.0)
    assert peer.popen.wait(timeout=5.0) == 0
    assert stopped["udp_sockets"] == []  # listed by the child itself after stop()
    assert not port_is_bound(peer.port)


def test_reactor_on_main_thread_layout_calls_and_stops_clean() -> None:
    """The CLI layout: sippy's reactor owns the child's main thread (fast wake-ups), asyncio a worker."""
    with SipPeer(main_reactor=True) as peer:
        peer.set_mode(incoming="answer", answer_sdp=sdp(8010))

        async def main() -> None:
            async with running_stack() as stack:
                t0 = time.monotonic()
                call = await stack.place_call(
                    f"sip:bob@127.0.0.1:{peer.port}", "sip:alice@127.0.0.1", lambda _: sdp(8008)
                )
                while not isinstance(ev := await call.next_event(5.0), Answered):
                    assert not isinstance(ev, Ended), ev
                setup_ms = 1000 * (time.monotonic() - t0)
                confirmed = await peer.acall_event("Confirmed")
                print(
                    f"\nmain-thread reactor callee at 100 Hz: INVITE->200 {setup_ms:.1f} ms, "
                    f"INVITE->ACK {1000 * (confirmed['t'] - t0):.1f} ms"
                )
                os.kill(peer.pid, signal.SIGTERM)
                assert await call.next_event(5.0) == Ended(reason="remote hangup", by_remote=True)

        asyncio.run(asyncio.wait_for(main(), 30.0))
        assert peer.expect("stopped", timeout=5.0)["udp_sockets"] == []
        assert peer.popen.wait(timeout=5.0) == 0
