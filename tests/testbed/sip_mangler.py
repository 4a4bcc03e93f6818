"""A two-party SIP relay for tests that rewrites SDP bodies in flight: a hostile or media-rewriting middlebox.

Datagrams from the caller go to the callee and everything from the callee goes back to the caller; ``on_offer``
and ``on_answer`` may rewrite SDP bodies (Content-Length is fixed up), and ``on_from_callee`` may drop what the
callee sends. It runs in its own thread with a bounded lifetime and binds loopback only.
"""

from __future__ import annotations

import hashlib
import re
import select
import socket
import threading
import time
from collections.abc import Callable

SdpHook = Callable[[str], str]
DatagramHook = Callable[[bytes], bytes | None]
"""Sees a datagram before it is relayed: returns what to relay, or None to drop it."""


def _rewrite_body(msg: bytes, hook: SdpHook) -> bytes:
    head, sep, body = msg.partition(b"\r\n\r\n")
    if not sep or not body:
        return msg
    new_body = hook(body.decode()).encode()
    head = re.sub(rb"(?im)^(content-length|l)\s*:\s*\d+", b"Content-Length: %d" % len(new_body), head)
    return head + sep + new_body


class SipMangler:
    def __init__(
        self,
        callee: tuple[str, int],
        *,
        on_offer: SdpHook | None = None,
        on_answer: SdpHook | None = None,
        on_from_callee: DatagramHook | None = None,
        lifetime_s: float = 60.0,
    ) -> None:
        self.callee = callee
        self.caller: tuple[str, int] | None = None
        self.on_offer = on_offer
        self.on_answer = on_answer
        self.on_from_callee = on_from_callee
        self.offers_rewritten = 0
        self.answers_rewritten = 0
        self.in_path = False
        """Add our own Via to the caller's requests, so the callee's responses (the answer) pass here too
        (without it they go straight to the caller's Via address)."""
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._deadline = time.monotonic() + lifetime_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sip-mangler", daemon=True)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def __enter__(self) -> SipMangler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            ready, _, _ = select.select([self._sock], [], [], 0.1)
            if not ready:
                continue
            data, addr = self._sock.recvfrom(65535)
            if addr == self.callee:
                if self.on_from_callee is not None:
                    kept = self.on_from_callee(data)
                    if kept is None:
                        continue
                    data = kept
                if self.caller is None:
                    continue
                data = self._strip_via(data)
                # the answer SDP: in the 200 OK, or earlier in a 183 (the early dialog, issue 13)
                answer = data.startswith(b"SIP/2.0 200") or data.startswith(b"SIP/2.0 183")
                if self.on_answer is not None and answer and b"m=audio" in data:
                    data = _rewrite_body(data, self.on_answer)
                    self.answers_rewritten += 1
                self._sock.sendto(data, self.caller)
            else:
                self.caller = addr
                if self.on_offer is not None and data.startswith(b"INVITE ") and b"m=audio" in data:
                    data = _rewrite_body(data, self.on_offer)
                    self.offers_rewritten += 1
                if self.in_path and not data.startswith(b"SIP/2.0 "):
                    data = data.replace(b"\r\nVia:", self._via(data) + b"\r\nVia:", 1)
                self._sock.sendto(data, self.callee)

    def _via(self, request: bytes) -> bytes:
        """Our Via for a request, its branch derived from the request's own top branch, as a stateless proxy does
        (RFC 3261 16.11): a CANCEL then carries the same branch as the INVITE it cancels, so the callee matches it."""
        m = re.search(rb"\r\nVia:[^\r]*;branch=([^;\r]+)", request, re.IGNORECASE)
        seed = m.group(1) if m else b"%d" % time.monotonic_ns()
        branch = hashlib.sha1(seed).hexdigest()[:16].encode()
        return b"\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-mangler%s" % (self.port, branch)

    def _strip_via(self, response: bytes) -> bytes:
        """A response with our Via on top loses it (the caller never saw it)."""
        return re.sub(rb"\r\nVia: SIP/2\.0/UDP 127\.0\.0\.1:%d;[^\r]*" % self.port, b"", response, count=1)


def redirect_media(sdp: str, host: str, port: int) -> tuple[str, tuple[str, int]]:
    """Point an SDP's audio at ``host:port`` (a relay); return the new SDP and the original RTP address."""
    m = re.search(r"m=audio (\d+)", sdp)
    c = re.search(r"c=IN IP4 (\S+)", sdp)
    if m is None or c is None:
        raise ValueError("no audio stream or connection line to redirect")
    original = (c.group(1), int(m.group(1)))
    sdp = re.sub(r"m=audio \d+", f"m=audio {port}", sdp)
    return re.sub(r"c=IN IP4 \S+", f"c=IN IP4 {host}", sdp), original
