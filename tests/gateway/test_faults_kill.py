"""SIGKILL of a gateway mid-call: baresip alice -> gateway A -> gateway B -> baresip bob, and B is killed while the
call carries speech. A notices by its media timeout and ends the call with a reason (BYE to alice); B restarted
on the same port with the same home has the same identity (same safety number) and its contact store (SQLite
WAL recovered, integrity ok, the first call counted); a new call works; and nothing between the gateways, before
or after the kill, decodes to the speech.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest

from tests.support.faults import contacts, long_speech, udp_ports, wait_until
from tests.support.requires import requires
from tests.testbed import capture
from tests.testbed.baresip import Baresip
from tests.testbed.gateway_proc import spawn_gateway, stop_with_snapshot
from tests.testbed.ports import reserve_block
from voipgw.gateway.model import B2buaSettings

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.interop, requires("baresip")]

CALL_TIMEOUT_S = 30.0
MEDIA_TIMEOUT_S = B2buaSettings(home=Path(), users=()).media_timeout_s
"""The gateway's dead-media timeout (its default: neither the TOML file nor the flags set it)."""
NOTICE_TIMEOUT_S = MEDIA_TIMEOUT_S + 20.0
MIN_SEALED_PACKETS = 50
MAX_EAVESDROP_CORRELATION = 0.3
MIN_PLAIN_CORRELATION = 0.9


def between(packets: list[capture.CapturedPacket], ports: set[int]) -> list[capture.CapturedPacket]:
    """The datagrams from one of ``ports`` to another (the outside leg between the two gateways)."""
    return [p for p in packets if p.src_port in ports and p.dst_port in ports]


def sealed_media_seen(cap: capture.RawCapture, ports: set[int]) -> bool:
    return sum(1 for p in between(cap.packets, ports) if p.rtp() is not None) >= MIN_SEALED_PACKETS


def test_a_killed_gateway_restarts_with_its_store_and_the_peer_ends_the_call(tmp_path: Path) -> None:
    clip = long_speech(tmp_path / "speech-long.wav")
    port_a, port_b = reserve_block(1), reserve_block(1)
    home_b = tmp_path / "b-home"
    gws = []
    cap = capture.RawCapture(1024, 65535)
    try:
        with (
            Baresip(tmp_path, user="alice", play=clip) as alice,
            Baresip(tmp_path, user="bob", play=clip) as bob,
        ):
            gw_b, _ = spawn_gateway(tmp_path, "gw-b", home_b, port_b, "--user", f"bob=sip:bob@127.0.0.1:{bob.sip_port}")
            gws.append(gw_b)
            gw_a, snap_a = spawn_gateway(
                tmp_path, "gw-a", tmp_path / "a-home", port_a,
                "--user", f"alice=sip:alice@127.0.0.1:{alice.sip_port}",
                "--route", f"bob=sip:bob@127.0.0.1:{port_b[0]}",
            )  # fmt: skip
            gws.append(gw_a)
            key_b = (home_b / "users" / "bob" / "identity.pem").read_bytes()
            cap.start()

            alice.dial(f"sip:bob@127.0.0.1:{port_a[0]}")
            bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
            alice.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
            first_ports = udp_ports(gw_a.proc.pid) | udp_ports(gw_b.proc.pid)
            wait_until(lambda: sealed_media_seen(cap, first_ports), "sealed media between the gateways", 20.0)
            # The first contact is committed at call set-up (SQLite WAL), before the kill.
            wait_until(lambda: bool(contacts(home_b / "users" / "bob")), "bob's gateway to store alice", 10.0)

            gw_b.proc.kill()
            gw_b.proc.wait(10)
            killed = time.monotonic()
            alice.wait_event("CALL_CLOSED", timeout=NOTICE_TIMEOUT_S)
            noticed = time.monotonic() - killed
            print(f"gateway A ended the call {noticed:.1f} s after gateway B was SIGKILLed")
            bob.hangup()  # before his own media timeout (60 s): his BYE goes to the dead gateway's port
            bob.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)

            # At rest after the kill: the WAL is recovered by the next opener, the database is intact.
            db_path = home_b / "users" / "bob" / "contacts.db"
            with sqlite3.connect(db_path) as db:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            (alice_contact,) = contacts(home_b / "users" / "bob")
            assert alice_contact["aor"] == "alice@127.0.0.1" and alice_contact["calls"] == 1, alice_contact

            gw_b2, snap_b2 = spawn_gateway(
                tmp_path, "gw-b-restarted", home_b, port_b, "--user", f"bob=sip:bob@127.0.0.1:{bob.sip_port}"
            )
            gws.append(gw_b2)
            assert (home_b / "users" / "bob" / "identity.pem").read_bytes() == key_b, "the identity changed"
            alice.dial(f"sip:bob@127.0.0.1:{port_a[0]}")
            bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
            alice.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
            second_ports = udp_ports(gw_a.proc.pid) | udp_ports(gw_b2.proc.pid)
            wait_until(lambda: sealed_media_seen(cap, second_ports - first_ports), "media on the new call", 20.0)
            alice.hangup()
            alice.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
            bob.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
            a = stop_with_snapshot(gw_a, snap_a)
            b2 = stop_with_snapshot(gw_b2, snap_b2)
            alice_rtp = alice.rtp_range
    finally:
        packets = cap.stop() if cap._thread is not None else []
        for gw in gws:
            gw.stop()
        port_a.release()
        port_b.release()

    first, second = a["finished"]
    assert first["reason"] == f"no media from the outside leg for {MEDIA_TIMEOUT_S:g} s", first
    assert first["security"] == second["security"] == "secure, unverified", a["finished"]
    assert first["safety_number"] == second["safety_number"] == b2["finished"][0]["safety_number"], (
        "the restarted gateway has another identity"
    )
    assert second["reason"].startswith("inside"), second
    assert b2["finished"][0]["outside_frames_refused"] == 0
    (alice_contact,) = contacts(home_b / "users" / "bob")
    assert alice_contact["calls"] == 2 and alice_contact["state"] == "known", alice_contact
    (bob_contact,) = contacts(tmp_path / "a-home" / "users" / "alice")
    assert bob_contact["calls"] == 2 and bob_contact["state"] == "known", "A saw a key change after B's restart"
    assert (
        hashlib.sha256(key_b).digest()
        == hashlib.sha256((home_b / "users" / "bob" / "identity.pem").read_bytes()).digest()
    )

    # What crossed between the gateways (both calls, and A's frames to the dead port) never decodes to speech,
    # while the same detector hears alice's plain inside leg.
    outside = between(packets, first_ports | second_ports)
    assert sum(1 for p in outside if p.rtp() is not None) > 2 * MIN_SEALED_PACKETS
    for codec in ("PCMU", "opus"):
        # Streams of at least 1 s: a 0.5 s stream of sealed bytes decoded as Opus once reached 0.316 by chance
        # (CI run of 2026-12-07; 0.17 when rerun); every long stream, and there are several, is still judged.
        verdict = capture.looks_like_plain_audio(outside, clip, codec, min_packets=MIN_SEALED_PACKETS)
        print(f"between the gateways as plain {codec}: best correlation {verdict.correlation:.3f}")
        assert verdict.streams and verdict.correlation < MAX_EAVESDROP_CORRELATION, (codec, verdict)
    inside = [p for p in packets if alice_rtp[0] <= p.src_port <= alice_rtp[1]]
    control = capture.looks_like_plain_audio(inside, clip, "PCMU").correlation
    print(f"alice's plain inside leg (control): {control:.3f}; {len(outside)} datagrams between the gateways")
    assert control >= MIN_PLAIN_CORRELATION
