"""Two voipgw processes call each other directly over real SIP/RTP on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.phone_calls import direct_call
from tests.support.phones import assert_secure_call

pytestmark = pytest.mark.integration


def test_direct_call_both_directions_is_secure_and_the_wire_carries_no_audio(tmp_path: Path) -> None:
    alice, bob = direct_call(tmp_path)
    assert_secure_call(alice, bob)
    assert "read it aloud" in alice.log() and "Safety number with bob@127.0.0.1" in alice.log()


def test_demo_json_reports_every_check(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "voipgw.cli.main", "demo", "--json", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        timeout=60,
        check=False,
    )
    data = json.loads(out.stdout)
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    for key in (
        "sas_caller",
        "sas_callee",
        "safety_number",
        "setup_ms",
        "frames_sent",
        "frames_opened",
        "frames_refused",
        "audio_correlation",
        "wire_plaintext_correlation",
    ):
        assert key in data, key
    assert data["ok"] is True and all(data["checks"].values())
    assert data["sas_caller"] == data["sas_callee"]
    assert data["audio_correlation"] >= 0.9 > 0.2 > data["wire_plaintext_correlation"]
