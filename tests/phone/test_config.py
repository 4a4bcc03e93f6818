"""Configuration: the example documents every key, and bad files give one clear line."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from voipgw.config import ConfigError, PhoneConfig, Policy, load_phone_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "phone.example.toml"


def test_example_loads_and_documents_every_setting() -> None:
    config = load_phone_config(EXAMPLE, {})
    assert config.policy is Policy.REQUIRE and config.interval_ms == 2000
    text = EXAMPLE.read_text()
    documented = set(re.findall(r"^#?\s*([a-z0-9_]+)\s*=", text, flags=re.M))
    assert {f.name for f in fields(PhoneConfig)} <= documented


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('aor = "a@b"\nlisten_prot = 5', "unknown setting 'listen_prot'"),
        ('aor = "a@b"\nlisten_port = "5060"', "listen_port: expected int"),
        ('aor = "a@b"\npolicy = "maybe"', "policy: expected 'require' or 'opportunistic'"),
        ('aor = "a@b"\nsuites = ["rsa"]', "suites: unknown suite"),
        ('aor = "a@b"\nsuites = ["x25519-mlkem768"]', "x25519 is mandatory"),
        ('aor = "a@b"\ninterval_ms = 5', "interval_ms: must be within"),
        ('aor = "a@b"\ne2e = false', "needs policy"),
        ('aor = "a@b"\ndh_interval_s = 0.05', "dh_interval_s: must be 0 or at least 1 s"),
        ('aor = "a@b"\ndh_interval_s = -1', "dh_interval_s: must be >= 0"),
        ('aor = "a@b"\nrtp_ports = "30000"', 'rtp_ports: expected "LOW-HIGH"'),
        ('aor = "a@b"\nrtp_ports = "40000-30000"', "rtp_ports: 40000-30000 is not a range"),
        ('aor = "a@b"\nregistrar = "pbx:port"', "registrar: port 'port' is not a number"),
        ("aor = ", "config file"),
        ("listen_port = 5", "aor: missing"),
    ],
)
def test_bad_configuration_is_one_clear_error(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_phone_config(path, {})


def test_password_never_appears_in_repr() -> None:
    assert "hunter2" not in repr(PhoneConfig(aor="a@b", password="hunter2"))


def test_cli_reports_config_errors_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[phone]\naor = "a@b"\nbogus = 1\n')
    out = subprocess.run(
        [sys.executable, "-m", "voipgw.cli.main", "--home", str(tmp_path), "listen", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert "unknown setting 'bogus'" in out.stderr and "Traceback" not in out.stderr


def test_cli_without_audio_device_suggests_files(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "voipgw.cli.main", "--home", str(tmp_path), "call", "sip:bob@127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 3, out.stderr
    assert "--play" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("seconds", [0, 1, 1.0, 30, 3600])
def test_dh_intervals_the_peer_can_follow_are_accepted(tmp_path: Path, seconds: float) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'aor = "a@b"\ndh_interval_s = {seconds}')
    assert load_phone_config(path, {}).dh_interval_s == seconds
