"""The hybrid-suite call over SIP/TLS through a real Kamailio, between two voipgw processes: secure audio, no
readable SIP and no clear audio on the wire; junk on the TLS port does not stop the phone taking calls; and a
listener that demands client certificates refuses a client without one."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest

from tests.support.kamailio_calls import USERS
from tests.support.phone_calls import hostile_connections, wait_for_call
from tests.support.phones import SPEECH, PhoneProc, assert_secure_call, start_caller, start_listener
from tests.support.pki import Pki, make_pki
from tests.support.requires import requires
from tests.support.sniffer import LoopbackSniffer, tcp_streams
from tests.testbed.capture import CapturedPacket, looks_like_plain_audio, parse_rtp
from tests.testbed.kamailio import Kamailio
from tests.testbed.ports import reserve_block
from tests.testbed.sip_peer import running_stack
from voipgw.demo import read_wire
from voipgw.sip import TlsOptions
from voipgw.sip.framing import Message, StreamFramer

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio")]

HOSTILE_IDLE = 200
JUNK = (b"\x16\x03\x01\x02\x00" + b"\x00" * 600, b"INVITE sip:x SIP/2.0\r\n\r\n", b"\x00" * 70000)


def tls_config(tmp_path: Path, pki: Pki, name: str, listen: bool, port: int = 0) -> Path:
    cfg = tmp_path / f"{name}-tls.toml"
    lines = ['aor = "x@127.0.0.1"', 'suites = ["x25519", "x25519-mlkem768"]', 'transport = "tls"']
    lines.append(f"tls_port = {port}")
    lines.append(f'tls_ca_file = "{pki.ca}"')
    if listen:
        lines += [f'tls_cert_file = "{pki.phone[0]}"', f'tls_key_file = "{pki.phone[1]}"']
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def run_tls_call(tmp_path: Path, k: Kamailio, pki: Pki, harass: bool = False) -> tuple[PhoneProc, PhoneProc]:
    reg = ["--registrar", f"127.0.0.1:{k.tls_port}"]
    block = reserve_block(1)
    tls_port = block[0]
    try:
        bob = start_listener(
            tmp_path, "bob", "--play", str(SPEECH), *reg, "--username", "bob", "--password", "bobpw",
            "--config", str(tls_config(tmp_path, pki, "bob", listen=True, port=tls_port)),
        )  # fmt: skip
    finally:
        block.release()
    try:
        # send_may_fail: the stack may already have dropped a junk connection when its bytes go out
        with hostile_connections(tls_port, JUNK if harass else (), HOSTILE_IDLE if harass else 0, send_may_fail=True):
            alice = start_caller(
                tmp_path, "alice", f"sip:bob@127.0.0.1:{k.port}", "--play", str(SPEECH), *reg,
                "--username", "alice", "--password", "alicepw",
                "--config", str(tls_config(tmp_path, pki, "alice", listen=True)),
            )  # fmt: skip
            wait_for_call(alice, bob, 60, 20)
    finally:
        bob.stop()
    return alice, bob


def test_hybrid_suite_call_over_tls_through_kamailio(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with Kamailio(tmp_path, users=USERS, auth=True, tls_cert=pki.kamailio) as k, LoopbackSniffer() as sniff:
        alice, bob = run_tls_call(tmp_path, k, pki)
    assert_secure_call(alice, bob)
    assert alice.summary()["suite"] == bob.summary()["suite"] == "x25519-mlkem768"
    packets = sniff.packets
    assert not [p for p in packets if p.fragment]
    ports = {k.tls_port, k.port, alice.sip_port, bob.sip_port}
    # All SIP went over TLS: no clear-text SIP on any TCP or UDP flow of the call.
    assert not [p for p in packets if p.proto == 17 and {p.src_port, p.dst_port} & ports and p.payload[:4] != b"\r\n"]
    streams = tcp_streams(packets, {k.tls_port})
    assert sum(len(v) for v in streams.values()) > 6000  # the REGISTERs, the hybrid INVITE and its 200 OK
    assert not [v for v in streams.values() if b"SIP/2.0" in v or b"a=voipgw" in v]
    # The RTP went by UDP between the phones (found by the payloads their wire taps kept, since loopback is
    # shared): sealed, so it does not decode to the speech.
    ours = set(read_wire(alice.wire)) | set(read_wire(bob.wire))
    rtp = []
    for p in packets:
        parsed = parse_rtp(p.payload) if p.proto == 17 else None
        if parsed is not None and parsed.payload in ours:
            rtp.append(CapturedPacket(p.src_port, p.dst_port, p.payload))
    verdict = looks_like_plain_audio(rtp, SPEECH)
    assert len(verdict.streams) >= 2 and verdict.correlation < 0.2, verdict


def test_junk_and_idle_connections_on_the_tls_port_leave_the_phone_taking_calls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with Kamailio(tmp_path, users=USERS, auth=True, tls_cert=pki.kamailio) as k:
        alice, bob = run_tls_call(tmp_path, k, pki, harass=True)
    assert_secure_call(alice, bob)
    assert "Traceback" not in bob.log()


def test_a_listener_that_demands_client_certificates_refuses_a_client_without_one(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    opts = TlsOptions(ca_file=str(pki.ca), cert_file=str(pki.phone[0]), key_file=str(pki.phone[1]), verify_clients=True)
    options = (
        b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bKcc\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: cc\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )

    def client(port: int, with_cert: bool) -> bytes:
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        if with_cert:
            ctx.load_cert_chain(str(pki.kamailio[0]), str(pki.kamailio[1]))
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
            ):
                s.sendall(options)
                framer = StreamFramer()
                while data := s.recv(65536):
                    for frame in framer.feed(data):
                        if isinstance(frame, Message):
                            return frame.data
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass  # TLS 1.3 reports a refused client certificate after the client's side of the handshake
        return b""

    async def main() -> None:
        async with running_stack(tls=opts) as stack:
            port = stack.tls_port
            assert port is not None
            reply = await asyncio.to_thread(client, port, True)
            assert reply.startswith(b"SIP/2.0 200 "), reply
            assert await asyncio.to_thread(client, port, False) == b""
            stats = stack.tls_stats
            assert stats is not None and stats.accepted == 1 and stats.messages_in == 1, stats

    asyncio.run(asyncio.wait_for(main(), 30.0))
