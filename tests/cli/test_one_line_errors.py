"""No traceback reaches a user: bad input is one ``voipgw: ...`` line with exit status 2, and an unexpected
failure is one ``voipgw: error: ...`` line (exit 1) with the traceback in ``<home>/voipgw.log``
(``VOIPGW_DEBUG=1`` shows it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.phones import voipgw_argv
from tests.testbed.ports import reserve_block

RUN_TIMEOUT_S = 60.0


def _run(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        voipgw_argv(home, *args),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["call", "http://x"], "'http://x' is not a SIP URI (unsupported URI scheme 'http')"),
        (["call", "sip:bob@127.0.0.1:9", "--config", "{dir}"], "is a directory"),
        (["listen", "--config", "{dir}"], "is a directory"),
        (["gateway", "status", "--timeout", "-1"], "--timeout: '-1': expected seconds above 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, argv: list[str], expect: str) -> None:
    files = [] if argv[0] == "gateway" else ["--record", str(tmp_path / "r.wav")]  # no sound card needed
    out = _run(tmp_path / "home", *[a.replace("{dir}", str(tmp_path)) for a in argv], *files)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert expect in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("voipgw"), out.stderr


@pytest.mark.integration
def test_unexpected_failure_is_one_line_with_the_detail_in_the_home_log(tmp_path: Path) -> None:
    """A --summary-json under a missing directory fails only after the call (a real, unplanned OSError): the
    user sees one line naming the log file, which holds the traceback; VOIPGW_DEBUG=1 shows it on stderr."""
    home = tmp_path / "home"
    nobody = reserve_block(2)
    try:
        argv = ["call", f"sip:x@127.0.0.1:{nobody[0]}", "--listen", f"127.0.0.1:{nobody[1]}"]
        argv += ["--no-answer-timeout", "1", "--record", str(tmp_path / "r.wav")]
        argv += ["--summary-json", str(tmp_path / "missing" / "s.json")]
        out = _run(home, *argv, env={"VOIPGW_DEBUG": ""})
        debug = _run(home, *argv, env={"VOIPGW_DEBUG": "1"})
    finally:
        nobody.release()
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("voipgw: error: ") and "s.json" in last and f"detail in {home / 'voipgw.log'}" in last
    logged = (home / "voipgw.log").read_text()
    assert "Traceback" in logged and "FileNotFoundError" in logged
    assert (home / "voipgw.log").stat().st_mode & 0o777 == 0o600
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr
