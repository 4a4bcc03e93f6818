"""Issue 15, item 9: a changed key's warning is printed once, in bold red with a bell on a terminal (plain with
NO_COLOR); after ``x`` (the SAS did not match) the other side exits 1 with a line saying its peer reported the
mismatch, and ``voipgw contacts`` flags the contact. Real processes on a pty, real SIP and RTP on loopback."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratchet.identity import IdentityKey
from tests.support.phones import voipgw_argv
from tests.support.pty_phone import PtyPhones, finish, pty_phones
from voipgw.cli.cmd_contacts import sas_mismatch_at
from voipgw.cli.style import BELL, RED_BOLD
from voipgw.store.contacts import EVENT_SAS_MISMATCH, Contact
from voipgw.store.keyfile import load_or_create_identity
from voipgw.trust import TrustStore

ALICE, BOB = "alice@127.0.0.1", "bob@127.0.0.1"


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[PtyPhones]:
    yield from pty_phones(tmp_path)


def _knows_an_older_bob(home: Path) -> None:
    """Alice's store holds another key for bob (as after bob rotated his key): unverified, so the call goes on."""
    me = load_or_create_identity(home).public.serialize()
    old = IdentityKey.generate().public.serialize()
    with TrustStore(home) as trust:
        trust.evaluate(ALICE, BOB, old, local_key=me, now=time.time() - 86400)
        trust.record_call(ALICE, BOB, old, local_key=me, now=time.time() - 86400)


@pytest.mark.parametrize("no_color", [False, True])
def test_the_key_change_warning_is_shown_once_loud_on_a_terminal(phones: PtyPhones, no_color: bool) -> None:
    _knows_an_older_bob(phones.workdir / "alice-home")
    bob, port = phones.listener("bob", "--auto-answer")
    alice = phones.spawn(
        "alice", "call", f"sip:bob@127.0.0.1:{port}", "--listen", f"127.0.0.1:{phones.port()}", "--aor", ALICE,
        "--record", str(phones.workdir / "alice.wav"), "--duration", "1",
        env={"NO_COLOR": "1"} if no_color else None,
    )  # fmt: skip
    assert finish(alice) == 0
    finish(bob)
    seen = (phones.workdir / "alice.pty").read_text()
    assert seen.count(f"the identity key of {BOB} has CHANGED") == 1, seen
    assert "*** WARNING ***" in seen
    loud = RED_BOLD + "*** WARNING ***" in seen and BELL in seen
    assert loud is not no_color
    log = (phones.workdir / "alice-home" / "voipgw.log").read_text()
    assert "has CHANGED" in log  # the log file keeps its copy


def test_x_makes_the_other_side_exit_1_with_a_line_and_contacts_flag_the_peer(phones: PtyPhones) -> None:
    bob, port = phones.listener("bob", "--auto-answer")
    alice = phones.caller("alice", f"sip:bob@127.0.0.1:{port}", "--duration", "20")
    alice.expect("press v if it matches, x if it does not")
    alice.send("x")
    alice.expect("SAS mismatch with bob@127.0.0.1: hanging up")
    assert finish(alice) == 1
    bob.expect(r"alice@127\.0\.0\.1 reported that the SAS did NOT match")
    assert finish(bob) == 1
    home = phones.workdir / "alice-home"
    out = subprocess.run(voipgw_argv(home, "contacts"), capture_output=True, text=True, check=True).stdout
    row = next(line for line in out.splitlines() if line.startswith(BOB))
    assert "SAS MISMATCH" in row and " no " in row, out
    listed = json.loads(
        subprocess.run(voipgw_argv(home, "contacts", "--json"), capture_output=True, text=True, check=True).stdout
    )
    assert listed[0]["sas_mismatch_at"] is not None and listed[0]["verified"] is False


def test_sas_mismatch_flag_is_for_the_current_key_until_verified_again() -> None:
    key = IdentityKey.generate().public.serialize()
    contact = Contact(aor=BOB, identity_key=key, key_side="0" * 30, key_first_seen=100.0, first_seen=100.0,
                      last_seen=100.0, call_count=1, verified=False, verified_at=None, verified_method=None,
                      local_aor=ALICE, changed_at=None, pending_key=None, pending_first_seen=None,
                      pending_last_seen=None)  # fmt: skip
    assert sas_mismatch_at([], contact) is None
    assert sas_mismatch_at([(150.0, EVENT_SAS_MISMATCH, "SAS ab12")], contact) == 150.0
    assert sas_mismatch_at([(50.0, EVENT_SAS_MISMATCH, "")], contact) is None  # about an older key
    assert sas_mismatch_at([(150.0, "other", "")], contact) is None
    again = dataclasses.replace(contact, verified=True, verified_at=200.0)
    assert sas_mismatch_at([(150.0, EVENT_SAS_MISMATCH, "")], again) is None  # verified again since
