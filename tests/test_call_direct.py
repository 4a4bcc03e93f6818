"""Two voipgw processes call each other directly over real SIP/RTP on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.phones import SPEECH, start_caller, start_listener
from voipgw.audio.compare import compare_audio
from voipgw.audio.wav import read_wav
from voipgw.demo import decode_as_plain_opus, read_wire

pytestmark = pytest.mark.integration


def test_direct_call_both_directions_is_secure_and_the_wire_carries_no_audio(tmp_path: Path) -> None:
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH))
    alice = start_caller(tmp_path, "alice", f"sip:bob@127.0.0.1:{bob.sip_port}", "--play", str(SPEECH))
    try:
        assert alice.wait(40) == 0, alice.log()
        assert bob.wait(15) == 0, bob.log()
    finally:
        alice.stop()
        bob.stop()
    a, b = alice.summary(), bob.summary()
    assert a["state"] == b["state"] == "ended"
    assert a["security"] == b["security"] == "secure, unverified"
    assert a["sas"] is not None and a["sas"] == b["sas"]
    assert a["sas_words"] == b["sas_words"]
    assert a["safety_number"] is not None and a["safety_number"] == b["safety_number"]
    assert a["frames_refused"] == 0 and b["frames_refused"] == 0
    assert b["frames_opened"] >= 0.9 * a["frames_sent"] > 0
    speech = read_wav(SPEECH)
    for heard in (bob.wav, alice.wav):
        match = compare_audio(speech, read_wav(heard))
        assert match.windowed >= 0.9, (heard.name, match)
    for tap in (bob.wire, alice.wire):
        payloads = read_wire(tap)
        assert len(payloads) > 100
        eavesdropped = compare_audio(speech, decode_as_plain_opus(payloads))
        assert eavesdropped.windowed < 0.2, (tap.name, eavesdropped)
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
