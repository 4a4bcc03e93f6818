"""Call flows at the softphone level: cancel while ringing, no answer, shutdown mid-call on SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support.phones import SPEECH, PhoneProc, start_caller, start_listener
from tests.testbed.ports import port_is_bound

pytestmark = pytest.mark.integration


def _wait_log(proc: PhoneProc, text: str, *others: PhoneProc, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.log():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}:\n{p.log()}" for p in (proc, *others))
            raise AssertionError(f"{proc.name} never logged {text!r}:\n{logs}")
        time.sleep(0.05)


def test_caller_interrupted_while_ringing_sends_cancel(tmp_path: Path) -> None:
    bob = start_listener(tmp_path, "bob", "--answer-after", "20")
    alice = start_caller(tmp_path, "alice", f"sip:bob@127.0.0.1:{bob.sip_port}", "--play", str(SPEECH))
    try:
        _wait_log(bob, "incoming call from", alice)
        time.sleep(0.3)
        alice.signal(signal.SIGINT)
        assert alice.wait(15) == 1
        assert bob.wait(15) == 1
    finally:
        alice.stop()
        bob.stop()
    a, b = alice.summary(), bob.summary()
    assert a["state"] == "failed" and a["reason"].startswith("cancelled")
    assert b["state"] == "failed" and "cancelled by the caller" in b["reason"]
    # The early dialog carried sealed frames both ways (alice's SAS reveal, bob's silence), never clear audio;
    # bob opened alice's (what tells him his 183 arrived)
    assert a["security"] == b["security"] == "secure, unverified", (a, b)
    assert a["frames_sent"] > 0 and b["frames_sent"] > 0 and b["frames_opened"] > 0, (a, b)


def test_no_answer_times_out(tmp_path: Path) -> None:
    bob = start_listener(tmp_path, "bob", "--answer-after", "20")
    alice = start_caller(
        tmp_path, "alice", f"sip:bob@127.0.0.1:{bob.sip_port}", "--play", str(SPEECH), "--no-answer-timeout", "1.5"
    )
    try:
        assert alice.wait(20) == 1
        assert bob.wait(15) == 1
    finally:
        alice.stop()
        bob.stop()
    a = alice.summary()
    assert a["state"] == "failed" and "408" in a["reason"], a["reason"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_mid_call_sends_bye_and_closes_sockets(tmp_path: Path, sig: signal.Signals) -> None:
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH))
    alice = start_caller(
        tmp_path, "alice", f"sip:bob@127.0.0.1:{bob.sip_port}", "--play", str(SPEECH), "--duration", "30"
    )
    try:
        _wait_log(alice, "established", bob)
        time.sleep(1.0)
        alice.signal(sig)
        assert alice.wait(15) == 0, alice.log()
        assert bob.wait(15) == 0, bob.log()
    finally:
        alice.stop()
        bob.stop()
    a, b = alice.summary(), bob.summary()
    assert a["state"] == b["state"] == "ended"
    assert b["reason"].endswith("(by peer)"), b["reason"]  # bob saw alice's BYE
    assert a["frames_sent"] > 20 and b["frames_opened"] > 20
    assert not port_is_bound(alice.sip_port) and not port_is_bound(bob.sip_port)
