"""The identity and contact commands as a user runs them: tables, JSON, safety numbers equal at both ends,
verification, a rotated key blocked then accepted, export/import, and one-line errors (never a traceback)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ratchet.identity import IdentityKey
from voipgw.cli.main import main
from voipgw.store.contacts import CONTACTS_FILENAME, VerifyMethod
from voipgw.store.keyfile import load_identity, load_or_create_identity
from voipgw.trust import TrustAction, TrustState, TrustStore

REPO = Path(__file__).resolve().parents[2]
ALICE, BOB = "alice@example.org", "bob@example.org"


def run(home: Path, *argv: str) -> int:
    return main(["--home", str(home), *argv])


def call(a_home: Path, b_home: Path) -> tuple[str, str]:
    """What a call's handshake hands both phones' trust engines: each side's verified identity key."""
    a_key = load_or_create_identity(a_home).public.serialize()
    b_key = load_or_create_identity(b_home).public.serialize()
    with TrustStore(a_home) as ta, TrustStore(b_home) as tb:
        va = ta.evaluate(ALICE, BOB, b_key, local_key=a_key, now=1_000.0)
        vb = tb.evaluate(BOB, ALICE, a_key, local_key=b_key, now=1_000.0)
        if va.allowed and vb.allowed:
            ta.record_call(ALICE, BOB, b_key, local_key=a_key, now=1_000.0)
            tb.record_call(BOB, ALICE, a_key, local_key=b_key, now=1_000.0)
    return va.state, va.action


