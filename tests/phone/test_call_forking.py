"""A forked call (issue 13): bob has two voipgw devices registered for one AOR at a real Kamailio, which forks
alice's INVITE to both in parallel. The first device's 183 is keyed at once; the second answers. Alice's call
switches to the second device's own key exchange (the offer accepts one answer per fork), the first device's
ringing is cancelled by the PBX, and the call is sealed end to end with one SAS that both ends agree on."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from ratchet.identity import IdentityKey
from tests.support.kamailio_calls import USERS
from tests.support.phone_calls import wait_for_call
from tests.support.phones import SPEECH, start_caller, start_listener
from tests.support.requires import requires
from tests.testbed.kamailio import Kamailio
from voipgw.store.keyfile import IDENTITY_FILENAME, save_identity

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio")]

RING_TIMEOUT_S = 20.0


def _wait_log(proc, text: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + RING_TIMEOUT_S
    while text not in proc.log():
        assert time.monotonic() < deadline, f"{proc.name} never logged {text!r}:\n{proc.log()}"
        time.sleep(0.05)


def test_the_fork_that_answers_wins_with_its_own_keys_and_the_other_is_cancelled(tmp_path: Path) -> None:
    # One user, one identity on both devices (the contact store binds one key to an AOR: two keys for bob would
    # be a key change to alice): the key file copied to the second device, as a user would.
    bob_key = IdentityKey.generate()
    for device in ("desk", "mobile"):
        home = tmp_path / device / "bob-home"
        home.mkdir(parents=True, mode=0o700)
        save_identity(home / IDENTITY_FILENAME, bob_key)
    with Kamailio(tmp_path, users=USERS, auth=True) as k:
        reg = ["--registrar", f"127.0.0.1:{k.port}", "--username", "bob", "--password", USERS["bob"]]
        # bob's desk phone rings and is never picked up; his mobile answers 2 s after it rings
        desk = start_listener(tmp_path / "desk", "bob", "--answer-after", "25", "--play", str(SPEECH), *reg)
        mobile = start_listener(tmp_path / "mobile", "bob", "--answer-after", "2", "--play", str(SPEECH), *reg)
        mobile.signal(signal.SIGSTOP)  # so that the desk phone's 183 is the one alice keys first
        try:
            alice = start_caller(
                tmp_path, "alice", f"sip:bob@127.0.0.1:{k.port}", "--play", str(SPEECH), *reg[:2],
                "--username", "alice", "--password", USERS["alice"],
            )  # fmt: skip
            _wait_log(desk, "incoming call from")
            time.sleep(1.0)  # alice has keyed the desk phone's 183 by now (one round trip on loopback)
        finally:
            mobile.signal(signal.SIGCONT)
        try:
            wait_for_call(alice, mobile)
            assert desk.wait(RING_TIMEOUT_S) != 0  # --once: its only call was cancelled, never answered
        finally:
            desk.stop()
    a, m, d = alice.summary(), mobile.summary(), desk.summary()
    print(f"alice: {a['state']} SAS {a['sas']}; mobile: {m['state']} SAS {m['sas']}; desk: {d['reason']!r}")
    # alice's call went on with the mobile's early dialog, not the desk's one it keyed first: the desk phone was
    # cancelled, and alice's SAS is the mobile's (each fork's key exchange has its own SAS)
    assert a["state"] == m["state"] == "ended" and a["security"] == m["security"] == "secure, unverified"
    assert a["sas"] is not None and a["sas"] == m["sas"], (a, m)
    assert a["safety_number"] == m["safety_number"] and a["trust_state"] in ("first-contact", "known"), a
    assert d["sas"] != a["sas"], (d, a)
    assert d["state"] == "failed" and "cancelled" in d["reason"], d
    # sealed audio both ways after the switch (alice's frames before it went to the desk phone, under its keys);
    # nothing alice sealed for the mobile was refused there
    assert m["frames_opened"] > 50 and a["frames_opened"] > 50 and m["frames_refused"] == 0, (a, m)
