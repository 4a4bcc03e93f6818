"""``listen`` on a terminal rings until a person decides (issue 15, item 6): it shows who calls (signed AOR, trust
state, the SAS of the early dialog) and answers on ``a``, rejects with 603 on ``r``, sends 486 on ``b``; a caller
that gives up ends the ringing with a line saying so. Real processes on a pty, real SIP and RTP on loopback."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.phones import start_caller, voipgw_argv
from tests.support.pty_phone import PtyPhones, finish, pty_phones
from tests.testbed.ports import reserve_block
from voipgw.call import CallRecord, Security
from voipgw.cli.ringing import KEYS, REFUSALS, Decision, ringing_text, trust_label


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[PtyPhones]:
    yield from pty_phones(tmp_path)


def _summary(phones: PtyPhones, name: str) -> dict[str, object]:
    return dict(json.loads((phones.workdir / f"{name}.json").read_text()))


def test_a_answers_after_showing_who_calls_with_trust_state_and_sas(phones: PtyPhones) -> None:
    bob, port = phones.listener("bob")
    alice = phones.caller("alice", f"sip:bob@127.0.0.1:{port}", "--duration", "1.5")
    bob.expect(r"RINGING: alice@127\.0\.0\.1 \| first contact \(unverified\)")
    bob.expect(r"SAS (\w+) / (\S+ \S+) \(the caller sees the same\)")
    shown = bob.match.group(1)
    bob.expect("press a or Enter to answer")
    bob.send("a")
    assert finish(alice) == 0
    assert finish(bob) == 0
    a, b = _summary(phones, "alice"), _summary(phones, "bob")
    assert a["state"] == b["state"] == "ended"
    assert a["sas"] == b["sas"] == shown
    assert int(str(b["frames_opened"])) > 0


@pytest.mark.parametrize(("key", "code", "phrase"), [("r", 603, "Decline"), ("b", 486, "Busy Here")])
def test_r_rejects_and_b_sends_busy_to_the_caller_as_itself(
    phones: PtyPhones, key: str, code: int, phrase: str
) -> None:
    bob, port = phones.listener("bob")
    alice = phones.caller("alice", f"sip:bob@127.0.0.1:{port}")
    bob.expect("press a or Enter to answer")
    bob.send(key)
    bob.expect(re.escape(f"not answered: alice@127.0.0.1 was sent {code} {phrase}"))
    assert finish(bob) == 0  # the listener did what its user asked
    assert finish(alice) == 1  # the call did not happen
    a, b = _summary(phones, "alice"), _summary(phones, "bob")
    assert str(a["reason"]).startswith(f"{code} {phrase}"), a
    assert a["state"] == b["state"] == "failed" and a["sas"] == b["sas"] is not None


def test_the_caller_giving_up_ends_the_ringing_with_a_line(phones: PtyPhones) -> None:
    bob, port = phones.listener("bob")
    alice = phones.caller("alice", f"sip:bob@127.0.0.1:{port}", "--no-answer-timeout", "4")
    bob.expect("press a or Enter to answer")
    finish(alice)
    bob.expect(r"alice@127\.0\.0\.1 gave up before the call was answered")
    finish(bob)
    assert "cancelled by the caller" in str(_summary(phones, "bob")["reason"])


def test_without_a_terminal_listen_still_answers_after_a_second(tmp_path: Path) -> None:
    """stdin not a tty (a service, a script): nobody to ask, so today's behaviour stays (answer after 1 s)."""
    port = reserve_block(1)
    try:
        home = tmp_path / "bob-home"
        bob = subprocess.Popen(
            voipgw_argv(home, "listen", "--listen", f"127.0.0.1:{port[0]}", "--aor", "bob@127.0.0.1", "--once",
                        "--record", str(tmp_path / "bob.wav"), "--summary-json", str(tmp_path / "bob.json")),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert bob.stderr is not None
        assert "listening as" in bob.stderr.readline()
        alice = start_caller(tmp_path, "alice", f"sip:bob@127.0.0.1:{port[0]}", "--duration", "1", tap=False)
        try:
            assert alice.wait(30) == 0
            assert bob.wait(30) == 0
        finally:
            alice.stop()
            bob.kill()
        rest = bob.stderr.read()
        assert "RINGING" not in rest and "press a" not in rest
        assert json.loads((tmp_path / "bob.json").read_text())["state"] == "ended"
    finally:
        port.release()


@pytest.mark.parametrize(
    ("security", "trust_state", "label"),
    [
        (Security.SECURE_UNVERIFIED, "first-contact", "first contact (unverified)"),
        (Security.SECURE_UNVERIFIED, "known", "known (unverified)"),
        (Security.SECURE_VERIFIED, "known", "verified"),
        (Security.KEY_CHANGED, "key-changed", "KEY CHANGED (unverified)"),
        (Security.NOT_SECURE, None, "NOT SECURE (no end-to-end encryption)"),
    ],
)
def test_trust_label(security: Security, trust_state: str | None, label: str) -> None:
    rec = CallRecord(direction="incoming", local_aor="bob@b", remote_aor="alice@a")
    rec.security, rec.trust_state = security, trust_state
    assert trust_label(rec) == label


def test_keys_table() -> None:
    assert {k: d.value for k, d in KEYS.items()} == {
        "a": "answer", "\n": "answer", "\r": "answer", "r": "reject", "b": "busy"
    }  # fmt: skip
    assert (REFUSALS[Decision.REJECT].code, REFUSALS[Decision.BUSY].code) == (603, 486)


def test_ringing_text_names_only_a_signed_aor() -> None:
    rec = CallRecord(direction="incoming", local_aor="bob@b", remote_aor="alice@a")
    rec.security, rec.trust_state, rec.sas, rec.sas_words = Security.SECURE_VERIFIED, "known", "ab12", ("x", "y")
    lines = ringing_text(rec, "Alice").splitlines()
    assert lines[0] == "RINGING: Alice <alice@a> | verified" and lines[1].strip().startswith("SAS ab12 / x y")
    rec.security, rec.sas = Security.NOT_SECURE, None
    text = ringing_text(rec, "Alice")
    assert "Alice" not in text and "unsigned" in text and "SAS" not in text
