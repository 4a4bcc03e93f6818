"""A plain PJSIP peer for interop tests: runs pjsua2_ua.py as a subprocess and reads its JSON-line events.

Owns that subprocess (stopped by PID); never imports pjsua2 into the test process, where a lifecycle
mistake would abort pytest itself.

Pitfalls (measured): the UA's stdout is its event channel, so pjsua's log goes to `pjsua.log` in the work
dir; "quit" on stdin is the clean stop (BYE for live calls, then libDestroy), SIGTERM/SIGKILL only if that
takes too long; pjsua's jitter buffer can slip a frame mid-call, so judge its audio by the windowed
correlation (seen: global 0.67, windowed 0.9999); the wheel has no Opus, so an Opus-only offer gets 488.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.requires import need
from tests.testbed.ported import PortedProcess
from tests.testbed.ports import PortBlock, port_is_bound
from tests.testbed.proc import ManagedProcess, TestbedError

UA_SCRIPT = Path(__file__).resolve().parent / "pjsua2_ua.py"
# Block layout: SIP +0, RTP (and RTCP) from +10.
BLOCK_SIZE = 50
RTP_OFFSET = 10
READY_TIMEOUT = 10.0
QUIT_GRACE = 4.0

Event = dict[str, Any]


class Pjsua2Peer(PortedProcess):
    """Context manager for one pjsua2 UA subprocess.

    `answer_code`: the final answer to incoming INVITEs (200 answers; 486 busy, 603 decline...). `call`: a URI
    to dial at start. `duration`: seconds after CONFIRMED to hang up (0: never by itself). `registrar`/
    `password`: register there with digest auth and send calls through it. `play`/`record`: WAV files (8 kHz
    mono 16-bit is the UA's native rate). Events are dicts with an "event" key: ready, reg, incoming, state,
    media, disconnected, error, stopped."""

    NAME = "pjsua2 peer"
    BLOCK_SIZE = BLOCK_SIZE
    RTP_OFFSET = RTP_OFFSET

    def __init__(
        self,
        workdir: Path,
        *,
        user: str = "pjsua",
        answer_code: int = 200,
        call: str = "",
        duration: float = 0.0,
        codecs: tuple[str, ...] = ("PCMU",),
        registrar: str = "",
        password: str = "",
        domain: str = "127.0.0.1",
        play: Path | None = None,
        record: Path | None = None,
        ports: PortBlock | None = None,
    ) -> None:
        self.user = user
        self.dir = workdir / f"pjsua2-{user}"
        super().__init__(ports)
        self._opts = dict(
            answer_code=answer_code,
            call=call,
            duration=duration,
            codecs=codecs,
            registrar=registrar,
            password=password,
            domain=domain,
            play=play,
            record=record,
        )
        self.proc: ManagedProcess | None = None
        self.events: list[Event] = []
        self._queue: queue.Queue[Event] = queue.Queue()
        self._reader: threading.Thread | None = None

    @property
    def sip_port(self) -> int:
        return self.ports[0]

    @property
    def contact_uri(self) -> str:
        return f"sip:{self.user}@127.0.0.1:{self.sip_port}"

    def _argv(self) -> list[str]:
        o = self._opts
        argv = [
            sys.executable, "-u", str(UA_SCRIPT),
            "--user", self.user, "--port", str(self.sip_port),
            "--rtp-port", str(self.ports[RTP_OFFSET]), "--rtp-range", str(self.ports.count - RTP_OFFSET),
            "--answer-code", str(o["answer_code"]), "--duration", str(o["duration"]),
            "--domain", str(o["domain"]), "--log-file", str(self.dir / "pjsua.log"),
        ]  # fmt: skip
        for c in o["codecs"]:  # type: ignore[attr-defined]
            argv += ["--codec", str(c)]
        for key in ("call", "registrar", "password"):
            if o[key]:
                argv += [f"--{key}", str(o[key])]
        for key in ("play", "record"):
            if o[key] is not None:
                argv += [f"--{key}", str(o[key])]
        return argv

    def start(self) -> Pjsua2Peer:
        need("pjsua2")
        self._reserve_ports()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.proc = ManagedProcess(
                self._argv(), name="pjsua2-ua", log_dir=self.dir, stdin=subprocess.PIPE, pipe_stdout=True
            )
            self._reader = threading.Thread(target=self._read_loop, name=f"pjsua2-{self.user}", daemon=True)
            self._reader.start()
            self.wait_event("ready", timeout=READY_TIMEOUT)
            self.proc.wait_until(lambda: port_is_bound(self.sip_port, "udp"), READY_TIMEOUT, "SIP port")
        except BaseException:
            self.stop()
            raise
        return self

    def _read_loop(self) -> None:
        assert self.proc is not None and self.proc.popen.stdout is not None
        for raw in self.proc.popen.stdout:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                ev = {"event": "stdout", "line": line}
            self.events.append(ev)
            self._queue.put(ev)

    def _send(self, cmd: dict[str, Any]) -> None:
        if self.proc is None or self.proc.popen.stdin is None:
            raise TestbedError("pjsua2 peer not started")
        self.proc.popen.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.popen.stdin.flush()

    def call(self, uri: str) -> None:
        self._send({"cmd": "call", "uri": uri})

    def hangup(self) -> None:
        self._send({"cmd": "hangup"})

    def wait_event(self, name: str, predicate: Callable[[Event], bool] | None = None, timeout: float = 10.0) -> Event:
        """The next event called `name` (and matching `predicate`), skipping others; bounded by `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._failure(f"no {name!r} event within {timeout}s")
            try:
                ev = self._queue.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self.proc is not None and not self.proc.alive and self._queue.empty():
                    raise self._failure(f"exited while waiting for {name!r}") from None
                continue
            if ev.get("event") == "error" and ev.get("what") == "fatal":
                raise self._failure(f"fatal error: {ev.get('reason')}")
            if ev.get("event") == name and (predicate is None or predicate(ev)):
                return ev

    def wait_state(self, state: str, timeout: float = 10.0) -> Event:
        """The next call-state event with stateText `state` (CALLING, EARLY, CONNECTING, CONFIRMED...)."""
        return self.wait_event("state", lambda e: e.get("state") == state, timeout)

    def states(self) -> list[str]:
        return [str(e["state"]) for e in self.events if e.get("event") == "state"]

    def _failure(self, what: str) -> TestbedError:
        log = self.dir / "pjsua.log"
        detail = log.read_text(errors="replace")[-3000:] if log.exists() else "<no pjsua.log>"
        events = "\n".join(json.dumps(e)[:300] for e in self.events[-20:])
        base = self.proc.failure(what) if self.proc is not None else TestbedError(what)
        return TestbedError(f"{base}\n--- events ---\n{events}\n--- pjsua.log (tail) ---\n{detail}")

    def stop(self) -> int:
        """ "quit" (BYE for live calls, clean libDestroy), then SIGTERM/SIGKILL; idempotent."""
        rc = -1
        if self.proc is not None:
            if self.proc.alive:
                with contextlib.suppress(OSError, TestbedError, ValueError):
                    self._send({"cmd": "quit"})
                self.proc.wait_exit(QUIT_GRACE)
            rc = self.proc.stop(grace=2.0)
        if self._reader is not None:
            self._reader.join(timeout=2.0)
            self._reader = None
        self._release_ports()
        return rc
