"""One test-bed child process: output in a log file, stopped with its whole process group (SIGTERM, then SIGKILL).

Never signals anything but the process group it started; never waits without a bound.
Pitfall: children get their own session (so a Ctrl-C on pytest does not reach them before our teardown does), and
that session's process group is what we stop: Kamailio and tshark fork workers that outlive a killed main PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

LOG_TAIL_CHARS = 4000
POLL_INTERVAL = 0.02
KILL_WAIT_S = 5.0


def _signal_group(pgid: int, sig: int) -> None:
    if pgid == os.getpgrp():  # never our own group: only a child started with start_new_session=True qualifies
        raise ValueError(f"refusing to signal the test runner's own process group {pgid}")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def stop_group(
    popen: subprocess.Popen[Any], grace: float = 3.0, term_signals: Sequence[int] = (signal.SIGTERM,)
) -> int | None:
    """Stop a child started with ``start_new_session=True`` and everything it forked: send each of
    ``term_signals`` to its process group (spread over ``grace``, until the child exits), then SIGKILL the group,
    which also reaps workers the child left behind. Returns the child's exit code (None if it would not die)."""
    pgid = popen.pid  # a session leader's process group id is its PID
    if popen.poll() is None:
        step = grace / max(1, len(term_signals))
        for sig in term_signals:
            _signal_group(pgid, sig)
            try:
                popen.wait(timeout=step)
                break
            except subprocess.TimeoutExpired:
                continue
    _signal_group(pgid, signal.SIGKILL)
    try:
        return popen.wait(timeout=KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        return None


class TestbedError(RuntimeError):
    """A test-bed process failed to start, to become ready, or to do what it was asked; has its log tail."""

    __test__ = False  # not a pytest test class despite the name


def tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return text[-chars:]


class ManagedProcess:
    """A started child with stdout+stderr in `log_path`; `stop()` is idempotent and bounded."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdin: int | None = subprocess.DEVNULL,
        pipe_stdout: bool = False,
    ) -> None:
        """With `pipe_stdout`, stdout is a pipe for the caller to read (stderr still goes to the log)."""
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        try:
            self.popen = self._spawn(stdin, pipe_stdout, full_env, cwd)
        except BaseException:
            self._log.close()
            raise
        self.pid = self.popen.pid

    def _spawn(
        self, stdin: int | None, pipe_stdout: bool, env: dict[str, str], cwd: Path | None
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv,
            stdin=stdin,
            stdout=subprocess.PIPE if pipe_stdout else self._log,
            stderr=self._log if pipe_stdout else subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return tail(self.log_path, 1 << 30)

    def failure(self, what: str) -> TestbedError:
        rc = self.popen.poll()
        state = "running" if rc is None else f"exited rc={rc}"
        return TestbedError(f"{self.name} ({state}): {what}\n--- {self.log_path} (tail) ---\n{tail(self.log_path)}")

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `predicate` until true; raise with the log tail on timeout or if the child dies first."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return
            if not self.alive:
                raise self.failure(f"died while waiting for {what}")
            if time.monotonic() >= deadline:
                raise self.failure(f"timed out after {timeout:.1f}s waiting for {what}")
            time.sleep(POLL_INTERVAL)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, sig: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def stop(self, grace: float = 3.0, term_signals: Sequence[int] = (signal.SIGTERM,)) -> int:
        """Send each of `term_signals` to the process group (spread over `grace`), then SIGKILL it; return the
        exit code."""
        stop_group(self.popen, grace, term_signals)
        if not self._log.closed:
            self._log.close()
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(OSError):
                    pipe.close()
        rc = self.popen.returncode
        return rc if rc is not None else -1
