"""Test helper: ``voipgw listen`` / ``voipgw call`` on a real pseudo-terminal (pexpect), for the interactive keys
(answer/reject while ringing, ``v``/``x`` in a call) and what a person sees (colour, bell, progress lines)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pexpect

from tests.testbed.ports import PortBlock, reserve_block

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class PtyPhones:
    """Children started by a test, closed (SIGHUP/SIGKILL by pid) and their ports released at the end."""

    workdir: Path
    children: list[pexpect.spawn] = field(default_factory=list)
    blocks: list[PortBlock] = field(default_factory=list)

    def port(self) -> int:
        block = reserve_block(1)
        self.blocks.append(block)
        return block[0]

    def spawn(self, name: str, *argv: str, env: dict[str, str] | None = None) -> pexpect.spawn:
        """``voipgw --home <workdir>/<name>-home ARGV`` on a pty (60x200), its output also kept in <name>.pty."""
        base = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        child = pexpect.spawn(
            sys.executable,
            ["-m", "voipgw.cli.main", "--home", str(self.workdir / f"{name}-home"), *argv],
            cwd=str(ROOT),
            env={**base, "TERM": "xterm", **(env or {})},
            encoding="utf-8",
            timeout=30,
            dimensions=(60, 200),
        )
        child.logfile_read = (self.workdir / f"{name}.pty").open("w")
        self.children.append(child)
        return child

    def listener(self, name: str, *extra: str) -> tuple[pexpect.spawn, int]:
        """``listen --once --record`` (no sound card needed) as ``name@127.0.0.1``, ready to take a call."""
        port = self.port()
        child = self.spawn(
            name, "listen", "--listen", f"127.0.0.1:{port}", "--aor", f"{name}@127.0.0.1", "--once",
            "--record", str(self.workdir / f"{name}.wav"), "--summary-json", str(self.workdir / f"{name}.json"),
            *extra,
        )  # fmt: skip
        child.expect("listening as")
        return child, port

    def caller(self, name: str, uri: str, *extra: str) -> pexpect.spawn:
        port = self.port()
        return self.spawn(
            name, "call", uri, "--listen", f"127.0.0.1:{port}", "--aor", f"{name}@127.0.0.1",
            "--record", str(self.workdir / f"{name}.wav"), "--summary-json", str(self.workdir / f"{name}.json"),
            *extra,
        )  # fmt: skip

    def close(self) -> None:
        for child in self.children:
            child.close(force=True)
            if child.logfile_read is not None:
                child.logfile_read.close()
        for block in self.blocks:
            block.release()


def finish(child: pexpect.spawn, timeout: float = 30) -> int:
    """Wait for the child to exit; its exit status."""
    child.expect(pexpect.EOF, timeout=timeout)
    child.close()
    assert child.exitstatus is not None, child.signalstatus
    return int(child.exitstatus)


def pty_phones(workdir: Path) -> Iterator[PtyPhones]:
    phones = PtyPhones(workdir)
    try:
        yield phones
    finally:
        phones.close()
