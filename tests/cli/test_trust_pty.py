"""The interactive trust commands on a real pseudo-terminal (pexpect): prompts, typed answers, and the QR codes
drawn in the terminal (compared cell by cell with segno's rendering of the printed payload)."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
import segno

from ratchet.fingerprint import format_safety_number
from ratchet.identity import IdentityKey
from voipgw.cli.main import main
from voipgw.store.contacts import VerifyMethod
from voipgw.store.keyfile import load_or_create_identity
from voipgw.trust import TrustStore

REPO = Path(__file__).resolve().parents[2]
ALICE, BOB = "alice@example.org", "bob@example.org"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """Alice's home with Bob as a first contact (as after one call)."""
    me = load_or_create_identity(tmp_path).public.serialize()
    with TrustStore(tmp_path) as trust:
        trust.evaluate(ALICE, BOB, IdentityKey.generate().public.serialize(), local_key=me, now=1_000.0)
        trust.record_call(ALICE, BOB, trust.store.require(BOB).identity_key, local_key=me, now=1_000.0)
    return tmp_path


@pytest.fixture
def spawn() -> Iterator[list[pexpect.spawn]]:
    children: list[pexpect.spawn] = []
    yield children
    for child in children:
        child.close(force=True)  # SIGHUP/SIGINT/SIGKILL to this child's pid if still running


def _start(children: list[pexpect.spawn], home: Path, *argv: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "voipgw.cli.main", "--home", str(home), *argv],
        cwd=str(REPO),
        encoding="utf-8",
        timeout=30,
        dimensions=(60, 200),
    )
    children.append(child)
    return child


def _finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus is not None
    return int(child.exitstatus)


def _number(home: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["--home", str(home), "fingerprint", BOB, "--json"]) == 0
    return str(json.loads(capsys.readouterr().out)["safety_number"])


def test_verify_by_typing_the_digits(
    home: Path, spawn: list[pexpect.spawn], capsys: pytest.CaptureFixture[str]
) -> None:
    number = _number(home, capsys)
    child = _start(spawn, home, "verify", BOB)
    child.expect(r"Safety number with bob@example\.org \(you: alice@example\.org\)")
    child.expect("Type their 60 digits")
    child.sendline(" ".join(number[i : i + 5] for i in range(0, 60, 5)))
    child.expect("is now VERIFIED")
    assert _finish(child) == 0
    with TrustStore(home) as trust:
        assert trust.store.require(BOB).verified


def test_verify_mismatch_explains_and_changes_nothing(
    home: Path, spawn: list[pexpect.spawn], capsys: pytest.CaptureFixture[str]
) -> None:
    number = _number(home, capsys)
    wrong = number[:-1] + str((int(number[-1]) + 1) % 10)
    child = _start(spawn, home, "verify", BOB)
    child.expect("Type their 60 digits")
    child.sendline(wrong)
    child.expect("do NOT match")
    child.expect("another channel")
    assert _finish(child) == 1
    child = _start(spawn, home, "verify", BOB)
    child.expect("Type their 60 digits")
    child.sendline("")
    child.expect("not verified; nothing changed")
    assert _finish(child) == 1
    with TrustStore(home) as trust:
        assert not trust.store.require(BOB).verified


def test_verify_by_confirming_on_screen(home: Path, spawn: list[pexpect.spawn]) -> None:
    child = _start(spawn, home, "verify", BOB)
    child.expect("or 'y' if every group matches")
    child.sendline("y")
    child.expect("is now VERIFIED")
    assert _finish(child) == 0


def test_forget_asks_and_no_keeps_the_contact(home: Path, spawn: list[pexpect.spawn]) -> None:
    child = _start(spawn, home, "forget", BOB)
    child.expect(r"Forget bob@example\.org, its key and its key history\? .* \[y/N\] ")
    child.sendline("n")
    child.expect("cancelled; nothing was changed")
    assert _finish(child) == 1
    with TrustStore(home) as trust:
        assert trust.store.get(BOB) is not None
    child = _start(spawn, home, "forget", BOB)
    child.expect(r"\[y/N\] ")
    child.sendline("y")
    child.expect("forgot bob@example.org")
    assert _finish(child) == 0
    with TrustStore(home) as trust:
        assert trust.store.get(BOB) is None


def test_accept_key_shows_both_numbers_then_asks(home: Path, spawn: list[pexpect.spawn]) -> None:
    me = load_or_create_identity(home).public.serialize()
    with TrustStore(home) as trust:
        trust.mark_verified(BOB, trust.store.require(BOB).identity_key, VerifyMethod.SAS, now=2_000.0)
        verdict = trust.evaluate(ALICE, BOB, IdentityKey.generate().public.serialize(), local_key=me, now=3_000.0)
    assert not verdict.allowed and verdict.previous_safety_number is not None
    child = _start(spawn, home, "accept-key", BOB)
    child.expect("presented a NEW identity key")
    child.expect_exact("old safety number: " + format_safety_number(verdict.previous_safety_number))
    child.expect_exact("new safety number: " + format_safety_number(verdict.safety_number))
    child.expect(r"Accept the new key of bob@example\.org \(it stays unverified\)\? \[y/N\] ")
    child.sendline("yes")
    child.expect("accepted the new key")
    assert _finish(child) == 0


def test_id_new_warns_and_asks(tmp_path: Path, spawn: list[pexpect.spawn]) -> None:
    old = load_or_create_identity(tmp_path).public
    child = _start(spawn, tmp_path, "id", "new", "--force")
    child.expect("every contact sees a CHANGED KEY")
    child.expect(r"Create a new identity key\? \[y/N\] ")
    child.sendline("")
    child.expect("cancelled")
    assert _finish(child) == 1
    assert load_or_create_identity(tmp_path).public == old
    child = _start(spawn, tmp_path, "id", "new", "--force")
    child.expect(r"\[y/N\] ")
    child.sendline("y")
    child.expect("old key kept as ")
    child.expect("new identity key: ")
    assert _finish(child) == 0
    assert load_or_create_identity(tmp_path).public != old


def _qr_lines(payload: str) -> list[str]:
    out = io.StringIO()
    segno.make(payload, error="m").terminal(out=out, compact=True)
    return [line for line in out.getvalue().splitlines() if line]


@pytest.mark.parametrize("argv", [("fingerprint", BOB, "--qr"), ("id", "show", "--qr")])
def test_qr_code_on_the_terminal_encodes_the_printed_payload(
    home: Path, spawn: list[pexpect.spawn], argv: tuple[str, ...]
) -> None:
    child = _start(spawn, home, *argv)
    child.expect(r"QR payload: +(voipgw-(sn|id):1:\S+)\r\n")
    payload = child.match.group(1)
    expected = _qr_lines(payload)
    for line in expected:
        child.expect_exact(line)
    assert _finish(child) == 0
    assert len(expected) > 20 and all(set(line) <= set("█▀▄ ") for line in expected)
