"""Test helper: a flag-mode ``voipgw gateway`` as a real process on a port block the caller reserved, waited for
(bounded) until it listens, then stopped by PID with the call snapshot it writes on the way out. Loopback only.

``wait_listening`` also serves gateways started another way (tests/testbed/gateway_node.py).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from tests.support.phones import PhoneProc, _spawn, voipgw_argv
from tests.testbed.ports import PortBlock, reserve_block

READY_TIMEOUT_S = 20.0
READY_LINE = "gateway listening on"
"""What a gateway logs once its SIP socket is bound."""
LOG_TAIL = 3000


class _Process(Protocol):
    @property
    def proc(self) -> subprocess.Popen[bytes]: ...

    def log(self) -> str: ...

    def stop(self) -> None: ...


def wait_listening(gw: _Process, name: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll its log until the gateway listens; if it exits or ``timeout_s`` passes first, stop it and fail with
    the log."""
    deadline = time.monotonic() + timeout_s
    while READY_LINE not in gw.log():
        if gw.proc.poll() is not None or time.monotonic() > deadline:
            gw.stop()
            raise AssertionError(f"{name} did not start; log:\n{gw.log()}")
        time.sleep(0.05)


def spawn_gateway(
    workdir: Path,
    name: str,
    home: Path,
    port: PortBlock,
    *args: str,
    owns_port: bool = False,
    wait: bool = True,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> tuple[PhoneProc, Path]:
    """``voipgw gateway --listen 127.0.0.1:<port[0]> --snapshot-json <workdir>/<name>.json ARGS`` with its log in
    ``<workdir>/<name>.log``; returns the process and the snapshot path. ``owns_port``: the process releases
    ``port`` when stopped (else the caller does, e.g. to restart a gateway on the same address)."""
    snap = workdir / f"{name}.json"
    # The spoken SAS mutes the far end for ~3 s after the answer: off unless ARGS say ``--speak-sas on``.
    argv = voipgw_argv(
        home, "gateway", "--listen", f"127.0.0.1:{port[0]}", "--snapshot-json", str(snap), "--speak-sas", "off", *args
    )
    proc = PhoneProc(name, workdir, _spawn(name, workdir, argv), port[0], port if owns_port else None)
    if wait:
        wait_listening(proc, name, ready_timeout_s)
    return proc, snap


def start_gateway(
    workdir: Path, *args: str, name: str = "gateway", ready_timeout_s: float = 15.0
) -> tuple[PhoneProc, Path]:
    """A flag-mode gateway with its own home (``<workdir>/<name>-home``) on a port it holds and releases when
    stopped; returns the process and its snapshot path."""
    return spawn_gateway(
        workdir,
        name,
        workdir / f"{name}-home",
        reserve_block(1),
        *args,
        owns_port=True,
        ready_timeout_s=ready_timeout_s,
    )


def stop_with_snapshot(gw: PhoneProc, snap: Path) -> dict[str, Any]:
    """SIGTERM (bounded), exit status 0, and the call snapshot it wrote on the way out."""
    gw.stop()
    assert gw.proc.returncode == 0, gw.log()[-LOG_TAIL:]
    return dict(json.loads(snap.read_text()))
