"""Issue 15, item 2: after bob's key changed, bob (the side whose key changed) never sees a bare "secure, verified"
nor advice to run ``accept-key`` on his own AOR. When alice blocks the call (either direction) he is told that
she refused his key and to compare safety numbers; under ``key_change_policy = "warn"`` alice's BYE tells him she
saw a changed key (when she hangs up). Real processes on a pty, real SIP and RTP on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratchet.identity import IdentityKey
from tests.support.pty_phone import PtyPhones, finish, pty_phones
from voipgw.store.contacts import VerifyMethod
from voipgw.store.keyfile import load_or_create_identity
from voipgw.trust import TrustStore

ALICE, BOB = "alice@127.0.0.1", "bob@127.0.0.1"


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[PtyPhones]:
    yield from pty_phones(tmp_path)


def _alice_verified_an_older_bob(phones: PtyPhones) -> None:
    """Alice verified bob's previous key; bob has since rotated it. Bob verified alice's (unchanged) key."""
    alice_home, bob_home = phones.workdir / "alice-home", phones.workdir / "bob-home"
    a_key = load_or_create_identity(alice_home).public.serialize()
    b_key = load_or_create_identity(bob_home).public.serialize()
    old_bob = IdentityKey.generate().public.serialize()
    then = time.time() - 86400
    with TrustStore(alice_home) as trust:
        trust.evaluate(ALICE, BOB, old_bob, local_key=a_key, now=then)
        trust.mark_verified(BOB, old_bob, VerifyMethod.SAS, now=then)
    with TrustStore(bob_home) as trust:
        trust.evaluate(BOB, ALICE, a_key, local_key=b_key, now=then)
        trust.mark_verified(ALICE, a_key, VerifyMethod.SAS, now=then)


def _bob_sees(phones: PtyPhones, bob_text: str) -> None:
    assert "accept-key" not in bob_text, bob_text  # that is alice's command, about bob's key
    assert bob_text.count("voipgw fingerprint alice@127.0.0.1") == 1, bob_text  # told once
    summary = json.loads((phones.workdir / "bob.json").read_text())
    assert summary["verified"] is False or summary["peer_saw_our_key_change"], summary
    security_line = next(line for line in bob_text.splitlines() if line.strip().startswith("security:"))
    assert security_line.strip() != "security: secure, verified (x25519)", security_line


def test_alice_calling_blocks_bobs_new_key_and_bob_is_told_what_is_true(phones: PtyPhones) -> None:
    _alice_verified_an_older_bob(phones)
    bob, port = phones.listener("bob", "--auto-answer")
    alice = phones.caller("alice", f"sip:bob@127.0.0.1:{port}", "--duration", "2")
    assert finish(alice) == 1  # blocked: alice's warning and refusal are covered elsewhere
    bob.expect(r"alice@127\.0\.0\.1 refused the call for a key change: it has another identity key on record for you")
    bob.expect("voipgw fingerprint alice@127.0.0.1")
    assert finish(bob) == 1
    _bob_sees(phones, (phones.workdir / "bob.pty").read_text())


def test_bob_calling_gets_the_488_and_is_told_what_is_true(phones: PtyPhones) -> None:
    _alice_verified_an_older_bob(phones)
    alice, port = phones.listener("alice", "--auto-answer")
    bob = phones.caller("bob", f"sip:alice@127.0.0.1:{port}", "--duration", "2")
    bob.expect(r"alice@127\.0\.0\.1 refused the call for a key change")
    assert finish(bob) == 1
    finish(alice)
    _bob_sees(phones, (phones.workdir / "bob.pty").read_text())


def test_under_warn_alices_bye_tells_bob_she_saw_his_key_change(phones: PtyPhones) -> None:
    _alice_verified_an_older_bob(phones)
    (phones.workdir / "alice-home" / "phone.toml").write_text('[phone]\nkey_change_policy = "warn"\n')
    bob, port = phones.listener("bob", "--auto-answer")
    alice = phones.caller("alice", f"sip:bob@127.0.0.1:{port}", "--duration", "1.5")
    assert finish(alice) == 0  # the call went on, marked key changed
    assert json.loads((phones.workdir / "alice.json").read_text())["security"] == "key changed, unverified"
    bob.expect(r"alice@127\.0\.0\.1 saw a CHANGED identity key for you \(bob@127\.0\.0\.1\) on this call")
    bob.expect(r"security: secure, verified on your side; NOT verified on the other side")
    finish(bob)
    _bob_sees(phones, (phones.workdir / "bob.pty").read_text())


def test_under_warn_bob_is_told_inside_the_call_even_when_he_hangs_up_first(phones: PtyPhones) -> None:
    """bob (whose key changed) calls alice and hangs up first: alice's BYE never comes, but she said it inside
    the encryption (NOTICE) from her first frames, which the PBX can neither strip nor forge."""
    _alice_verified_an_older_bob(phones)
    (phones.workdir / "alice-home" / "phone.toml").write_text('[phone]\nkey_change_policy = "warn"\n')
    alice, port = phones.listener("alice", "--auto-answer")
    bob = phones.caller("bob", f"sip:alice@127.0.0.1:{port}", "--duration", "1.5")
    bob.expect(r"alice@127\.0\.0\.1 saw a CHANGED identity key for you \(bob@127\.0\.0\.1\) on this call")
    bob.expect(r"security: secure, verified on your side; NOT verified on the other side")
    assert finish(bob) == 0  # bob hung up: the call itself went on under alice's warn policy
    finish(alice)
    assert json.loads((phones.workdir / "alice.json").read_text())["security"] == "key changed, unverified"
    summary = json.loads((phones.workdir / "bob.json").read_text())
    assert summary["peer_saw_our_key_change"] is True, summary
    assert "saw a changed identity key" not in (summary["reason"] or ""), "told by the NOTICE, not by a BYE"
    _bob_sees(phones, (phones.workdir / "bob.pty").read_text())
