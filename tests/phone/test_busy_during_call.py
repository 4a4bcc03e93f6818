"""``voipgw listen`` and ``voipgw call`` answer an INVITE that arrives during their call with 486 Busy Here (a
hardening fix)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.support.live_call import collect_finals
from tests.support.phones import SPEECH, start_caller, start_listener
from tests.support.sip_probe import PLAIN_SDP, finals, sip

pytestmark = pytest.mark.hardening


@pytest.mark.integration
@pytest.mark.parametrize("target", ["listener", "caller"])
def test_a_phone_answers_an_invite_during_its_call_with_486(tmp_path: Path, target: str) -> None:
    bob = start_listener(tmp_path, "bob", tap=False)
    alice = None
    try:
        alice = start_caller(tmp_path, "alice", f"sip:bob@127.0.0.1:{bob.sip_port}", "--play", str(SPEECH), tap=False)
        deadline = time.monotonic() + 20
        while "secure" not in bob.log() or "sent " not in bob.log():  # bob's status line: the call is up
            assert time.monotonic() < deadline and alice.proc.poll() is None, bob.log() + alice.log()
            time.sleep(0.05)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            me = s.getsockname()[1]
            ids = ["busy-plain", "busy-nosdp"]
            port = bob.sip_port if target == "listener" else alice.sip_port
            s.sendto(sip("INVITE", ids[0], me, body=PLAIN_SDP, sdp=True), ("127.0.0.1", port))
            s.sendto(sip("INVITE", ids[1], me), ("127.0.0.1", port))
            codes = collect_finals(s, ids, timeout=10)
            call_still_up = alice.proc.poll() is None
        assert alice.wait(60) == 0, alice.log()
        assert bob.wait(20) == 0, bob.log()
    finally:
        for p in (alice, bob):
            if p is not None:
                p.stop()
    print(codes)
    assert call_still_up, "alice's call ended before the INVITEs were answered: they were not answered *during* it"
    for cid in ids:
        assert set(finals(codes.get(cid, []))) == {486}, (cid, codes)
    assert alice.summary()["state"] == bob.summary()["state"] == "ended"
