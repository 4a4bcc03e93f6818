"""Never silently degraded (issue 14): a relay that blocks all media for 5 s in the middle of a call with a DH step
every second. Every frame looks alike, so it cannot drop only the key announcements; what it can do is black the
call out. Both phones then report the call as degraded (their DH steps go unacknowledged) while it lasts, say so in
the log and the summary, and recover: the steps resume and the degradation is cleared."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.phone_calls import wait_for_call
from tests.support.phones import SPEECH, start_caller, start_listener
from tests.testbed.impair import Impairment
from tests.testbed.sip_mangler import SipMangler, redirect_media

pytestmark = pytest.mark.integration


def test_a_media_blackout_shows_as_degraded_at_both_ends_and_clears(tmp_path: Path) -> None:
    from tests.phone.test_call_impaired import RelayThread

    config = tmp_path / "fast-dh.toml"
    config.write_text("dh_interval_s = 1\n")
    bob = start_listener(tmp_path, "bob", "--config", str(config), "--play", str(SPEECH), record=False, tap=False)
    with RelayThread(Impairment(seed=7)) as relay:

        def media_via_relay(sdp: str) -> str:
            sdp, relay.peer["a"] = redirect_media(sdp, *relay.addr_b)
            return sdp

        with SipMangler(("127.0.0.1", bob.sip_port), on_offer=media_via_relay) as mangler:
            alice = start_caller(
                tmp_path, "alice", f"sip:bob@127.0.0.1:{mangler.port}", "--config", str(config),
                "--play", str(SPEECH), "--duration", "14", record=False, tap=False,
            )  # fmt: skip
            deadline = time.monotonic() + 30
            while "SAS" not in alice.log() and alice.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2.0)  # a few DH steps through the relay first
            relay.impairment = Impairment(loss=1.0, seed=7)  # the blackout
            time.sleep(5.0)
            relay.impairment = Impairment(seed=7)
            wait_for_call(alice, bob)
    a, b = alice.summary(), bob.summary()
    print("alice degraded:", a["degraded"], "epochs", a["ratchet_local_epoch"], a["ratchet_peer_epoch"])
    print("bob degraded:", b["degraded"], "epochs", b["ratchet_local_epoch"], b["ratchet_peer_epoch"])
    assert a["state"] == b["state"] == "ended" and a["security"] == b["security"] == "secure, unverified"
    for side, s, proc in (("alice", a, alice), ("bob", b, bob)):
        assert "dh-step-unacknowledged" in s["degraded"]["seen"], (side, s["degraded"])
        assert s["degraded"]["active"] == [], (side, s["degraded"])  # cleared once media flowed again
        assert "degraded: our keys cannot advance" in proc.log(), side
        assert "no longer degraded" in proc.log(), side
        assert "DEGRADED during the call" in proc.log(), side  # the summary printed at hang-up
    assert min(a["ratchet_local_epoch"], b["ratchet_local_epoch"]) >= 4  # the steps resumed after the blackout
