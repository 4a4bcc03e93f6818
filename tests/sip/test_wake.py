"""The reactor thread is woken by every hand-over (voipgw.sip.wake), so its tick only paces sippy's timers.

Each test runs the reactor at 0.5 Hz: a hand-over that waited for the tick would take up to 2 s (and the hops after
the first, which start just after a tick, about 2 s each), so finishing each within HOP_BOUND_S (a margin below the
tick, not a speed claim) is what proves the wake-up.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from voipgw.sip import SipStack, wake

SLOW_TICK_HZ = 0.5
HOP_BOUND_S = 1.5
HOPS = 5


def test_every_post_from_the_event_loop_runs_before_the_next_tick() -> None:
    async def main() -> list[bool]:
        stack = SipStack("127.0.0.1", 0, asyncio.get_running_loop(), reactor_hz=SLOW_TICK_HZ)
        await stack.start()
        ran: list[bool] = []
        try:
            for _ in range(HOPS):
                done = threading.Event()
                stack.post(done.set)
                ran.append(await asyncio.to_thread(done.wait, HOP_BOUND_S))
        finally:
            await asyncio.wait_for(stack.stop(), 3 * HOP_BOUND_S)  # stop() hands its shutdown over the same way
        return ran

    assert asyncio.run(main()) == [True] * HOPS
    # The thread has ended: nothing may signal it any more.
    assert wake._reactor_ident is None


def test_a_sip_request_from_the_network_is_answered_without_waiting_for_a_tick() -> None:
    async def main() -> bytes:
        stack = SipStack("127.0.0.1", 0, asyncio.get_running_loop(), reactor_hz=SLOW_TICK_HZ)
        await stack.start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(HOP_BOUND_S)
        port = sock.getsockname()[1]
        msg = (
            f"OPTIONS sip:gw@127.0.0.1:{stack.local_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-wake-1;rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1:{port}>;tag=wake1\r\n"
            f"To: <sip:gw@127.0.0.1:{stack.local_port}>\r\n"
            "Call-ID: wake-test-1@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        try:
            sock.sendto(msg, ("127.0.0.1", stack.local_port))
            # The receiver thread hands the datagram to the reactor, which answers: both hops must wake it.
            reply = await asyncio.to_thread(sock.recv, 4096)
        finally:
            sock.close()
            await asyncio.wait_for(stack.stop(), 3 * HOP_BOUND_S)
        return reply

    reply = asyncio.run(main())
    assert reply.startswith(b"SIP/2.0 ")
    assert b"wake-test-1@127.0.0.1" in reply


def test_a_hand_over_from_the_reactor_thread_itself_sends_no_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []
    monkeypatch.setattr(wake.signal, "pthread_kill", lambda ident, sig: sent.append(ident))
    monkeypatch.setattr(wake.ED2, "callFromThread", lambda fn, *args: None)
    wake.reactor_thread_started(threading.get_ident())
    try:
        wake.call_on_reactor(print)
        assert sent == []
        other = threading.Thread(target=wake.call_on_reactor, args=(print,))
        other.start()
        other.join()
        assert sent == [threading.get_ident()]
    finally:
        wake.reactor_thread_ending()
    wake.call_on_reactor(print)  # no reactor thread: queued, never signalled
    assert sent == [threading.get_ident()]
