"""Two voipgw processes call each other directly over real SIP/RTP on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.phone_calls import direct_call
from tests.support.phones import SPEECH, assert_secure_call

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


@pytest.mark.interop
def test_a_secure_call_sends_no_rtcp(tmp_path: Path) -> None:
    """Issue 14, item 6: RTCP on a sealed call would be clear and unauthenticated, and its sender reports would count
    the frames for the relay, so a secure leg sends none, not even a BYE at hang-up. Both phones take their RTP
    ports from one reserved block (``rtp_ports``), which is captured whole (tshark, or the raw sniffer): RTP flows
    both ways, and no datagram is RTCP."""
    from tests.support.phone_calls import wait_for_call
    from tests.support.phones import start_caller, start_listener
    from tests.testbed.capture import Capture
    from tests.testbed.ports import reserve_block

    block = reserve_block(20)
    try:
        for name, (lo, hi) in (("alice", block.span(0, 10)), ("bob", block.span(10, 10))):
            (tmp_path / f"{name}.toml").write_text(f'aor = "{name}@127.0.0.1"\nrtp_ports = "{lo}-{hi}"\n')
        with Capture(tmp_path, block.first, block.last) as cap:
            bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), "--config", str(tmp_path / "bob.toml"))
            alice = start_caller(
                tmp_path,
                "alice",
                f"sip:bob@127.0.0.1:{bob.sip_port}",
                "--play",
                str(SPEECH),
                "--config",
                str(tmp_path / "alice.toml"),
            )
            wait_for_call(alice, bob)
        assert_secure_call(alice, bob)
    finally:
        block.release()
    rtcp = [p for p in cap.packets if len(p.payload) >= 8 and p.payload[0] >> 6 == 2 and 200 <= p.payload[1] <= 204]
    assert rtcp == []
    directions = {(p.src_port, p.dst_port) for p in cap.packets}
    assert len(cap.packets) > 200 and len(directions) == 2  # both ways, RTP only
