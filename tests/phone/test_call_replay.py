"""A recorded offer replayed to a restarted phone (issue 15, "replays and lock-outs"). bob answers alice's call,
exits, and starts again on the same home; an attacker at 127.0.0.66 then sends an INVITE carrying alice's recorded
offer (same Call-ID, From alice, within its freshness window). With the replay cache in memory only, the new
process answered it; with the home's replay table it is refused as ``replayed-nonce`` before anything rings."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from tests.support.phones import SPEECH, start_caller, start_listener
from tests.testbed.sip_mangler import SipMangler

pytestmark = [pytest.mark.integration, pytest.mark.hardening]
ATTACKER = "127.0.0.66"


def invite(call_id: str, bob_port: int, my_port: int, sdp: str) -> bytes:
    body = sdp.encode()
    return (
        f"INVITE sip:bob@127.0.0.1:{bob_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {ATTACKER}:{my_port};rport;branch=z9hG4bK-replay-1\r\n"
        f"From: <sip:alice@127.0.0.1>;tag=replayed\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:alice@{ATTACKER}:{my_port}>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def final_response(sock: socket.socket) -> bytes:
    for _ in range(20):
        data = sock.recv(65536)
        code = int(data.split(b" ", 2)[1])
        if code >= 200:
            return data
    raise AssertionError("no final response")


def test_an_offer_replayed_to_a_restarted_phone_is_refused(tmp_path: Path) -> None:
    offers: list[str] = []

    def keep(sdp: str) -> str:
        offers.append(sdp)
        return sdp

    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), record=False, tap=False)
    with SipMangler(("127.0.0.1", bob.sip_port), on_offer=keep) as relay:
        alice = start_caller(
            tmp_path, "alice", f"sip:bob@127.0.0.1:{relay.port}", "--play", str(SPEECH), "--duration", "1",
            record=False, tap=False,
        )  # fmt: skip
        try:
            assert alice.wait(40) == 0, alice.log()
            assert bob.wait(15) == 0, bob.log()
        finally:
            alice.stop()
            bob.stop()
    call_id = alice.summary()["call_id"]
    assert offers and "a=voipgw:" in offers[0]

    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), record=False, tap=False)  # same home, new process
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((ATTACKER, 0))
            sock.settimeout(10.0)
            sock.sendto(invite(call_id, bob.sip_port, sock.getsockname()[1], offers[0]), ("127.0.0.1", bob.sip_port))
            reply = final_response(sock).decode(errors="replace")
    finally:
        bob.stop()
    print(reply.split("\r\n")[0], re.findall(r"(?im)^warning:.*$", reply))
    assert reply.startswith("SIP/2.0 488"), reply[:400]
    assert "replayed-nonce" in reply, reply[:600]
    assert "replayed-nonce" in bob.log()
