"""``voipgw contacts name`` and ``voipgw gateway contacts --user U name`` as a user runs them (real processes): the
name is cleaned and shown next to the AOR in the listings, ``--clear`` removes it, and every refusal is one line
with the right exit status (never a traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from voipgw.call import CallRecord, Security
from voipgw.cli.cmd_call import peer_text
from voipgw.store.keyfile import load_or_create_identity
from voipgw.trust import TrustStore

REPO = Path(__file__).resolve().parents[2]
ALICE, BOB = "alice@example.org", "bob@example.org"


def _cli(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voipgw.cli.main", "--home", str(home), *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _met(home: Path, local: str, remote: str) -> None:
    """``home`` (local's) has met ``remote`` in a call: what the handshake hands its trust engine."""
    mine = load_or_create_identity(home).public.serialize()
    theirs = load_or_create_identity(home.parent / f"{remote}-peer").public.serialize()
    with TrustStore(home) as trust:
        trust.evaluate(local, remote, theirs, local_key=mine, now=1_000.0)
        trust.record_call(local, remote, theirs, local_key=mine, now=1_000.0)


def _one_line_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert all(w in done.stderr for w in words), done.stderr


def test_a_softphone_user_names_a_contact_sees_it_listed_and_clears_it(tmp_path: Path) -> None:
    alice = tmp_path / "alice"
    _met(alice, ALICE, BOB)

    done = _cli(alice, "contacts", "name", "sip:bob@Example.ORG", "Bob \t[E2E 4xj9]\u202e Smith")
    assert done.returncode == 0, done.stderr
    assert f"{BOB} is now shown as 'Bob E2E 4xj9 Smith' (cleaned)" in done.stdout, done.stdout

    table = _cli(alice, "contacts").stdout.splitlines()
    assert table[0].split()[:3] == ["AOR", "NAME", "STATE"]
    assert table[1].startswith(BOB) and "Bob E2E 4xj9 Smith" in table[1], table
    listed = json.loads(_cli(alice, "contacts", "--json").stdout)
    assert [(c["aor"], c["name"]) for c in listed] == [(BOB, "Bob E2E 4xj9 Smith")]
    fingerprint = _cli(alice, "fingerprint", BOB)
    assert f"Safety number with Bob E2E 4xj9 Smith <{BOB}> (you: {ALICE})" in fingerprint.stdout, fingerprint
    assert json.loads(_cli(alice, "fingerprint", BOB, "--json").stdout)["name"] == "Bob E2E 4xj9 Smith"

    done = _cli(alice, "contacts", "name", BOB, "--clear")
    assert done.returncode == 0 and f"{BOB} has no name now" in done.stdout, done
    assert json.loads(_cli(alice, "contacts", "--json").stdout)[0]["name"] is None


def test_naming_refusals_are_one_line_with_the_right_exit_status(tmp_path: Path) -> None:
    alice = tmp_path / "alice"
    _met(alice, ALICE, BOB)
    _one_line_error(_cli(alice, "contacts", "name", "carol@example.org", "Carol"), 1, "no contact", "carol@")
    _one_line_error(_cli(alice, "contacts", "name", BOB), 2, "--clear")
    _one_line_error(_cli(alice, "contacts", "name", BOB, "Bob", "--clear"), 2, "--clear")
    _one_line_error(_cli(alice, "contacts", "name", BOB, " [] \u202e "), 2, "nothing left")
    _one_line_error(_cli(alice, "contacts", "name", "not an aor", "X"), 1, "not a SIP address")
    assert json.loads(_cli(alice, "contacts", "--json").stdout)[0]["name"] is None  # nothing was written


def test_the_gateway_admin_names_a_fronted_users_contact(tmp_path: Path) -> None:
    """Flag mode: ``<home>/users/bob`` is bob's folder; the admin command reuses the softphone's."""
    home = tmp_path / "gateway-home"
    bob = home / "users" / "bob"
    _met(bob, BOB, ALICE)
    done = _cli(home, "gateway", "contacts", "--user", "bob", "name", ALICE, "Alice Smith")
    assert done.returncode == 0 and f"{ALICE} is now shown as 'Alice Smith'" in done.stdout, done
    listed = json.loads(_cli(home, "gateway", "contacts", "--user", "bob", "--json").stdout)
    assert [(c["aor"], c["name"]) for c in listed] == [(ALICE, "Alice Smith")]
    _one_line_error(_cli(home, "gateway", "contacts", "--user", "nobody", "name", ALICE, "A"), 1, "no contact store")
    done = _cli(home, "gateway", "contacts", "--user", "bob", "name", ALICE, "--clear")
    assert done.returncode == 0, done.stderr
    assert json.loads(_cli(bob, "contacts", "--json").stdout)[0]["name"] is None


@pytest.mark.parametrize(
    ("security", "name", "shown"),
    [
        (Security.SECURE_UNVERIFIED, "Bob Smith", f"Bob Smith <{BOB}>"),
        (Security.SECURE_VERIFIED, "Bob Smith", f"Bob Smith <{BOB}>"),
        (Security.KEY_CHANGED, "Bob Smith", f"Bob Smith <{BOB}>"),
        (Security.SECURE_UNVERIFIED, None, BOB),
        (Security.NOT_SECURE, "Bob Smith", BOB),  # in the clear the AOR is only a From header: no local name
        (Security.PENDING, "Bob Smith", BOB),  # not answered yet: nothing signed it either
        (Security.REFUSED, "Bob Smith", BOB),
    ],
)
def test_the_softphone_status_line_names_the_peer_only_when_its_aor_was_signed(
    security: Security, name: str | None, shown: str
) -> None:
    rec = CallRecord(remote_aor=BOB, security=security)
    assert peer_text(rec, name) == shown
