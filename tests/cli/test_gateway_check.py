"""``voipgw gateway check FILE`` (replaces ``python -m voipgw.ops.config``): ok line and exit 0 for a usable file,
one line naming the setting and exit 2 otherwise, a ``--help`` that works; and the gateway home is created 0700."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.config_gateway import GATEWAY_BLOCK, write_config, zone_tables
from tests.support.phones import _spawn, voipgw_argv
from tests.testbed.ports import reserve_block
from tests.testbed.proc import stop_group

START_TIMEOUT_S = 20.0


def _check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        voipgw_argv(tmp_path / "home", "gateway", "check", *args), capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _tables(ports: Any, registrar: int) -> dict[str, dict[str, Any]]:
    zones = zone_tables(ports)
    return {
        "inside": zones["inside"],
        "outside": {"registrar": f"127.0.0.1:{registrar}", **zones["outside"]},
        "users.alice": {"outside_aor": "alice@127.0.0.1", "password": "pw", "inside_contact": "127.0.0.1:9"},
    }


def test_gateway_check_reports_ok_or_one_line_per_problem(tmp_path: Path) -> None:
    ports = reserve_block(GATEWAY_BLOCK)
    nobody = reserve_block(1)
    try:
        good = write_config(tmp_path / "good.toml", _tables(ports, nobody[0]))
        typo = _tables(ports, nobody[0])
        typo["inside"]["lisen"] = "127.0.0.1:1"
        bad = write_config(tmp_path / "bad.toml", typo)
        offline = _check(tmp_path, str(good), "--offline")
        online = _check(tmp_path, str(good))  # the PBX port has nobody behind it
        typoed = _check(tmp_path, str(bad), "--offline")
        missing = _check(tmp_path, str(tmp_path / "none.toml"))
        helped = _check(tmp_path, "--help")
    finally:
        ports.release()
        nobody.release()
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.startswith("ok: 1 user(s), inside SIP on 127.0.0.1:") and "skipped" in offline.stdout
    for out, expect in (
        (online, f"outside.registrar: nothing listens on 127.0.0.1:{nobody[0]}"),
        (typoed, "unknown setting 'inside.lisen'"),
        (missing, "not found"),
    ):
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert out.stderr.startswith("voipgw: ") and expect in out.stderr, out.stderr
    assert helped.returncode == 0 and "--offline" in helped.stdout and "exit status" in helped.stdout


@pytest.mark.integration
def test_gateway_home_is_created_private(tmp_path: Path) -> None:
    home = tmp_path / "gw-home"
    block = reserve_block(1)
    argv = voipgw_argv(home, "gateway", "--listen", f"127.0.0.1:{block[0]}", "--user", "alice=sip:alice@127.0.0.1:9")
    proc = _spawn("gw", tmp_path, argv)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        log = tmp_path / "gw.log"
        while "gateway listening" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "gateway listening" in log.read_text(), log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(START_TIMEOUT_S) == 0
    finally:
        stop_group(proc, grace=5.0)
        block.release()
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "users").stat().st_mode & 0o777 == 0o700
