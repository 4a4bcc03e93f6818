"""Test helper for the fault tests: a long speech clip, a home's contacts as the CLI lists them, the UDP ports a
process has open (its media sockets, from /proc), and a bounded wait. Signals nothing; loopback only."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.phones import voipgw_argv
from tests.testbed.speech import _run, speech_path


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


def long_speech(out: Path, repeats: int = 8) -> Path:
    """The bundled speech, `repeats` times at 8 kHz (baresip's aufile source ends the call when its file ends)."""
    _run(["sox", *[str(speech_path())] * repeats, "-r", "8000", "-c", "1", "-b", "16", str(out)])
    return out


def contacts(home: Path) -> list[dict[str, object]]:
    out = subprocess.run(voipgw_argv(home, "contacts", "--json"), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))
