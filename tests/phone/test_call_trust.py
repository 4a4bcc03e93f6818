"""Key continuity in real calls between two homes: TOFU, verification, the verified fast path, a rotated key
blocked with a loud warning at both ends, accept-key, and the in-call v/x keys on a real terminal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.support.phones import SPEECH, run_cli, start_caller, start_listener, voipgw_argv
from voipgw.negotiate import KEY_CHANGE_REFUSED

pytestmark = pytest.mark.integration


def call(work: Path) -> tuple[dict[str, Any], dict[str, Any], str, str]:
    """One short call alice -> bob; the homes (work/alice-home, work/bob-home) persist across calls."""
    bob = start_listener(work, "bob", "--play", str(SPEECH), record=False, tap=False)
    alice = start_caller(
        work, "alice", f"sip:bob@127.0.0.1:{bob.sip_port}", "--play", str(SPEECH), "--duration", "1.5",
        record=False, tap=False,
    )  # fmt: skip
    try:
        alice.wait(40)
        bob.wait(15)
    finally:
        alice.stop()
        bob.stop()
    return alice.summary(), bob.summary(), alice.log(), bob.log()


def test_tofu_verify_fast_path_rotation_blocked_then_accepted(tmp_path: Path) -> None:
    alice_home, bob_home = tmp_path / "alice-home", tmp_path / "bob-home"
    a, b, _, _ = call(tmp_path)
    assert a["state"] == b["state"] == "ended"
    assert a["trust_state"] == b["trust_state"] == "first-contact"
    assert a["security"] == b["security"] == "secure, unverified"
    assert a["safety_number"] == b["safety_number"] and len(a["safety_number"]) == 60
    first_number = a["safety_number"]

    # Alice compares out of band and verifies Bob with the digits Bob's side shows.
    out = run_cli(alice_home, "verify", "bob@127.0.0.1", "--safety-number", b["safety_number"], "--yes")
    assert out.returncode == 0, out.stderr

    a, b, _, _ = call(tmp_path)  # new processes: the identities and the store survived the restart
    assert a["trust_state"] == "known" and a["security"] == "secure, verified" and a["verified"] is True
    assert b["trust_state"] == "known" and b["security"] == "secure, unverified"
    assert a["safety_number"] == b["safety_number"] == first_number  # stable across restarts

    # Bob rotates his identity: Alice had verified him, so her next call is refused with the old/new numbers.
    assert run_cli(bob_home, "id", "new", "--force", "--yes").returncode == 0
    a, b, alice_log, _ = call(tmp_path)
    assert a["state"] == "failed" and a["security"] == "refused"
    assert "changed" in a["reason"].lower(), a["reason"]
    assert a["trust_warning"] and first_number[:5] in a["trust_warning"].replace(" ", "")
    assert "WARNING" in alice_log
    # bob learns from the BYE's Reason header that it was a key change, and nothing more: when alice first saw his
    # old key and whether she had verified it stay with her (her record and log above)
    assert b["state"] == "failed" and b["security"] == "refused" and KEY_CHANGE_REFUSED in b["reason"], b["reason"]
    assert "first seen" not in b["reason"] and "verified" not in b["reason"], b["reason"]
    assert "first seen" in a["reason"] and "verified" in a["reason"], a["reason"]
    assert a["frames_sent"] == 0 and a["frames_opened"] == 0 and a["frames_played"] == 0
    contacts = json.loads(run_cli(alice_home, "contacts", "--json").stdout)
    assert contacts[0]["aor"] == "bob@127.0.0.1"

    assert run_cli(alice_home, "accept-key", "bob@127.0.0.1", "--yes").returncode == 0
    a, b, _, _ = call(tmp_path)
    assert a["state"] == "ended" and a["security"] == "secure, unverified"
    assert a["safety_number"] != first_number and a["safety_number"] == b["safety_number"]


def test_a_blocked_key_change_tells_the_caller_only_that_it_was_refused_for_a_key_change(tmp_path: Path) -> None:
    """bob verified alice; alice rotates her key, and bob (the callee) refuses her next call. The 488 Warning that
    alice and any PBX read says only that the call was refused for a key change; when bob first saw her old key and
    that he had verified it stay in bob's log and summary."""
    a, _, _, _ = call(tmp_path)
    bob_home = tmp_path / "bob-home"
    assert (
        run_cli(bob_home, "verify", "alice@127.0.0.1", "--safety-number", a["safety_number"], "--yes").returncode == 0
    )
    assert run_cli(tmp_path / "alice-home", "id", "new", "--force", "--yes").returncode == 0
    a, b, _, bob_log = call(tmp_path)
    print(f"blocked at the callee: alice {a['reason']!r}; bob {b['reason']!r}")
    assert a["state"] == b["state"] == "failed" and a["security"] == b["security"] == "refused", (a, b)
    assert a["reason"] == f'488 Not Acceptable Here (399 127.0.0.1 "voipgw: {KEY_CHANGE_REFUSED}")', a["reason"]
    assert "identity key of alice@127.0.0.1 changed" in b["reason"] and "first seen" in b["reason"], b["reason"]
    assert "verified" in b["reason"] and "WARNING: the identity key of alice@127.0.0.1 has CHANGED" in bob_log
    assert a["frames_sent"] == b["frames_sent"] == 0 and a["frames_received"] == b["frames_received"] == 0


def _interactive_call(tmp_path: Path, key: str) -> tuple[str, dict[str, Any]]:
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), record=False, tap=False)
    argv = voipgw_argv(
        tmp_path / "alice-home", "call", f"sip:bob@127.0.0.1:{bob.sip_port}", "--aor", "alice@127.0.0.1",
        "--listen", "127.0.0.1:0", "--play", str(SPEECH), "--duration", "6",
        "--summary-json", str(tmp_path / "alice.json"),
    )  # fmt: skip
    child = pexpect.spawn(argv[0], argv[1:], timeout=30, encoding="utf-8", dimensions=(40, 160))
    try:
        child.expect("press v if it matches, x if it does not")
        child.send(key)
        child.expect(pexpect.EOF, timeout=30)
        transcript = child.before or ""
    finally:
        child.close(force=True)
        bob.stop()
    return transcript, json.loads((tmp_path / "alice.json").read_text())


def test_in_call_v_marks_the_contact_verified(tmp_path: Path) -> None:
    transcript, summary = _interactive_call(tmp_path, "v")
    assert "marked verified (SAS" in transcript
    assert summary["state"] == "ended" and summary["security"] == "secure, verified"
    contact = json.loads(run_cli(tmp_path / "alice-home", "contacts", "--json").stdout)[0]
    assert contact["verified"] is True and contact["verified_method"] == "sas"


def test_in_call_x_hangs_up_and_records_a_warning(tmp_path: Path) -> None:
    transcript, summary = _interactive_call(tmp_path, "x")
    assert "SAS mismatch with bob@127.0.0.1: hanging up" in transcript
    assert summary["state"] == "ended" and "did not match" in summary["reason"]
    assert summary["duration_s"] < 5  # hung up at once, not at the end of --duration
    shown = run_cli(tmp_path / "alice-home", "fingerprint", "bob@127.0.0.1")
    assert "mismatch" in (shown.stdout + shown.stderr).lower()