def test_two_homes_tofu_verify_rotate_block_accept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    assert call(alice, bob) == (TrustState.FIRST_CONTACT, TrustAction.ALLOW)
    assert run(alice, "contacts") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["AOR", "NAME", "STATE", "VERIFIED", "LAST", "SEEN", "CALLS"]
    assert table[1].split()[:4] == [BOB, "-", "known", "no"] and table[1].split()[-1] == "1"

    assert run(alice, "fingerprint", BOB, "--json") == 0
    fa = json.loads(capsys.readouterr().out)
    assert run(bob, "fingerprint", ALICE, "--json") == 0
    fb = json.loads(capsys.readouterr().out)
    assert fa["safety_number"] == fb["safety_number"] and len(fa["safety_number"]) == 60
    assert fa["qr_payload"] == fb["qr_payload"] and fa["local_aor"] == ALICE
    assert fa["formatted"].count(" ") == 11

    # Alice types Bob's digits with arbitrary spacing: verified only on the exact match
    spaced = " ".join(fb["safety_number"][i : i + 3] for i in range(0, 60, 3))
    assert run(alice, "verify", BOB, "--safety-number", spaced) == 0
    assert "VERIFIED" in capsys.readouterr().out
    assert run(bob, "verify", ALICE, "--qr-payload", fa["qr_payload"]) == 0
    with TrustStore(bob) as tb:
        assert tb.store.require(ALICE).verified_method is VerifyMethod.QR
    assert call(alice, bob) == (TrustState.KNOWN, TrustAction.ALLOW)

    # Bob rotates his key: Alice verified him, so her next call is blocked with a loud warning
    assert run(bob, "id", "new", "--force", "--yes") == 0
    out = capsys.readouterr().out
    assert "every contact sees a CHANGED KEY" in out
    olds = [p for p in bob.iterdir() if p.name.startswith("identity.pem.old-")]
    assert len(olds) == 1 and stat.S_IMODE(olds[0].stat().st_mode) == 0o600
    assert call(alice, bob) == (TrustState.KEY_CHANGED, TrustAction.BLOCK)
    assert run(alice, "contacts", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["state"] == "key-changed (blocked)" and listed[0]["verified"] is True
    assert run(alice, "fingerprint", BOB) == 0
    assert "CHANGED KEY" in capsys.readouterr().out
    assert run(alice, "accept-key", BOB, "--yes") == 0
    out = capsys.readouterr().out
    assert "old safety number" in out and "new safety number" in out
    assert call(alice, bob) == (TrustState.KNOWN, TrustAction.ALLOW)
    with TrustStore(alice) as ta:
        contact = ta.store.require(BOB)
        assert not contact.verified and contact.identity_key == load_identity(bob / "identity.pem").public.serialize()
        assert len(ta.store.history(BOB)) == 1 and ta.store.history(BOB)[0].was_verified


def test_verifying_a_blocked_new_key_accepts_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    call(alice, bob)
    assert run(alice, "verify", BOB, "--yes") == 0
    assert run(bob, "id", "new", "--force", "--yes") == 0
    assert call(alice, bob) == (TrustState.KEY_CHANGED, TrustAction.BLOCK)
    capsys.readouterr()
    assert run(bob, "fingerprint", ALICE, "--json") == 0  # Bob's side already sees the new number
    new_number = json.loads(capsys.readouterr().out)["safety_number"]
    assert run(alice, "verify", BOB, "--safety-number", new_number) == 0
    assert "NEW key matches" in capsys.readouterr().out
    assert call(alice, bob) == (TrustState.KNOWN, TrustAction.ALLOW)


def test_mismatch_and_bad_arguments_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    call(alice, bob)
    capsys.readouterr()
    cases = [
        (("verify", BOB, "--safety-number", "1" * 60), "do NOT match"),
        (("verify", BOB, "--safety-number", "12345"), "60 digits"),
        (("verify", BOB, "--qr-payload", "hello"), "not a voipgw safety-number payload"),
        (("verify", BOB), "no terminal"),
        (("fingerprint", "carol@example.org"), "no contact 'carol@example.org'"),
        (("fingerprint", "<sip:broken"), "not a SIP address of record"),
        (("forget", BOB), "pass --yes"),
        (("accept-key", BOB, "--yes"), "no changed key to accept"),
        (("id", "new"), "needs --force"),
        (("contacts", "import", str(tmp_path / "missing.json")), "cannot read"),
    ]
    for argv, message in cases:
        assert run(alice, *argv) == 1, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    with TrustStore(alice) as ta:
        assert not ta.store.require(BOB).verified  # nothing above changed the contact


def test_fingerprint_needs_our_aor_when_no_call_used_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    me = load_or_create_identity(tmp_path).public.serialize()
    with TrustStore(tmp_path) as trust:
        trust.store.add_first_contact(BOB, IdentityKey.generate().public.serialize(), local_aor=None, now=1.0)
    assert run(tmp_path, "fingerprint", BOB) == 1
    assert "pass --aor" in capsys.readouterr().err
    assert run(tmp_path, "fingerprint", BOB, "--aor", "sip:alice@example.org") == 0
    assert "(you: alice@example.org)" in capsys.readouterr().out
    assert run(tmp_path, "id", "show") == 0
    assert "pass --aor" in capsys.readouterr().out
    assert run(tmp_path, "id", "show", "--aor", ALICE, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["identity_key"] == me.hex() and len(shown["aors"][0]["fingerprint"]) == 30
    assert shown["qr_payload"].startswith(f"voipgw-id:1:{ALICE}:{me.hex()}:")


def test_export_import_between_homes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    call(alice, bob)
    assert run(alice, "verify", BOB, "--yes") == 0
    export = tmp_path / "contacts.json"
    assert run(alice, "contacts", "export", str(export)) == 0
    assert stat.S_IMODE(export.stat().st_mode) == 0o600
    assert run(alice, "contacts", "export", str(export)) == 1  # never overwritten
    new_home = tmp_path / "new-machine"
    assert run(new_home, "contacts", "import", str(export)) == 0
    assert "imported 1 new" in capsys.readouterr().out
    assert run(new_home, "contacts", "--json") == 0
    moved = json.loads(capsys.readouterr().out)
    assert moved[0]["aor"] == BOB and moved[0]["verified"] and moved[0]["verified_method"] == "safety-number"

    doc = json.loads(export.read_text())
    doc["contacts"][0]["identity_key"] = IdentityKey.generate().public.serialize().hex()
    conflicting = tmp_path / "conflict.json"
    conflicting.write_text(json.dumps(doc))
    assert run(new_home, "contacts", "import", str(conflicting)) == 1
    err = capsys.readouterr().err
    assert "different key" in err and BOB in err and err.count("\n") == 1
    doc["contacts"][0]["identity_key"] = "zz"
    conflicting.write_text(json.dumps(doc))
    assert run(new_home, "contacts", "import", str(conflicting)) == 1
    assert "nothing imported" in capsys.readouterr().err
    conflicting.write_text("{not json")
    assert run(new_home, "contacts", "import", str(conflicting)) == 1
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.integration  # starts processes
def test_errors_from_a_real_process_have_no_traceback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    fd = os.open(home / CONTACTS_FILENAME, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"garbage, not SQLite" * 50)
    os.close(fd)
    cli = [sys.executable, "-m", "voipgw.cli.main", "--home", str(home)]
    for argv in (["contacts"], ["verify", "bob@example.org", "--safety-number", "x"], ["fingerprint", "bob@"]):
        done = subprocess.run(
            [*cli, *argv], cwd=REPO, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
        assert done.returncode == 1, (argv, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    done = subprocess.run([*cli, "contacts"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert str(home / CONTACTS_FILENAME) in done.stderr and "quarantine" in done.stderr
    done = subprocess.run(
        [*cli, "contacts", "quarantine", "--yes"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    kept = [p for p in home.iterdir() if p.name.startswith("contacts.db.corrupt-")]
    assert len(kept) == 1 and kept[0].read_bytes().startswith(b"garbage")
    done = subprocess.run([*cli, "contacts"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "no contacts yet" in done.stdout
