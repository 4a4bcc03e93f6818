"""The caller sees its call progress (issue 15, item 5): trying, ringing, the far side's security and SAS once the
early dialog brings them, a hint after a few seconds when nothing responds, and one closing line for a call that
never happened (no "security: refused" for a call that never reached a key exchange). Real processes on a pty."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pty_phone import PtyPhones, finish, pty_phones
from voipgw.call import CallRecord, CallState, Security
from voipgw.cli.progress import CallerProgress, never_keyed, outcome_line, status_code


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[PtyPhones]:
    yield from pty_phones(tmp_path)


def test_trying_ringing_then_the_far_sides_security_and_sas_before_the_answer(phones: PtyPhones) -> None:
    bob, port = phones.listener("bob", "--answer-after", "3")
    alice = phones.caller("alice", f"sip:bob@127.0.0.1:{port}", "--duration", "1")
    alice.expect(re.escape(f"calling sip:bob@127.0.0.1:{port} (trying)"))
    alice.expect(r"\r\nringing\r\n")
    alice.expect(r"ringing: bob@127\.0\.0\.1 \| first contact \(unverified\) \| SAS (\w+) / ")
    sas = alice.match.group(1)
    before_answer = alice.before
    assert "established" not in before_answer  # shown while it rang, not after the answer
    assert finish(alice) == 0
    assert finish(bob) == 0
    a = json.loads((phones.workdir / "alice.json").read_text())
    assert a["state"] == "ended" and a["sas"] == sas


def test_a_port_where_nothing_listens_ends_at_once_and_says_so(phones: PtyPhones) -> None:
    """The host answers the INVITE with ICMP port unreachable: the call ends at once (it took timer B's 32 s)."""
    port = phones.port()  # reserved, nothing bound to it
    alice = phones.caller("alice", f"sip:bob@127.0.0.1:{port}", "--no-answer-timeout", "30")
    alice.expect(re.escape(f"calling sip:bob@127.0.0.1:{port} (trying)"))
    alice.expect(r"nothing listens at the address of bob@127\.0\.0\.1 \(503 .*ICMP port unreachable\)", timeout=5)
    alice.expect(r"security: none \(no key exchange took place\)")
    assert finish(alice) == 1
    assert "Traceback" not in (alice.before or "") and "no response from" not in (alice.before or "")


def test_a_host_that_says_nothing_gets_the_hint_within_seconds_then_ends_clearly(phones: PtyPhones) -> None:
    """A socket that swallows the INVITE (no ICMP, no answer): the hint after a few seconds, then the timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        alice = phones.caller("alice", f"sip:bob@127.0.0.1:{port}", "--no-answer-timeout", "7")
        alice.expect(re.escape(f"calling sip:bob@127.0.0.1:{port} (trying)"))
        alice.expect(r"no response from \S+ after \d+ s: nothing may be listening there", timeout=6.5)
        alice.expect(r"nothing answered at bob@127\.0\.0\.1: no response at all")
        alice.expect(r"security: none \(no key exchange took place\)")
        assert finish(alice) == 1
    assert "Traceback" not in (alice.before or "")


def _rec(state: CallState, reason: str | None = None) -> CallRecord:
    rec = CallRecord(direction="outgoing", local_aor="alice@a", remote_aor="bob@b")
    rec.state, rec.reason = state, reason
    return rec


def test_progress_lines_are_told_once_each() -> None:
    p = CallerProgress("sip:bob@b", 30.0)
    assert p.update(None, 0.0) == ["calling sip:bob@b (trying)"]
    assert p.update(None, 1.0) == []
    assert p.update(_rec(CallState.CALLING), 4.5)[0].startswith("no response from sip:bob@b after 4 s")
    rec = _rec(CallState.EARLY)
    assert p.update(rec, 5.0) == ["ringing"]
    rec.security, rec.trust_state, rec.sas, rec.sas_words = Security.SECURE_VERIFIED, "known", "ab12", ("x", "y")
    assert p.update(rec, 5.2) == ["ringing: bob@b | verified | SAS ab12 / x y"]
    assert p.update(rec, 6.0) == []


@pytest.mark.parametrize(
    ("reason", "rang", "line"),
    [
        ("408 Request Timeout", False, "nothing answered at bob@b: no response at all (408 Request Timeout); is a "
         "phone listening there?"),
        ("408 Request Timeout", True, "bob@b did not answer (408 Request Timeout)"),
        ("486 Busy Here", True, "bob@b is busy (486 Busy Here)"),
        ("603 Decline", True, "bob@b declined the call (603 Decline)"),
        ("cancelled", True, "the call was cancelled before it was answered (cancelled)"),
        ("488 Not Acceptable Here (x)", False, None),
    ],
)  # fmt: skip
def test_outcome_line(reason: str, rang: bool, line: str | None) -> None:
    assert outcome_line(_rec(CallState.FAILED, reason), rang) == line


def test_never_keyed_only_for_unanswered_calls() -> None:
    rec = _rec(CallState.FAILED, "408 Request Timeout")
    rec.security = Security.REFUSED
    assert never_keyed(rec) and status_code("cancelled: 487 Request Terminated") == "487"
    rec.reason = "488 Not Acceptable Here"
    assert not never_keyed(rec)
