"""The SAS keys are the inside phone's alone: a far end (here a voipgw softphone, the party the SAS is meant to
check) that sends ``*1`` and ``*0`` over the sealed leg can neither mark itself verified in the gateway user's
contact store nor hang the call up; its digits reach the inside phone as ordinary digits."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.phones import start_listener, voipgw_argv
from tests.support.requires import requires
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from tests.testbed.gateway_proc import start_gateway, stop_with_snapshot

pytestmark = [pytest.mark.integration, pytest.mark.hardening, requires("baresip", "sox")]

PROC_TIMEOUT = 30.0
PADDING = "1111111"
"""Ordinary digits first (100 ms each, and the gaps): the keys then arrive well after the bridge is up."""


def test_a_far_end_sending_star_one_and_star_zero_neither_verifies_itself_nor_hangs_up(tmp_path: Path) -> None:
    voice = speech.make_tone(tmp_path / "alice.wav", 8000, seconds=9.0, freq=300.0)
    far = speech.make_variant(tmp_path / "far.wav", 48000)
    mallory = start_listener(tmp_path, "mallory", "--play", str(far), "--send-dtmf", PADDING + "*1*0", tap=False)
    try:
        with Baresip(tmp_path, user="alice", play=voice, codecs=("PCMU",), srate=8000) as alice:
            gw, snap = start_gateway(
                tmp_path,
                "--user",
                f"alice=sip:alice@127.0.0.1:{alice.sip_port},alice@127.0.0.1",
                "--route",
                f"mallory=sip:mallory@127.0.0.1:{mallory.sip_port}",
                "--speak-sas",
                "on",
            )
            try:
                alice.dial(f"sip:mallory@127.0.0.1:{gw.sip_port}")
                alice.wait_event("CALL_ESTABLISHED", timeout=10.0)
                alice.wait_event("CALL_CLOSED", timeout=PROC_TIMEOUT)  # her 9 s ended: she hangs up
                got = alice.received_dtmf()
                assert mallory.wait(PROC_TIMEOUT) == 0, mallory.log()
            finally:
                snapshot = stop_with_snapshot(gw, snap)
    finally:
        mallory.stop()
    call = snapshot["finished"][0]
    print(f"alice's phone got {got!r}; the gateway: {call['reason']!r}, sas_check {call['sas_check']!r}")
    assert got.endswith("*1*0"), got  # relayed to the inside phone as the far end's digits
    assert call["sas_check"] is None, call
    assert call["reason"].startswith("inside:"), call  # alice hung up; *0 from outside ended nothing
    assert call["dtmf"]["to_inside"] >= 4, call
    contacts = subprocess.run(
        voipgw_argv(tmp_path / "gateway-home", "gateway", "contacts", "--user", "alice", "--json"),
        capture_output=True,
        text=True,
        timeout=PROC_TIMEOUT,
        check=False,
    )
    assert contacts.returncode == 0, contacts.stderr
    (entry,) = [c for c in json.loads(contacts.stdout) if c["aor"] == "mallory@127.0.0.1"]
    assert entry["verified"] is False, entry
    assert "SAS MISMATCH" not in gw.log() and "confirmed the SAS" not in gw.log()
