"""Hardening fixes at a gateway, against the real thing (sippy on loopback, real processes, real sockets):

- refused INVITEs are logged rate-limited but each one counted (snapshot ``refused_invites``);
- malformed SIP and RTP by reason appear in the gateway's snapshot, status table and shutdown summary;
- an inbound call no longer refuses the inside phone's first RTP packet (sent as it answers).

(The other fixes of that round sit beside their subjects: phone/test_busy_during_call.py,
sip/test_oversized_datagrams.py, cli/test_exit_codes.py, media/test_early_packets.py.)
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from ratchet.identity import IdentityKey
from tests.support.live_call import collect_finals
from tests.support.phones import SPEECH, start_caller
from tests.support.requires import requires
from tests.support.sip_probe import PLAIN_SDP, finals, sip
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from tests.testbed.gateway_proc import start_gateway
from tests.testbed.gateway_proc import stop_with_snapshot as stop_gateway
from tests.testbed.ports import reserve_block
from voipgw.gateway import B2buaSettings, Bridge, Gateway, InsideUser
from voipgw.media import MediaStream
from voipgw.ops.control import ControlServer, refusal_summary, render_status
from voipgw.ops.control import request as control_request
from voipgw.sip.guard import MAX_DATAGRAM

pytestmark = pytest.mark.hardening

REFUSED = 40
"""INVITEs of each kind sent at the gateway: far more than the log may show."""
MAX_LINES_PER_KIND = 3
"""One line per kind per 10 s interval (a slow run may cross an interval boundary or two)."""


# --- a gateway refusing a flood of INVITEs, and junk SIP, as a real process --------------------------


@pytest.mark.integration
def test_a_gateway_logs_refused_invites_rate_limited_counts_each_and_reports_malformed_sip(tmp_path: Path) -> None:
    nobody_port = reserve_block(1)  # bob's static contact: nothing listens there, and nothing must be sent there
    try:
        gw, snap = start_gateway(tmp_path, "--user", f"bob=sip:bob@127.0.0.1:{nobody_port[0]}")
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                me = s.getsockname()[1]
                unknown = [f"unknown-{i}" for i in range(REFUSED)]
                plain = [f"plain-{i}" for i in range(REFUSED)]
                for i in range(REFUSED):
                    to_nobody = sip("INVITE", unknown[i], me, body=PLAIN_SDP, sdp=True).replace(b"bob@", b"nobody@")
                    s.sendto(to_nobody, ("127.0.0.1", gw.sip_port))
                    s.sendto(sip("INVITE", plain[i], me, body=PLAIN_SDP, sdp=True), ("127.0.0.1", gw.sip_port))
                    if i % 10 == 9:
                        time.sleep(0.02)
                big = sip("OPTIONS", "too-big", me, body=b"x" * (MAX_DATAGRAM + 100))
                junk = [big, sip("OPTIONS", "bad-version", me, version="SIP/9.9"), b"\x00\x01 not SIP at all " * 4]
                for data in junk:
                    s.sendto(data, ("127.0.0.1", gw.sip_port))
                codes = collect_finals(s, [*unknown, *plain, "too-big", "bad-version"], timeout=30)
        finally:
            snapshot = stop_gateway(gw, snap)
    finally:
        nobody_port.release()

    assert all(finals(codes.get(cid, [])) and set(finals(codes[cid])) == {404} for cid in unknown), codes
    assert all(finals(codes.get(cid, [])) and set(finals(codes[cid])) == {488} for cid in plain), codes
    assert set(finals(codes["too-big"])) == {513} and set(finals(codes["bad-version"])) == {505}, codes
    # every refusal counted ...
    assert snapshot["refused_invites"] == {"404": REFUSED, "488": REFUSED}, snapshot["refused_invites"]
    sip_junk = snapshot["malformed_by_reason"]["sip"]
    assert sip_junk.get("oversized") == 1 and sip_junk.get("bad_version") == 1, sip_junk
    assert sip_junk.get("bad_start_line", 0) + sip_junk.get("non_utf8", 0) >= 1, sip_junk
    # ... but the log shows each kind once per interval, not once (or twice) per INVITE
    lines = gw.log().splitlines()
    for text in ("no such inside user", "refusing call", " over: "):
        shown = [line for line in lines if text in line]
        print(f"{text!r}: {len(shown)} line(s)")
        assert len(shown) <= MAX_LINES_PER_KIND, (text, shown)
    summary = [line for line in lines if "gateway summary:" in line]
    assert len(summary) == 1 and f"404 x{REFUSED}, 488 x{REFUSED}" in summary[0], lines[-10:]
    assert "oversized 1" in summary[0] and "bad_version 1" in summary[0], summary


# --- RTP malformed by reason in the snapshot, over the real control socket ----------------------------------


def test_malformed_rtp_by_reason_reaches_the_snapshot_and_the_control_socket() -> None:
    async def main() -> tuple[dict[str, Any], dict[str, Any], str]:
        home = Path(tempfile.mkdtemp(prefix="vgsmall", dir="/tmp"))  # short: a Unix socket path
        user = InsideUser("bob", "sip:bob@127.0.0.1:9", "bob@127.0.0.1")
        gateway = Gateway(B2buaSettings(home=home, users=(user,)), {"bob": IdentityKey.generate()})
        bridge = Bridge(user, "inbound", "carol@127.0.0.1")
        bridge.inside_media = await MediaStream.bind("127.0.0.1")
        gateway.bridges.append(bridge)
        server = ControlServer(home / "gateway.sock", gateway.snapshot)
        await server.start()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                target = bridge.inside_media.local
                for data in [b"\x80"] * 3 + [b"\x00" * 20] * 2:  # too short for RTP; RTP version 0
                    s.sendto(data, target)
            for _ in range(100):  # bounded: the datagrams reach the loop's socket
                if sum(bridge.rtp_malformed().values()) >= 5:
                    break
                await asyncio.sleep(0.01)
            live = await asyncio.to_thread(control_request, home / "gateway.sock", "status", 5.0)
            await bridge.inside_media.stop()
            gateway._finish(bridge, "test over")  # the counts outlive the call and its sockets
            after = gateway.snapshot()
        finally:
            await server.close()
        return live, after, render_status(live)

    live, after, table = asyncio.run(asyncio.wait_for(main(), 30))
    rtp = live["malformed_by_reason"]["rtp"]
    assert rtp == {"too-short": 3, "bad-version": 2}, rtp
    assert after["malformed_by_reason"] == live["malformed_by_reason"], (after, live)
    assert after["refused_invites"] == {} and live["malformed_by_reason"]["sip"] == {}
    assert "Refused since start" in table and "malformed RTP: " in table and "malformed SIP: none" in table, table
    assert refusal_summary({}) == (
        "refused INVITEs: none; refused calls: none; malformed SIP: none; malformed RTP: none; "
        "inside media dropped: none; zone rules: none; unanswered secure calls: none"
    )
    assert refusal_summary({"zone_refusals": {"register_on_outside": 2, "pbx_on_inside": 0}}).endswith(
        "zone rules: register_on_outside 2; unanswered secure calls: none"
    )


# --- the inside phone's first packet, sent as it answers, is held, not refused ------------------------------------


@pytest.mark.interop
@requires("baresip", "sox")
@pytest.mark.integration
def test_an_inbound_gateway_call_refuses_no_rtp_packet_of_the_inside_phone(tmp_path: Path) -> None:
    clip = speech.make_variant(tmp_path / "speech8k.wav", 8000, seconds=3.0)
    with Baresip(tmp_path, user="bob", play=clip, codecs=("PCMU",)) as bob:
        gw, snap = start_gateway(tmp_path, "--user", f"bob=sip:bob@127.0.0.1:{bob.sip_port}")
        carol = None
        try:
            uri = f"sip:bob@127.0.0.1:{gw.sip_port}"
            carol = start_caller(tmp_path, "carol", uri, "--play", str(SPEECH), "--duration", "4", tap=False)
            bob.wait_event("CALL_ESTABLISHED", timeout=15.0)
            assert carol.wait(40) == 0, carol.log()
        finally:
            if carol is not None:
                carol.stop()
            snapshot = stop_gateway(gw, snap)
    (call,) = snapshot["finished"]
    assert call["direction"] == "inbound" and call["inside_codec"] == "pcmu" and call["inside_frames_in"] > 50, call
    refused = [line for line in gw.log().splitlines() if "RTP packet refused" in line or "frame refused" in line]
    assert not refused, refused  # was: "RTP packet refused: payload-type (1 so far)" at every inbound call
