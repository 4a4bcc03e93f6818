"""The production install path (issue 15, item 13): ``scripts/install.sh`` puts a regular (not editable) install of
this checkout with its run-time dependencies only into /opt/voipgw/venv, the config (0640) and state directory
(0700), and the systemd unit; the installed binary runs a gateway. ``scripts/setup.sh`` (make demo / make test)
installs the test peers but leaves none of their system services enabled. Run under ``--root`` so the test
machine's / is not touched (the user and apt steps are the plain commands the script prints in --help)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
TEST_ONLY = {"pytest", "hypothesis", "pexpect", "ruff", "mypy", "pjsua2-python", "pytest-timeout", "selenium"}

pytestmark = pytest.mark.integration


def install(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "install.sh"), "--root", str(root), "--no-apt", "--no-user"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_the_production_install_has_only_run_time_parts_and_its_gateway_runs() -> None:
    root = Path(tempfile.mkdtemp(prefix="vgin", dir="/tmp"))  # short: the control socket path is <= 107 bytes
    try:
        done = install(root)
        assert done.returncode == 0, done.stderr[-3000:]
        venv = root / "opt" / "voipgw" / "venv"
        listed = subprocess.run(
            [str(venv / "bin" / "pip"), "list", "--format", "json"], capture_output=True, text=True, timeout=60
        )
        names = {p["name"].lower() for p in json.loads(listed.stdout)}
        assert "voipgw" in names and "pylibsrtp" in names and "shtab" in names
        assert not names & TEST_ONLY, names & TEST_ONLY
        show = subprocess.run([str(venv / "bin" / "pip"), "show", "-f", "voipgw"], capture_output=True, text=True)
        assert "Editable project location" not in show.stdout and str(venv) in show.stdout, show.stdout

        unit = root / "etc" / "systemd" / "system" / "voipgw-gateway.service"
        assert unit.read_text() == (REPO / "config" / "voipgw-gateway.service").read_text()
        exec_start = next(line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))
        assert exec_start.split("=", 1)[1].split()[0] == "/opt/voipgw/venv/bin/voipgw"
        assert (venv / "bin" / "voipgw").is_file() and "User=voipgw" in unit.read_text()
        config = root / "etc" / "voipgw" / "gateway.toml"
        assert stat.S_IMODE(config.stat().st_mode) == 0o640
        assert stat.S_IMODE((root / "var" / "lib" / "voipgw").stat().st_mode) == 0o700

        # Idempotent, and an edited config is never overwritten.
        config.write_text(config.read_text() + "\n# edited by the operator\n")
        again = install(root)
        assert again.returncode == 0, again.stderr[-3000:]
        assert config.read_text().endswith("# edited by the operator\n")

        # The installed binary (not this checkout) runs a gateway on loopback and stops on SIGTERM with status 0.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        home = root / "var" / "lib" / "voipgw"
        argv = [str(venv / "bin" / "voipgw"), "--home", str(home), "gateway", "--listen", f"127.0.0.1:{port}",
                "--user", "alice=sip:alice@127.0.0.1:9"]  # fmt: skip
        log = root / "gw.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=root)
        try:
            deadline = time.monotonic() + 30
            while "gateway listening on" not in log.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            status = subprocess.run(
                [str(venv / "bin" / "voipgw"), "--home", str(home), "gateway", "status"],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert status.returncode == 0 and "flag mode" in status.stdout, status.stdout + status.stderr
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, log.read_text()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_setup_leaves_no_test_peer_service_enabled() -> None:
    """make demo / make test ran scripts/setup.sh before this suite: the packages' services are off."""
    assert shutil.which("systemctl"), "systemd's systemctl is part of every Debian install"
    for svc in ("kamailio", "rtpengine-daemon"):
        state = subprocess.run(["systemctl", "is-enabled", svc], capture_output=True, text=True, timeout=30)
        assert state.stdout.strip() != "enabled", f"{svc} is enabled as a system service"
