"""``gateway status`` on a flag-mode (lab) gateway: it answers over the same control socket in <home> and says what
flag mode lacks, instead of "no gateway running" (issue 15, item 13)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.testbed.gateway_proc import start_gateway, stop_with_snapshot
from voipgw.ops.control import FLAG_MODE_NOTE

pytestmark = pytest.mark.integration


def test_status_of_a_flag_mode_gateway_says_it_is_the_lab_mode() -> None:
    work = Path(tempfile.mkdtemp(prefix="vgfm", dir="/tmp"))  # short: a Unix socket path has at most 107 bytes
    try:
        gw, snap = start_gateway(work, "--user", "alice=sip:alice@127.0.0.1:9")
        try:
            argv = [sys.executable, "-m", "voipgw.cli.main", "--home", str(work / "gateway-home"), "gateway", "status"]
            text = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
            raw = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=60, check=False)
        finally:
            stop_with_snapshot(gw, snap)
        assert text.returncode == 0, text.stderr
        assert FLAG_MODE_NOTE in text.stdout and "Active calls (0)" in text.stdout, text.stdout
        assert json.loads(raw.stdout)["mode"] == "flag"
        assert "no 'gateway status'" not in gw.log()
    finally:
        shutil.rmtree(work, ignore_errors=True)
