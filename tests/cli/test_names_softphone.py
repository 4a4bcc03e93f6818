"""Two real softphones (``voipgw listen`` / ``voipgw call``): once each user named the other with ``voipgw contacts
name``, the next call's status lines show ``secure, unverified | Alice Smith <alice@127.0.0.1>``, the security state
before the name; before any name they show the AOR alone."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.phones import SPEECH, PhoneProc, start_caller, start_listener, voipgw_argv

pytestmark = pytest.mark.integration

ALICE, BOB = "alice@127.0.0.1", "bob@127.0.0.1"


def _call(workdir: Path) -> tuple[str, str]:
    """alice calls bob for about 2 s from the homes in ``workdir``; (alice's output, bob's output)."""
    bob = start_listener(workdir, "bob", "--play", str(SPEECH), tap=False)
    alice: PhoneProc | None = None
    try:
        alice = start_caller(workdir, "alice", f"sip:bob@127.0.0.1:{bob.sip_port}", "--play", str(SPEECH),
                             "--duration", "2", tap=False)  # fmt: skip
        assert alice.wait(30) == 0, alice.log()
        assert bob.wait(15) == 0, bob.log()
    finally:
        for proc in (alice, bob):
            if proc is not None:
                proc.stop()
    return alice.log(), bob.log()


def _name(home: Path, aor: str, name: str) -> None:
    done = subprocess.run(
        voipgw_argv(home, "contacts", "name", aor, name), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_the_softphone_status_line_shows_the_local_name_after_the_security_state(tmp_path: Path) -> None:
    alice_out, bob_out = _call(tmp_path)
    assert f"secure, unverified | {ALICE} | SAS" in bob_out, bob_out
    assert f"secure, unverified | {BOB} | SAS" in alice_out, alice_out
    _name(tmp_path / "bob-home", ALICE, "Alice Smith")
    _name(tmp_path / "alice-home", BOB, "Bob [E2E 9999] Jones")  # cleaned: no label inside a name
    alice_out, bob_out = _call(tmp_path)
    assert f"secure, unverified | Alice Smith <{ALICE}> | SAS" in bob_out, bob_out
    assert f"secure, unverified | Bob E2E 9999 Jones <{BOB}> | SAS" in alice_out, alice_out
