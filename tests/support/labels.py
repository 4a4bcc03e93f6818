"""Helpers for the label tests (tests/gateway/test_label_topology.py): a PBX that tampers with the handshake answer,
a plain INVITE whose From display name an attacker chose, and what a baresip phone or its wire showed."""

from __future__ import annotations

import base64
import re
import socket

from tests.testbed import capture
from tests.testbed.baresip import BaresipEvent

ATTACKER = "127.0.0.66"
"""Attacker traffic comes from its own loopback address (docs/OPERATIONS.md threat model)."""
PLAIN_SDP = (
    "v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
)


def tamper_answer(sdp: str) -> str:
    """What a tampering PBX does to the answer: flip one bit in the middle of its handshake attribute (signed)."""

    def flip(m: re.Match[str]) -> str:
        raw = bytearray(base64.urlsafe_b64decode(m.group(1) + "=" * (-len(m.group(1)) % 4)))
        raw[len(raw) // 2] ^= 0x40
        return "a=voipgw:" + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")

    return re.sub(r"a=voipgw:([A-Za-z0-9_-]+)", flip, sdp)


def plain_invite(sock: socket.socket, to: tuple[str, int], call_id: str, display: str, from_user: str,
                 to_user: str) -> None:  # fmt: skip
    """Send a plain (no key exchange) INVITE from ``sock`` whose From display name is ``display`` byte for byte
    (quoted, with whatever it holds)."""
    host, port = sock.getsockname()
    body = PLAIN_SDP.format(host=host, port=port + 2)
    msg = (
        f"INVITE sip:{to_user}@{to[0]}:{to[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK-{call_id}\r\n"
        f'From: "{display}" <sip:{from_user}@127.0.0.1>;tag=a{call_id[:8]}\r\n'
        f"To: <sip:{to_user}@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:{from_user}@{host}:{port}>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    )
    sock.sendto(msg.encode("utf-8", "surrogateescape"), to)


def shown_name(event: BaresipEvent) -> str:
    """What a baresip phone shows as the other party of ``event``."""
    return str(event.raw.get("peerdisplayname", ""))


def sip_messages(packets: list[capture.CapturedPacket], start: bytes) -> list[str]:
    """The SIP messages on the wire that start with ``start`` (``b"INVITE "``, ``b"SIP/2.0 200"``), as text."""
    return [p.payload.decode(errors="replace") for p in packets if p.payload.startswith(start)]


def header(message: str, name: str) -> str:
    """The first ``name:`` header's value in a SIP message ("" when absent)."""
    m = re.search(rf"(?im)^{re.escape(name)}\s*:\s*(.*?)\r?$", message)
    return m.group(1) if m else ""
