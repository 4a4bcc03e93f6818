"""Test helper for the fault tests: a flag-mode ``voipgw gateway`` on a port the test holds (so a killed one can be
restarted on the same address; from tests/testbed/gateway_proc.py), the UDP ports a process has open (its media
sockets, from /proc), and a bounded wait. Signals only the PIDs it started; loopback only."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from tests.testbed.gateway_proc import spawn_gateway as spawn_gateway
from tests.testbed.gateway_proc import stop_with_snapshot as stop_with_snapshot


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
