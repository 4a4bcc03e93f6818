"""Test helper: one whole call between two ``tests.support.phones`` processes, waited for (bounded) and stopped, and the
hostile TCP/TLS connections some call tests open at a phone first.

Stops the processes it starts or is handed by PID (``PhoneProc.stop``) and closes every socket it opens; loopback
only.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.phones import SPEECH, PhoneProc, start_caller, start_listener

CALLER_TIMEOUT_S = 40.0
"""The caller plays the speech (15 s), hangs up and exits."""
CALLEE_TIMEOUT_S = 15.0
"""The callee (``--once``) exits soon after the caller's BYE."""
CONNECT_TIMEOUT_S = 5.0


def wait_for_call(
    caller: PhoneProc,
    callee: PhoneProc,
    caller_timeout_s: float = CALLER_TIMEOUT_S,
    callee_timeout_s: float = CALLEE_TIMEOUT_S,
) -> None:
    """Both processes exit with status 0 within their bounds (the caller first: it hangs up), asserted with the
    log of the one that did not; both are stopped whatever happens."""
    try:
        for proc, timeout in ((caller, caller_timeout_s), (callee, callee_timeout_s)):
            status = proc.wait(timeout)
            assert status == 0, f"{proc.name} exited with status {status}; log:\n{proc.log()}"
    finally:
        caller.stop()
        callee.stop()


def direct_call(
    workdir: Path, caller: str = "alice", callee: str = "bob", *, record: bool = True, tap: bool = True
) -> tuple[PhoneProc, PhoneProc]:
    """``caller`` calls ``callee`` straight at its SIP port, both playing the speech file, and both end; returns
    (caller, callee). ``record``/``tap`` apply to the callee (the caller always records and taps its wire)."""
    bob = start_listener(workdir, callee, "--play", str(SPEECH), record=record, tap=tap)
    alice = start_caller(workdir, caller, f"sip:{callee}@127.0.0.1:{bob.sip_port}", "--play", str(SPEECH))
    wait_for_call(alice, bob)
    return alice, bob


@contextmanager
def hostile_connections(
    port: int, junk: Iterable[bytes], idle: int, *, send_may_fail: bool = False
) -> Iterator[list[socket.socket]]:
    """Before the body: one connection to ``127.0.0.1:port`` per ``junk`` payload, which sends it and closes, then
    ``idle`` connections held open (yielded) until the body is done. ``send_may_fail``: a server that already
    dropped a junk connection is fine (TLS)."""
    held: list[socket.socket] = []
    try:
        for payload in junk:
            with socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT_S) as s:
                try:
                    s.sendall(payload)
                except OSError:
                    if not send_may_fail:
                        raise
        for _ in range(idle):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT_S))
        yield held
    finally:
        for s in held:
            s.close()
