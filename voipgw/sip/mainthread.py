"""The CLI layout: sippy's reactor owns the main thread (signal wake-ups, ~0.3 ms) and asyncio runs in a worker.

Owns only that thread hand-off and SIGINT/SIGTERM forwarding; it never touches sippy objects itself.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from voipgw.sip.events import SipStackStateError
from voipgw.sip.stack import SipStack

T = TypeVar("T")
HANDOFF_TIMEOUT_S = 30.0
JOIN_TIMEOUT_S = 10.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class MainThreadReactor(Generic[T]):
    """``MainThreadReactor().run(amain)`` from the main thread, where ``amain(reactor)`` is a coroutine that
    builds ``SipStack(..., own_reactor_thread=False)``, calls ``reactor.adopt(stack)``, then ``await
    stack.start()``. SIGINT/SIGTERM set ``reactor.stop_requested``; the stack is stopped when ``amain`` ends."""

    def __init__(self) -> None:
        self._stack: SipStack | None = None
        self._handoff = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._result: list[T] = []
        self._error: list[BaseException] = []
        self.stop_requested: asyncio.Event | None = None
        """Set (in the worker's loop) when SIGINT or SIGTERM arrives; ``amain`` should then wind down."""

    def adopt(self, stack: SipStack) -> None:
        """Hand ``stack``'s reactor to the main thread; call before ``await stack.start()``."""
        if stack.own_reactor_thread:
            raise SipStackStateError("adopt() needs SipStack(..., own_reactor_thread=False)")
        self._stack = stack
        self._handoff.set()

    def run(self, amain: Callable[[MainThreadReactor[T]], Coroutine[Any, Any, T]]) -> T:
        if threading.current_thread() is not threading.main_thread():
            raise SipStackStateError("MainThreadReactor.run() must be called from the main thread")
        worker = threading.Thread(target=self._worker, args=(amain,), name="asyncio-worker")
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            worker.start()
            self._handoff.wait(HANDOFF_TIMEOUT_S)
            if self._stack is not None:
                self._stack.run_reactor()  # returns once the worker has stopped the stack
            worker.join(JOIN_TIMEOUT_S)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._error:
            raise self._error[0]
        if not self._result:
            raise SipStackStateError("the asyncio worker did not finish")
        return self._result[0]

    def _on_signal(self, signum: int, frame: object) -> None:
        loop, event = self._loop, self.stop_requested
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    def _worker(self, amain: Callable[[MainThreadReactor[T]], Coroutine[Any, Any, T]]) -> None:
        async def wrapped() -> T:
            self._loop = asyncio.get_running_loop()
            self.stop_requested = asyncio.Event()
            try:
                return await amain(self)
            finally:
                if self._stack is not None:
                    await self._stack.stop()

        try:
            self._result.append(asyncio.run(wrapped()))
        except BaseException as exc:
            self._error.append(exc)
        finally:
            self._handoff.set()  # amain may have ended before adopting a stack
