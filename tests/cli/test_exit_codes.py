"""Usage and configuration errors exit 2 in every mode (call, listen, gateway), runtime failures 1 (a hardening fix)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.phones import voipgw_argv
from tests.testbed.ports import reserve_block

pytestmark = pytest.mark.hardening


RUN_TIMEOUT_S = 60.0


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        voipgw_argv(home, *args), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL
    )


def _corrupt_identity(home: Path) -> Path:
    home.mkdir(parents=True, mode=0o700)
    key = home / "identity.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    key.chmod(0o600)
    return home


@pytest.mark.integration
def test_usage_and_configuration_errors_exit_2_in_every_mode_runtime_failures_1(tmp_path: Path) -> None:
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a SIP address in use
    held.bind(("127.0.0.1", 0))
    busy = f"127.0.0.1:{held.getsockname()[1]}"
    nobody = reserve_block(1)
    rec = str(tmp_path / "x.wav")
    user = "bob=sip:bob@127.0.0.1:9"
    try:
        cases = [
            ("listen: bad --listen", tmp_path / "h1", ["listen", "--listen", "nonsense", "--record", rec], 2),
            ("listen: address in use", tmp_path / "h2", ["listen", "--listen", busy, "--record", rec], 2),
            ("listen: unusable identity", _corrupt_identity(tmp_path / "h3"), ["listen", "--record", rec], 2),
            ("call: unusable identity", _corrupt_identity(tmp_path / "h4"), ["call", "sip:x@127.0.0.1:9"], 2),
            ("gateway flags: no user", tmp_path / "h5", ["gateway", "--listen", "127.0.0.1:0"], 2),
            ("gateway flags: address in use", tmp_path / "h6", ["gateway", "--listen", busy, "--user", user], 2),
            (
                "gateway flags: unusable identity",
                _corrupt_identity(tmp_path / "h7" / "users" / "bob").parent.parent,
                ["gateway", "--listen", "127.0.0.1:0", "--user", user],
                2,
            ),
            ("gateway --config: missing file", tmp_path / "h8", ["gateway", "--config", str(tmp_path / "no.toml")], 2),
            ("unknown option (argparse)", tmp_path / "h9", ["listen", "--no-such-option"], 2),
            ("status: no gateway running", tmp_path / "h10", ["gateway", "status", "--socket", "/nonexistent.sock"], 1),
            (
                "call: nobody answers",
                tmp_path / "h11",
                [
                    "call",
                    f"sip:x@127.0.0.1:{nobody[0]}",
                    "--listen",
                    "127.0.0.1:0",
                    "--no-answer-timeout",
                    "1",
                    "--record",
                    rec,
                ],
                1,
            ),
        ]
        results = {name: (_run(home, *argv), want) for name, home, argv, want in cases}
    finally:
        held.close()
        nobody.release()
    for name, (out, want) in results.items():
        print(f"{name}: exit {out.returncode}: {out.stderr.strip().splitlines()[-1:]}")
        assert out.returncode == want, (name, out.returncode, out.stderr)
        assert "Traceback" not in out.stderr, (name, out.stderr)
    for cmd in ("listen", "call", "gateway"):
        helped = _run(tmp_path / "help", cmd, "--help")
        text = " ".join(helped.stdout.split())  # argparse wraps the epilog
        assert helped.returncode == 0 and "exit status" in text and "2 usage or configuration error" in text, text
