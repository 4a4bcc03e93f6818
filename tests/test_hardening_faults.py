"""Faults at rest: a corrupt or truncated contact store stops a phone with one clear line, is never modified,
is kept when moved aside, and the phone then takes a secure call. (Faults under a running process, SIGKILL,
disk full and a vanishing PBX are not built yet: docs/RELIABILITY.md.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.phones import SPEECH, assert_secure_call, start_caller, start_listener, voipgw_argv

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 30.0


def voipgw(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        voipgw_argv(home, *args), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL
    )


def a_real_store(tmp_path: Path) -> bytes:
    """The contacts.db a listener writes after one secure call."""
    bob = start_listener(tmp_path, "seed-bob", "--play", str(SPEECH), record=False, tap=False)
    alice = start_caller(tmp_path, "seed-alice", f"sip:seed-bob@127.0.0.1:{bob.sip_port}", "--play", str(SPEECH))
    try:
        assert alice.wait(40) == 0, alice.log()
        assert bob.wait(15) == 0, bob.log()
    finally:
        alice.stop()
        bob.stop()
    return (tmp_path / "seed-bob-home" / "contacts.db").read_bytes()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_store_is_refused_clearly_kept_and_the_phone_recovers(tmp_path: Path, damage: str) -> None:
    home = tmp_path / "bob-home"
    home.mkdir(mode=0o700)
    if damage == "garbage":
        broken = bytes(range(256)) * 20
    else:
        real = a_real_store(tmp_path)
        broken = real[: len(real) // 2]
    store = home / "contacts.db"
    store.write_bytes(broken)
    store.chmod(0o600)

    refused = voipgw(home, "listen", "--listen", "127.0.0.1:0", "--aor", "bob@127.0.0.1", "--once")
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "corrupt" in out and "voipgw contacts quarantine" in out, out
    assert "Traceback" not in out
    assert store.read_bytes() == broken  # never modified

    moved = voipgw(home, "contacts", "quarantine", "--yes")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    (kept,) = home.glob("contacts.db.corrupt-*")
    assert kept.read_bytes() == broken  # the backup is the damaged file itself, byte for byte
    assert not store.exists()

    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH))
    alice = start_caller(tmp_path, "alice", f"sip:bob@127.0.0.1:{bob.sip_port}", "--play", str(SPEECH))
    try:
        assert alice.wait(40) == 0, alice.log()
        assert bob.wait(15) == 0, bob.log()
    finally:
        alice.stop()
        bob.stop()
    assert_secure_call(alice, bob)
    assert store.exists() and kept.read_bytes() == broken
