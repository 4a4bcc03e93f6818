"""What every benchmark shares: its one error type, the subprocesses it starts (stopped by PID) and loopback ports.

Never binds anything but 127.0.0.1 and never signals a process it did not start.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PORT_POOL = (12_000, 32_700)
"""Below the kernel's ephemeral range, where the gateways' and the phones' own sockets are."""
KILL_WAIT_S = 5.0
"""After SIGKILL: how long to reap the process."""


class BenchError(RuntimeError):
    """A benchmark did not run as planned (a process failed to start, or calls could not be set up or failed)."""


@dataclass
class BenchProcess:
    """One process a benchmark started, its output in ``log``; stopped by PID (SIGTERM, then SIGKILL)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    stop_timeout_s: float = 5.0
    """How long SIGTERM may take before SIGKILL."""
    tail_chars: int = 2000
    """How much of the log ``log_tail`` returns (error messages, and the readiness line ``wait_for`` looks for)."""

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str],
        *,
        stop_timeout_s: float = 5.0,
        tail_chars: int = 2000,
    ) -> BenchProcess:
        """Start ``argv`` with stdout and stderr to ``log`` and no stdin."""
        with log.open("wb") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        return cls(name, proc, log, stop_timeout_s, tail_chars)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(KILL_WAIT_S)

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-self.tail_chars :]
        except OSError:
            return "<no log>"

    def wait_for(self, text: str, timeout: float, what: str | None = None) -> None:
        """Wait until ``text`` shows in the log tail; BenchError ("<what, or the name> did not start") if the
        process exits or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while text not in self.log_tail():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{what or self.name} did not start:\n{self.log_tail()}")
            time.sleep(0.05)


# --- loopback ports ------------------------------------------------------------------------------------------


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 the kernel had free just now (it can be taken again before the child binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def udp_ports_bound() -> set[int]:
    """Every UDP port some process has bound (IPv4 and IPv6), from /proc; no side effects."""
    ports: set[int] = set()
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(path, encoding="ascii") as fh:
            next(fh, None)
            for line in fh:
                fields = line.split()
                if len(fields) > 1:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_span(span: int, avoid: set[int], rng: random.Random) -> int:
    """An even port such that ``[port, port + span)`` lies in ``PORT_POOL``, has nothing bound and misses ``avoid``."""
    lo, hi = PORT_POOL
    if span > hi - lo:
        raise BenchError(f"no room for {span} ports in {lo}-{hi}")
    for _ in range(200):
        base = rng.randrange(lo, hi - span) & ~1
        taken = udp_ports_bound() | avoid
        clear = not any(p in taken for p in range(base, base + span))
        if clear and all(_bindable(base + i) for i in range(min(span, 4))):
            return base
    raise BenchError(f"no free block of {span} UDP ports in {lo}-{hi}")
