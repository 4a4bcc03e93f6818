"""Test helper for the fault tests: a flag-mode ``voipgw gateway`` on a port the test holds (so a killed one can be
restarted on the same address), the UDP ports a process has open (its media sockets, from /proc), and a bounded
wait. Signals only the PIDs it started; loopback only."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.phones import PhoneProc, _spawn, voipgw_argv
from tests.testbed.ports import PortBlock

READY_TIMEOUT_S = 20.0


def spawn_gateway(
    workdir: Path, name: str, home: Path, port: PortBlock, *args: str, wait: bool = True
) -> tuple[PhoneProc, Path]:
    """``voipgw gateway --listen 127.0.0.1:<port[0]> --snapshot-json <workdir>/<name>.json ARGS``; waits (bounded)
    until it listens. The PhoneProc does not own ``port``: the caller releases it."""
    snap = workdir / f"{name}.json"
    argv = voipgw_argv(home, "gateway", "--listen", f"127.0.0.1:{port[0]}", "--snapshot-json", str(snap), *args)
    proc = PhoneProc(name, workdir, _spawn(name, workdir, argv), port[0], None)
    if wait:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "gateway listening on" not in proc.log():
            if proc.proc.poll() is not None or time.monotonic() > deadline:
                proc.stop()
                raise AssertionError(f"{name} did not start; log:\n{proc.log()}")
            time.sleep(0.05)
    return proc, snap


def stop_with_snapshot(gw: PhoneProc, snap: Path) -> dict[str, Any]:
    """SIGTERM (bounded), exit status 0, and the call snapshot it wrote on the way out."""
    gw.stop()
    assert gw.proc.returncode == 0, gw.log()[-3000:]
    return dict(json.loads(snap.read_text()))


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed since the listing
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def udp_ports(pid: int) -> set[int]:
    """The local ports of the UDP sockets process ``pid`` holds (its SIP and RTP sockets)."""
    inodes = _socket_inodes(pid)
    ports = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[9] in inodes:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def wait_until(predicate: Callable[[], bool], what: str, timeout: float) -> float:
    """Poll (every 0.1 s) until ``predicate()``; the seconds it took. AssertionError naming ``what`` on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start
