"""Hand work to sippy's reactor thread and wake it at once: ``call_on_reactor(fn, *args)``.

sippy's reactor (ElPeriodic under ``ED2``) sleeps between ticks, and in a worker thread it used to notice a
cross-thread call only at its next tick. So the stack ticked at 1000 Hz for 1 ms hops, and those 1,000 wake-ups a
second each took the GIL from the event loop thread: measured on a relaying gateway, the SIP thread was 13-18 % of
the process's CPU and the event loop made about one futex call per relayed packet (docs/RELIABILITY.md, "Relay
cost"). ElPeriodic's sleep returns early on SIGURG (the signal sippy enables for its own call-from-thread wake-ups),
so every hand-over here also sends SIGURG to the reactor thread alone (``pthread_kill``): a hop takes ~0.2 ms, and
the tick only serves sippy's timers (100 Hz: SIP timers are hundreds of ms). Other threads never get the signal.

Owns only the reactor thread's identity (set while ``run_reactor`` runs in a worker thread) and the lock that keeps
a signal from being sent to a thread that has ended (``pthread_kill`` on a finished thread is undefined).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

from sippy.Core.EventDispatcher import ED2

WAKE_SIGNAL = signal.SIGURG
"""The signal ElPeriodic's sleep wakes on (``ED2`` enables it for call-from-thread)."""

_lock = threading.Lock()
_reactor_ident: int | None = None


def reactor_thread_started(ident: int) -> None:
    """The reactor runs in worker thread ``ident`` from now on: hand-overs wake it with a signal."""
    global _reactor_ident
    with _lock:
        _reactor_ident = ident


def reactor_thread_ending() -> None:
    """Called on the reactor thread before it returns: no signal may be sent to it after this."""
    global _reactor_ident
    with _lock:
        _reactor_ident = None


def call_on_reactor(fn: Callable[..., Any], *args: Any) -> None:
    """Queue ``fn(*args)`` for the reactor thread and wake it (no wake needed from the reactor thread itself)."""
    ED2.callFromThread(fn, *args)
    with _lock:
        ident = _reactor_ident
        if ident is not None and ident != threading.get_ident():
            signal.pthread_kill(ident, WAKE_SIGNAL)
