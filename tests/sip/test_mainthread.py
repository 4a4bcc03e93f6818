"""MainThreadReactor: sippy's reactor on the main thread (the CLI layout), asyncio in a worker."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.testbed.ports import port_is_bound
from tests.testbed.sip_peer import SipPeer, sdp, udp_socket_inodes
from voipgw.sip import Answered, Ended, SipStack, SipStackStateError
from voipgw.sip.mainthread import MainThreadReactor


@pytest.mark.integration
def test_call_with_reactor_on_main_thread_then_clean_stop(peer: SipPeer) -> None:
    peer.set_mode(incoming="answer", answer_sdp=sdp(8102))
    before = udp_socket_inodes(os.getpid())
    ports: list[int] = []

    async def amain(reactor: MainThreadReactor[str]) -> str:
        stack = SipStack("127.0.0.1", 0, asyncio.get_running_loop(), own_reactor_thread=False, reactor_hz=100.0)
        reactor.adopt(stack)
        await stack.start()
        ports.append(stack.local_port)
        call = await stack.place_call(f"sip:bob@127.0.0.1:{peer.port}", "sip:alice@127.0.0.1", lambda _: sdp(8100))
        while not isinstance(ev := await call.next_event(5.0), Answered):
            assert not isinstance(ev, Ended), ev
        await peer.acall_event("Confirmed")
        return "done"  # the runner stops the stack, which hangs the call up

    assert MainThreadReactor[str]().run(amain) == "done"
    assert peer.call_event("Ended")["data"]["by_remote"] is True
    assert udp_socket_inodes(os.getpid()) - before == set()
    assert not port_is_bound(ports[0])


def test_sigterm_sets_stop_requested() -> None:
    async def amain(reactor: MainThreadReactor[bool]) -> bool:
        stack = SipStack("127.0.0.1", 0, asyncio.get_running_loop(), own_reactor_thread=False)
        reactor.adopt(stack)
        await stack.start()
        assert reactor.stop_requested is not None
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(reactor.stop_requested.wait(), 5.0)
        return stack.running

    assert MainThreadReactor[bool]().run(amain) is True
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


@pytest.mark.parametrize("when", ["before adopt", "after adopt, before start"])
def test_failure_in_amain_is_raised_without_hanging(when: str) -> None:
    async def amain(reactor: MainThreadReactor[None]) -> None:
        stack = SipStack("127.0.0.1", 0, asyncio.get_running_loop(), own_reactor_thread=False)
        if when != "before adopt":
            reactor.adopt(stack)
            await asyncio.sleep(0.05)  # let the main thread enter the reactor
        raise ValueError(when)

    with pytest.raises(ValueError, match=when):
        MainThreadReactor[None]().run(amain)


def test_adopt_refuses_a_stack_with_its_own_thread() -> None:
    async def amain(reactor: MainThreadReactor[None]) -> None:
        reactor.adopt(SipStack("127.0.0.1", 0, asyncio.get_running_loop()))

    with pytest.raises(SipStackStateError):
        MainThreadReactor[None]().run(amain)
