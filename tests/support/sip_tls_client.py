"""Test helper: a SIP client over one TLS connection, speaking SIP by hand (blocking; call it from a thread), for
tests that send requests straight to a TLS listener of a voipgw stack or gateway."""

from __future__ import annotations

import secrets
import socket
import ssl
from pathlib import Path

WAIT_S = 5.0


def sdp(port: int) -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )


def header(text: str, name: str) -> str:
    for line in text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        n, _, v = line.partition(":")
        if n.strip().lower() == name:
            return v.strip()
    raise AssertionError(f"no {name} in {text}")


class TlsSipClient:
    """One TLS connection to a listener, speaking SIP by hand (blocking; use from a thread)."""

    def __init__(self, port: int, ca: Path, source: str = "127.0.0.1") -> None:
        """Connect from ``source`` (e.g. the attacker's 127.0.0.66) to ``127.0.0.1:port``, checking its certificate
        against ``ca``."""
        ctx = ssl.create_default_context(cafile=str(ca))
        raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S, source_address=(source, 0))
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.port = self.sock.getsockname()[1]
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def next_message(self) -> str:
        while True:
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if sep:
                length = int(header(head.decode() + "\r\n\r\n", "content-length") or 0)
                if len(rest) >= length:
                    self.buf = rest[length:]
                    return (head + sep + rest[:length]).decode()
            chunk = self.sock.recv(65535)
            if not chunk:
                raise AssertionError("connection closed")
            self.buf += chunk

    def final(self, cseq_method: str) -> str:
        """The next final response to ``cseq_method``, or the next ``cseq_method`` request."""
        while True:
            text = self.next_message()
            if not header(text, "cseq").endswith(f" {cseq_method}") or text.startswith("SIP/2.0 1"):
                continue
            return text

    def request(self, method: str, port: int, call_id: str, cseq: int = 1, to_tag: str = "", user: str = "bob") -> str:
        body = sdp(self.port + 2) if method == "INVITE" else ""
        to = f"<sip:{user}@127.0.0.1:{port}>" + (f";tag={to_tag}" if to_tag else "")
        contact = f"<sip:alice@127.0.0.1:{self.port};transport=tls>"
        text = (
            f"{method} sip:{user}@127.0.0.1:{port};transport=tls SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
            f"From: <sip:alice@127.0.0.1>;tag=ph{call_id[:6]}\r\nTo: {to}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: {contact}\r\nMax-Forwards: 70\r\n"
            + ("Expires: 120\r\n" if method == "REGISTER" else "")
            + ("Content-Type: application/sdp\r\n" if body else "")
            + f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        self.send(text)
        return text
