"""Free loopback port blocks for test-bed processes, reserved with flock so parallel launchers never clash.

Never binds anything but 127.0.0.1, and never hands out ports in the kernel's ephemeral range.
Pitfalls: a port that binds now can be taken before the child binds it (only the lock protects against our own
launchers); baresip binds SIP port+1 for TLS, so callers must reserve whole blocks, not single ports.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path
from types import TracebackType

# Below the Linux ephemeral range (32768-60999) so connect()s of unrelated sockets never steal our ports,
# and above the well-known SIP ports used by hand-run instances (5060-5099).
POOL_FIRST = 12000
POOL_LAST = 32699
SLOT_SIZE = 50
MAX_ATTEMPTS = 200
LOCK_DIR = Path(tempfile.gettempdir()) / "voipgw-testbed-ports"


class PortAllocationError(RuntimeError):
    """No free block of the requested size could be reserved."""


def _bindable(port: int, kind: int) -> bool:
    sock = socket.socket(socket.AF_INET, kind)
    try:
        if kind == socket.SOCK_STREAM:
            # Servers set SO_REUSEADDR, so a TIME_WAIT leftover must not make the port look busy.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        return True
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            return False
        raise
    finally:
        sock.close()


def port_is_free(port: int) -> bool:
    """True when both UDP and TCP can bind `port` on 127.0.0.1 right now."""
    return _bindable(port, socket.SOCK_DGRAM) and _bindable(port, socket.SOCK_STREAM)


def port_is_bound(port: int, proto: str = "udp") -> bool:
    """True when a process has `port` bound (UDP) or listening (TCP); read from /proc, no side effects."""
    path = "/proc/net/udp" if proto == "udp" else "/proc/net/tcp"
    want = f":{port:04X}"
    with open(path, encoding="ascii") as fh:
        next(fh)
        for line in fh:
            fields = line.split()
            if not fields[1].endswith(want):
                continue
            if proto == "udp" or fields[3] == "0A":
                return True
    return False


class PortBlock:
    """`count` consecutive ports, all free on UDP and TCP when reserved, held until `release()`."""

    def __init__(self, first: int, count: int, lock_fds: list[int]) -> None:
        self.first = first
        self.count = count
        self._lock_fds = lock_fds

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < self.count:
            raise IndexError(f"port index {index} outside block of {self.count}")
        return self.first + index

    def span(self, start: int, length: int) -> tuple[int, int]:
        """The inclusive (min, max) range of `length` ports from offset `start` (for RTP port ranges)."""
        if start < 0 or length < 1 or start + length > self.count:
            raise IndexError(f"span {start}+{length} outside block of {self.count}")
        return self.first + start, self.first + start + length - 1

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def release(self) -> None:
        for fd in self._lock_fds:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._lock_fds = []

    def __enter__(self) -> PortBlock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"PortBlock({self.first}-{self.last})"


def _lock_slot(slot: int) -> int | None:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_DIR / f"slot-{slot}.lock", os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def reserve_block(count: int) -> PortBlock:
    """Reserve `count` consecutive free ports (UDP and TCP) on 127.0.0.1; release with `.release()`."""
    if count < 1:
        raise ValueError("count must be >= 1")
    slots_needed = -(-count // SLOT_SIZE)
    n_slots = (POOL_LAST - POOL_FIRST + 1) // SLOT_SIZE
    rng = random.SystemRandom()
    for _ in range(MAX_ATTEMPTS):
        first_slot = rng.randrange(0, n_slots - slots_needed + 1)
        fds: list[int] = []
        for slot in range(first_slot, first_slot + slots_needed):
            fd = _lock_slot(slot)
            if fd is None:
                break
            fds.append(fd)
        block = PortBlock(POOL_FIRST + first_slot * SLOT_SIZE, count, fds)
        if len(fds) == slots_needed and all(port_is_free(p) for p in range(block.first, block.last + 1)):
            return block
        block.release()
    raise PortAllocationError(f"no free block of {count} ports after {MAX_ATTEMPTS} attempts")
