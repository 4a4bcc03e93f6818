"""Processes a test run left behind: every process the tests start inherits a run token in its environment
(tests/conftest.py sets it), so at the end of the run any live process still carrying it is a leak. Kills only
processes carrying the token (by process group when they lead their own), never the runner or its ancestors."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TOKEN_VAR = "VOIPGW_TEST_RUN"
KILL_WAIT_S = 5.0


@dataclass(frozen=True)
class Survivor:
    pid: int
    ppid: int
    pgid: int
    cmdline: str

    def __str__(self) -> str:
        return f"pid {self.pid} (ppid {self.ppid}, pgid {self.pgid}): {self.cmdline}"


def ancestors(pid: int) -> set[int]:
    """``pid`` and every parent up to PID 1."""
    out = {pid}
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces and parentheses
        out.add(pid)
    return out


def _survivor(pid: int) -> Survivor | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None  # gone since the listing
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None  # a zombie has exited; its parent just has not reaped it yet
    cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip() or stat.split("(", 1)[1].rsplit(")", 1)[0]
    return Survivor(pid, int(fields[1]), int(fields[2]), cmdline)


def find_survivors(token: str, exclude: Iterable[int] = ()) -> list[Survivor]:
    """Live processes whose environment has ``VOIPGW_TEST_RUN=<token>``, except ``exclude``, this process and its
    ancestors. Processes whose environment cannot be read (another user's) are not ours."""
    skip = set(exclude) | ancestors(os.getpid())
    needle = f"{TOKEN_VAR}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            survivor = _survivor(int(entry.name))
            if survivor is not None:
                found.append(survivor)
    return sorted(found, key=lambda s: s.pid)


def kill_survivors(survivors: Iterable[Survivor]) -> None:
    """SIGKILL each survivor's process group when it is not ours (so its forked workers die too), else the
    process alone; then wait (bounded) until they are gone."""
    own_group = os.getpgrp()
    pids = []
    for s in survivors:
        pids.append(s.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if s.pgid != own_group:
                os.killpg(s.pgid, signal.SIGKILL)
            else:
                os.kill(s.pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline and any(_survivor(pid) is not None for pid in pids):
        time.sleep(0.05)
