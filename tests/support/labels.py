"""Helpers for the label tests (tests/gateway/test_label_topology.py): a PBX that tampers with the handshake answer
or drops the frames carrying the SAS reveal, a plain INVITE whose From display name an attacker chose, and what a
baresip phone or its wire showed."""

from __future__ import annotations

import base64
import re
import select
import socket
import threading
import time

from tests.testbed import capture
from tests.testbed.baresip import BaresipEvent
from tests.testbed.sip_mangler import redirect_media

RTP_HEADER = 12
"""In the first byte of a sealed frame's header (ratchet/frame.py: S X E C I K): an extension follows."""
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


class RevealDropper:
    """An RTP relay a PBX could be: ``redirect_offer`` / ``redirect_answer`` (a SipMangler's hooks) point both
    sides' media at it; it relays the callee's frames as they are and drops every frame of the caller's for its
    first ``block_s`` seconds, so the caller's SAS reveal does not arrive while the callee's gateway waits for it.
    (Under wire version 2 it dropped only the frames with an extension block, where the reveal travelled; in version
    3 every frame looks alike, so withholding the reveal means withholding everything.) Both sides must go through
    it: a gateway latches onto the authenticated source. Loopback, own thread."""

    def __init__(self, lifetime_s: float = 60.0, block_s: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.target: tuple[str, int] | None = None
        """The callee's RTP address (its answer)."""
        self.caller: tuple[str, int] | None = None
        """The caller's RTP address (its offer)."""
        self.block_s = block_s
        self.dropped = 0
        self.relayed = 0
        self._first: float | None = None
        self._deadline = time.monotonic() + lifetime_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reveal-dropper", daemon=True)

    def redirect_offer(self, sdp: str) -> str:
        new, self.caller = redirect_media(sdp, "127.0.0.1", int(self.sock.getsockname()[1]))
        return new

    def redirect_answer(self, sdp: str) -> str:
        new, self.target = redirect_media(sdp, "127.0.0.1", int(self.sock.getsockname()[1]))
        return new

    def __enter__(self) -> RevealDropper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if not ready:
                continue
            data, addr = self.sock.recvfrom(65535)
            if self.target is None or self.caller is None or len(data) < RTP_HEADER + 4:
                continue
            if addr == self.target:
                self.sock.sendto(data, self.caller)
                continue
            now = time.monotonic()
            self._first = now if self._first is None else self._first
            if now - self._first < self.block_s:
                self.dropped += 1
                continue
            self.relayed += 1
            self.sock.sendto(data, self.target)


SHOWN_TAGS = {
    "verified": "SAFE",
    "known": "E2E",
    "first-contact": "NEW",
    "key-changed": "!KEY",
    "not-secure": "INSECURE",
    "unverifiable": "NO SAS",
}
"""The scheme of docs/OPERATIONS.md ("What the phones show"), written out here so a change to it shows up."""


def display_for(call: dict[str, object], name: str) -> str:
    """What a phone should have been shown for a gateway's finished ``call`` (its snapshot) with the peer ``name``:
    the label of the call's recorded kind (with its SAS where the scheme shows one), then the name."""
    tag = SHOWN_TAGS[str(call["label"])]
    sas = call.get("sas")
    with_sas = call["label"] not in ("not-secure", "unverifiable") and sas
    return f"[{tag} {sas}] {name}" if with_sas else f"[{tag}] {name}"
