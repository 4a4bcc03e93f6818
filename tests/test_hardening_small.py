"""Small hardening fixes, each against the real thing (sippy on loopback, real processes, real sockets):

- refused INVITEs at a gateway are logged rate-limited but each one counted (snapshot ``refused_invites``);
- ``voipgw listen`` answers an INVITE that arrives during its call with 486 Busy Here;
- a SIP datagram over 8192 bytes gets 513 Message Too Large (or is dropped when it cannot be answered);
- the SIP UDP socket's receive buffer is raised above the kernel default;
- malformed SIP and RTP by reason appear in the gateway's snapshot, status table and shutdown summary;
- usage and configuration errors exit 2 in every mode, runtime failures 1;
- an inbound gateway call no longer refuses the inside phone's first RTP packet (sent as it answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratchet.identity import IdentityKey
from tests.hardening import collect_responses
from tests.phones import SPEECH, start_caller, start_listener, voipgw_argv
from tests.test_gateway_calls import start_gateway
from tests.test_hardening_sip import PLAIN_SDP, finals, sip
from tests.test_sip_malformed import request
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from tests.testbed.gateway_proc import stop_with_snapshot as stop_gateway
from tests.testbed.ports import reserve_block
from tests.testbed.sip_peer import running_stack
from voipgw.audio.codecs import get_codec
from voipgw.gateway import B2buaSettings, Bridge, Gateway, InsideUser
from voipgw.media import MediaError, MediaStream, PlainProtector
from voipgw.ops.control import ControlServer, refusal_summary, render_status
from voipgw.ops.control import request as control_request
from voipgw.rtp.packet import build_rtp
from voipgw.sip import SipStats
from voipgw.sip.guard import MAX_DATAGRAM, DatagramGuard, Drop, Reply

REFUSED = 40
"""INVITEs of each kind sent at the gateway: far more than the log may show."""
MAX_LINES_PER_KIND = 3
"""One line per kind per 10 s interval (a slow run may cross an interval boundary or two)."""
REPLY_WAIT_S = 2.0
RUN_TIMEOUT_S = 60.0


def _collect_finals(s: socket.socket, call_ids: list[str], timeout: float) -> dict[str, list[int]]:
    return collect_responses(s, lambda c: all(finals(c.get(cid, [])) for cid in call_ids), timeout=timeout)


# --- 1 and 5: a gateway refusing a flood of INVITEs, and junk SIP, as a real process --------------------------


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
                codes = _collect_finals(s, [*unknown, *plain, "too-big", "bad-version"], timeout=30)
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


# --- 5: RTP malformed by reason in the snapshot, over the real control socket ----------------------------------


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
    assert refusal_summary({}) == "refused INVITEs: none; malformed SIP: none; malformed RTP: none"


# --- 2: listen mode is busy during its call ------------------------------------------------------------------------


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
            codes = _collect_finals(s, ids, timeout=10)
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


# --- 3 and 4: the SIP socket itself -------------------------------------------------------------------------------


def _exchange(port: int, data: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(REPLY_WAIT_S)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


@pytest.mark.integration
def test_oversized_datagrams_get_513_when_answerable_else_are_dropped_and_the_buffer_is_raised() -> None:
    over = b"v=0\r\n" + b"a=x:" + b"y" * MAX_DATAGRAM + b"\r\n"

    def options(size: int) -> bytes:  # rport: sippy answers an accepted request at its Via port otherwise
        return request(body=b"z" * size).replace(b";branch=", b";rport;branch=")

    fill = next(n for n in range(MAX_DATAGRAM) if len(options(n)) >= MAX_DATAGRAM)
    assert len(options(fill)) == MAX_DATAGRAM
    cases = {
        "one byte over the limit": (options(fill + 1), 513),
        "an INVITE with a huge SDP": (request("INVITE", body=over), 513),
        "60 kB": (request(body=b"z" * 60000), 513),
        "a response": (b"SIP/2.0 200 OK\r\n" + request()[30:] + over, None),
        "an ACK": (request("ACK", body=over), None),
        "no Via": (request(body=over).replace(b"Via:", b"Xia:"), None),
        "at the limit (accepted)": (options(fill), 200),
    }

    async def main() -> tuple[dict[str, bytes | None], int | None, int, int, int]:
        async with running_stack() as stack:
            replies = {
                name: await asyncio.to_thread(_exchange, stack.local_port, data) for name, (data, _) in cases.items()
            }
            st = stack.stats
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fresh:
                default = fresh.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            return replies, stack.udp_receive_buffer, default, st.oversized, st.replied_513

    replies, rcvbuf, default, oversized, replied_513 = asyncio.run(asyncio.wait_for(main(), 60))
    for name, (data, want) in cases.items():
        reply = replies[name]
        first = reply.split(b"\r\n", 1)[0] if reply else "no reply"
        print(f"{name} ({len(data)} B): {first!r}")
        if want is None:
            assert reply is None, (name, reply)
            continue
        assert reply is not None and reply.startswith(f"SIP/2.0 {want} ".encode()), (name, reply)
        if want == 513:
            assert b"Message Too Large" in reply and b"Call-ID: junk-1" in reply and b"Warning: 399 " in reply
    assert oversized == 6 and replied_513 == 3, (oversized, replied_513)
    print(f"SIP UDP SO_RCVBUF {rcvbuf} (a fresh socket: {default})")
    assert rcvbuf is not None and rcvbuf > default, (rcvbuf, default)


# --- 7: exit codes ------------------------------------------------------------------------------------------------


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        voipgw_argv(home, *args), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL
    )


def _corrupt_identity(home: Path) -> Path:
    home.mkdir(parents=True, mode=0o700)
    key = home / "identity.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    key.chmod(0o600)
    return home


@pytest.mark.integration
def test_usage_and_configuration_errors_exit_2_in_every_mode_runtime_failures_1(tmp_path: Path) -> None:
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a SIP address in use
    held.bind(("127.0.0.1", 0))
    busy = f"127.0.0.1:{held.getsockname()[1]}"
    nobody = reserve_block(1)
    rec = str(tmp_path / "x.wav")
    user = "bob=sip:bob@127.0.0.1:9"
    try:
        cases = [
            ("listen: bad --listen", tmp_path / "h1", ["listen", "--listen", "nonsense", "--record", rec], 2),
            ("listen: address in use", tmp_path / "h2", ["listen", "--listen", busy, "--record", rec], 2),
            ("listen: unusable identity", _corrupt_identity(tmp_path / "h3"), ["listen", "--record", rec], 2),
            ("call: unusable identity", _corrupt_identity(tmp_path / "h4"), ["call", "sip:x@127.0.0.1:9"], 2),
            ("gateway flags: no user", tmp_path / "h5", ["gateway", "--listen", "127.0.0.1:0"], 2),
            ("gateway flags: address in use", tmp_path / "h6", ["gateway", "--listen", busy, "--user", user], 2),
            (
                "gateway flags: unusable identity",
                _corrupt_identity(tmp_path / "h7" / "users" / "bob").parent.parent,
                ["gateway", "--listen", "127.0.0.1:0", "--user", user],
                2,
            ),
            ("gateway --config: missing file", tmp_path / "h8", ["gateway", "--config", str(tmp_path / "no.toml")], 2),
            ("unknown option (argparse)", tmp_path / "h9", ["listen", "--no-such-option"], 2),
            ("status: no gateway running", tmp_path / "h10", ["gateway", "status", "--socket", "/nonexistent.sock"], 1),
            (
                "call: nobody answers",
                tmp_path / "h11",
                [
                    "call",
                    f"sip:x@127.0.0.1:{nobody[0]}",
                    "--listen",
                    "127.0.0.1:0",
                    "--no-answer-timeout",
                    "1",
                    "--record",
                    rec,
                ],
                1,
            ),
        ]
        results = {name: (_run(home, *argv), want) for name, home, argv, want in cases}
    finally:
        held.close()
        nobody.release()
    for name, (out, want) in results.items():
        print(f"{name}: exit {out.returncode}: {out.stderr.strip().splitlines()[-1:]}")
        assert out.returncode == want, (name, out.returncode, out.stderr)
        assert "Traceback" not in out.stderr, (name, out.stderr)
    for cmd in ("listen", "call", "gateway"):
        helped = _run(tmp_path / "help", cmd, "--help")
        text = " ".join(helped.stdout.split())  # argparse wraps the epilog
        assert helped.returncode == 0 and "exit status" in text and "2 usage or configuration error" in text, text


@given(st.binary(max_size=300), st.booleans())
@settings(max_examples=100, deadline=None)
def test_an_oversized_datagram_is_never_accepted(junk: bytes, as_request: bool) -> None:
    data = request(body=junk + b"z" * MAX_DATAGRAM) if as_request else junk + bytes(MAX_DATAGRAM + 1)
    stats = SipStats()
    verdict = DatagramGuard("127.0.0.1", "t", stats).check(data, ("127.0.0.1", 9))
    assert isinstance(verdict, Reply | Drop), verdict
    if as_request:
        assert isinstance(verdict, Reply) and verdict.code == 513 and verdict.data.startswith(b"SIP/2.0 513 ")
    assert stats.oversized == stats.malformed == 1 and stats.malformed_by_reason() == {"oversized": 1}
    # a stream transport (TCP, TLS) frames its messages with its own limits: no datagram limit there
    streamed = DatagramGuard("127.0.0.1", "t", SipStats()).check(data, ("127.0.0.1", 9), None)
    assert not (isinstance(streamed, Reply) and streamed.code == 513), streamed


# --- 6: the inside phone's first packet, sent as it answers, is held, not refused ---------------------------------


def test_a_stream_bound_before_its_payload_type_is_known_holds_early_packets_of_any_type() -> None:
    async def main() -> tuple[dict[str, int], int, dict[str, int], bool, dict[str, int]]:
        undecided = await MediaStream.bind("127.0.0.1", payload_type=None)
        default = await MediaStream.bind("127.0.0.1")  # Opus (111) until start(): the old behaviour, kept
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for stream in (undecided, default):
                    s.sendto(build_rtp(0, 1, 160, 7, b"\xff" * 160), stream.local)  # PCMU, as baresip answers
                    s.sendto(build_rtp(13, 2, 320, 7, b"\x40"), stream.local)  # comfort noise: not negotiated
            for _ in range(100):  # bounded: both datagrams reached each socket
                if undecided.stats.frames_received >= 2 and sum(default.endpoint.stats.refused.values()) >= 2:
                    break
                await asyncio.sleep(0.01)
            refused_before = dict(undecided.endpoint.stats.refused)
            with contextlib.suppress(MediaError):
                await undecided.start(PlainProtector(), None, source=None, sink=None, allow_insecure=True)
            unstarted = not undecided.running  # a stream without a payload type cannot start
            await undecided.start(
                PlainProtector(), None, source=None, sink=None, allow_insecure=True, codec=get_codec("pcmu"),
                payload_type=0,
            )  # fmt: skip
            return (
                refused_before,
                undecided.stats.frames_opened,
                dict(undecided.endpoint.stats.refused),
                unstarted,
                dict(default.endpoint.stats.refused),
            )
        finally:
            await undecided.stop()
            await default.stop()

    before, opened, after, unstarted, default = asyncio.run(asyncio.wait_for(main(), 20))
    assert before == {}, before  # nothing refused while the answer was pending
    assert unstarted
    assert opened == 1 and after == {"payload-type": 1}, (opened, after)  # PCMU kept, the CN packet refused
    assert default == {"payload-type": 2}, default


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
