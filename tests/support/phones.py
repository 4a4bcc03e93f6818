"""Test helper: run ``voipgw listen`` / ``voipgw call`` as real processes with their own homes and ports.

Each process is stopped by PID (SIGTERM, then SIGKILL after a bounded grace); its log is kept for failures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.testbed.ports import PortBlock, reserve_block
from tests.testbed.proc import stop_group
from voipgw.audio.compare import compare_audio
from voipgw.audio.wav import read_wav
from voipgw.demo import decode_as_plain_opus, read_wire

ROOT = Path(__file__).resolve().parents[2]
SPEECH = ROOT / "voipgw" / "data" / "speech.wav"
READY_TIMEOUT_S = 15.0


def voipgw_argv(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "voipgw.cli.main", "--home", str(home), *args]


def run_cli(home: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """One ordinary CLI command (``voipgw --home HOME ARGS``) run to completion, output captured."""
    return subprocess.run(voipgw_argv(home, *args), capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class PhoneProc:
    name: str
    workdir: Path
    proc: subprocess.Popen[bytes]
    sip_port: int
    ports: PortBlock | None = None
    """Held for the process's life so parallel test runs cannot take its port."""

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def summary_path(self) -> Path:
        return self.workdir / f"{self.name}.json"

    @property
    def wav(self) -> Path:
        return self.workdir / f"{self.name}.wav"

    @property
    def wire(self) -> Path:
        return self.workdir / f"{self.name}.wire"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def summary(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.summary_path.read_text()))
        except (OSError, ValueError) as exc:
            raise AssertionError(f"{self.name} wrote no summary ({exc}); log:\n{self.log()}") from None

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{self.name} did not finish within {timeout} s; log:\n{self.log()}") from None

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.ports is not None and self.proc.poll() is not None:
            self.ports.release()
            self.ports = None
        stop_group(self.proc, grace=5.0)  # SIGTERM to its process group, SIGKILL after 5 s


def _spawn(name: str, workdir: Path, argv: list[str]) -> subprocess.Popen[bytes]:
    with (workdir / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=workdir,
            start_new_session=True,  # its own process group, stopped whole (tests.testbed.proc.stop_group)
        )


def start_listener(
    workdir: Path, name: str, *extra: str, record: bool = True, tap: bool = True, once: bool = True
) -> PhoneProc:
    """``voipgw listen --auto-answer [--once]`` as ``name@127.0.0.1`` on a free port; waits until ready."""
    block = reserve_block(1)
    port = block[0]
    args = ["listen", "--listen", f"127.0.0.1:{port}", "--aor", f"{name}@127.0.0.1", "--auto-answer"]
    args += ["--once"] if once else []
    args += ["--summary-json", str(workdir / f"{name}.json")]
    if record:
        args += ["--record", str(workdir / f"{name}.wav")]
    if tap:
        args += ["--tap-wire", str(workdir / f"{name}.wire")]
    argv = voipgw_argv(workdir / f"{name}-home", *args, *extra)
    proc = PhoneProc(name, workdir, _spawn(name, workdir, argv), port, block)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while "listening as" not in proc.log():
        if proc.proc.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise AssertionError(f"{name} did not start listening; log:\n{proc.log()}")
        time.sleep(0.05)
    return proc


def start_caller(workdir: Path, name: str, uri: str, *extra: str, record: bool = True, tap: bool = True) -> PhoneProc:
    block = reserve_block(1)
    port = block[0]
    args = ["call", uri, "--listen", f"127.0.0.1:{port}", "--aor", f"{name}@127.0.0.1"]
    args += ["--summary-json", str(workdir / f"{name}.json")]
    if record:
        args += ["--record", str(workdir / f"{name}.wav")]
    if tap:
        args += ["--tap-wire", str(workdir / f"{name}.wire")]
    argv = voipgw_argv(workdir / f"{name}-home", *args, *extra)
    return PhoneProc(name, workdir, _spawn(name, workdir, argv), port, block)


def assert_secure_call(alice: PhoneProc, bob: PhoneProc) -> None:
    """Both ends ended a secure call with the same SAS and safety number; audio crossed both ways intact and
    what each end put on the wire does not decode to the speech."""
    a, b = alice.summary(), bob.summary()
    assert a["state"] == b["state"] == "ended", (a, b)
    assert a["security"] == b["security"] == "secure, unverified"
    assert a["sas"] is not None and a["sas"] == b["sas"]
    assert a["sas_words"] == b["sas_words"]
    assert a["safety_number"] is not None and a["safety_number"] == b["safety_number"]
    assert a["frames_refused"] == 0 and b["frames_refused"] == 0
    assert b["frames_opened"] >= 0.9 * a["frames_sent"] > 0
    assert a["frames_opened"] >= 0.9 * b["frames_sent"] > 0
    speech = read_wav(SPEECH)
    for heard in (bob.wav, alice.wav):
        match = compare_audio(speech, read_wav(heard))
        assert match.windowed >= 0.9, (heard.name, match)
    for tap in (bob.wire, alice.wire):
        payloads = read_wire(tap)
        assert len(payloads) > 100
        eavesdropped = compare_audio(speech, decode_as_plain_opus(payloads))
        assert eavesdropped.windowed < 0.2, (tap.name, eavesdropped)
