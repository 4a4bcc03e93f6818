"""Faults at rest: a corrupt or truncated contact store stops a phone with one clear line, is never modified,
is kept when moved aside, and the phone then takes a secure call; and SIGKILL of a phone mid-call. (Faults under
a running gateway, disk full and a vanishing PBX: tests/gateway/test_faults_*.py.)
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.live_call import live_secure_call
from tests.support.phone_calls import direct_call
from tests.support.phones import SPEECH, assert_secure_call, voipgw_argv
from voipgw.audio.compare import compare_audio
from voipgw.audio.wav import read_wav
from voipgw.demo import decode_as_plain_opus
from voipgw.rtp.packet import parse_rtp
from voipgw.store.contacts import ContactStore

pytestmark = [pytest.mark.integration, pytest.mark.hardening, pytest.mark.faults]

RUN_TIMEOUT_S = 30.0
ALICE_END_S = 90.0
"""Her file (15 s) ends, she sends BYE to a dead peer, and the BYE transaction times out."""


def voipgw(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        voipgw_argv(home, *args), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL
    )


def a_real_store(tmp_path: Path) -> bytes:
    """The contacts.db a listener writes after one secure call."""
    direct_call(tmp_path, "seed-alice", "seed-bob", record=False, tap=False)
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

    alice, bob = direct_call(tmp_path)
    assert_secure_call(alice, bob)
    assert store.exists() and kept.read_bytes() == broken


def test_a_phone_killed_mid_call_keeps_its_store_and_never_let_clear_audio_out(tmp_path: Path) -> None:
    """SIGKILL bob in the middle of a secure call: alice's call ends on its own (bounded), nothing alice sent
    after (or before) decodes as speech, bob's store is intact, and bob restarted takes a new secure call."""
    with live_secure_call(tmp_path) as call:
        call.wait_media(100, timeout=30)
        call.bob.signal(signal.SIGKILL)
        assert call.bob.proc.wait(10) == -signal.SIGKILL
        killed_at = len(call.relay.recorded)
        assert call.alice.wait(ALICE_END_S) in (0, 1), call.alice.log()
        sent_by_alice = [parse_rtp(d).payload for d in call.relay.recorded]
    assert len(sent_by_alice) > killed_at  # alice kept sending after bob died: sealed, as ever
    eavesdropped = compare_audio(read_wav(SPEECH), decode_as_plain_opus(sent_by_alice))
    assert eavesdropped.windowed < 0.2, eavesdropped

    home = tmp_path / "bob-home"
    with ContactStore(home) as store:
        assert store.integrity_check() == "ok"
        assert store.get("alice@127.0.0.1") is not None  # the call was recorded before the kill
    alice, bob = direct_call(tmp_path, "alice2")  # bob in the same home
    assert_secure_call(alice, bob)
