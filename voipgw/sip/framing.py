"""SIP message framing on a byte stream (RFC 3261 §18.3, RFC 5626 §3.5.1 CRLF keep-alives), with size limits.

Pure bytes in, messages and keep-alive events out: never touches sockets, threads, clocks or sippy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from voipgw.sip.events import SipError

MAX_HEADER_BYTES = 16 * 1024
"""Start line plus headers plus the empty line; a peer that sends more without an empty line is cut off."""
MAX_BODY_BYTES = 64 * 1024
"""The largest Content-Length accepted (a hybrid post-quantum SDP is about 2 KB, its INVITE 2.6-2.8 KB)."""

_CRLF = b"\r\n"
_PING = b"\r\n\r\n"
_END_OF_HEAD = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(.*?)[ \t]*$", re.IGNORECASE)
_TOP_VIA = re.compile(rb"^(?:via|v)[ \t]*:([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_BRANCH = re.compile(rb";[ \t]*branch[ \t]*=[ \t]*([^;, \t]+)", re.IGNORECASE)


class FramingError(SipError):
    """The stream cannot be framed any further; the connection must be closed."""

    kind = "framing"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class HeaderTooLarge(FramingError):
    kind = "header_too_large"


class BodyTooLarge(FramingError):
    kind = "body_too_large"


class MissingContentLength(FramingError):
    kind = "missing_content_length"


class BadContentLength(FramingError):
    kind = "bad_content_length"


@dataclass(frozen=True, slots=True)
class Message:
    """One complete SIP message: start line, headers, empty line and exactly Content-Length body bytes."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """A CRLFCRLF keep-alive between messages; RFC 5626 asks the receiver to answer with one CRLF (a pong)."""


Frame = Message | Ping


class StreamFramer:
    """Feed it the bytes of one connection in order; it returns whole messages and keep-alive pings.

    After a FramingError the framer is dead (the byte stream has lost its framing) and keeps raising.
    """

    def __init__(self, max_header: int = MAX_HEADER_BYTES, max_body: int = MAX_BODY_BYTES) -> None:
        self.max_header = max_header
        self.max_body = max_body
        self._buf = bytearray()
        self._scanned = 0
        """How far the search for the end of the headers has got (so a trickle is not rescanned: O(n))."""
        self._total: int | None = None
        """Length of the message being received, once its headers are complete."""
        self._dead: FramingError | None = None

    @property
    def in_message(self) -> bool:
        """True while part of a message (not just keep-alive CRLFs) is buffered."""
        return bool(self._buf.lstrip(b"\r\n"))

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._dead is not None:
            raise self._dead
        self._buf += data
        out: list[Frame] = []
        try:
            while self._step(out):
                pass
        except FramingError as exc:
            self._dead = exc
            self._buf.clear()
            raise
        return out

    def _step(self, out: list[Frame]) -> bool:
        buf = self._buf
        if self._total is None:
            if buf.startswith(_CRLF):
                if buf.startswith(_PING):
                    del buf[:4]
                    out.append(Ping())
                    return True
                if len(buf) < 4 and _PING.startswith(bytes(buf)):
                    return False  # maybe the first half of a ping: wait for the rest
                del buf[:2]  # a lone CRLF: a pong, or the blank line RFC 3261 §7.5 lets precede a message
                self._scanned = 0
                return True
            end = buf.find(_END_OF_HEAD, max(0, self._scanned - 3))
            if end < 0:
                self._scanned = len(buf)
                if len(buf) > self.max_header:
                    raise HeaderTooLarge(f"no end of headers within {self.max_header} bytes")
                return False
            head_len = end + 4
            if head_len > self.max_header:
                raise HeaderTooLarge(f"headers of {head_len} bytes exceed {self.max_header}")
            self._total = head_len + self._content_length(bytes(buf[:end]))
        if len(buf) < self._total:
            return False
        out.append(Message(bytes(buf[: self._total])))
        del buf[: self._total]
        self._total = None
        self._scanned = 0
        return True

    def _content_length(self, head: bytes) -> int:
        values: set[bytes] = set()
        for line in _unfold(head).split(_CRLF)[1:]:
            m = _CONTENT_LENGTH.match(line)
            if m is not None:
                values.add(m.group(1))
        if not values:
            raise MissingContentLength("a message on a stream must carry Content-Length (RFC 3261 §20.14)")
        if len(values) > 1:
            raise BadContentLength("conflicting Content-Length headers")
        value = values.pop()
        if not value.isdigit() or len(value) > 9:
            raise BadContentLength(f"Content-Length {value[:20]!r} is not a number")
        length = int(value)
        if length > self.max_body:
            raise BodyTooLarge(f"Content-Length {length} exceeds {self.max_body}")
        return length


def _unfold(head: bytes) -> bytes:
    """Join RFC 3261 §7.3.1 continuation lines onto the header they continue."""
    return re.sub(rb"\r\n[ \t]+", b" ", head)


def top_via_branch(message: bytes) -> str | None:
    """The branch parameter of the first Via of a framed message (a response carries the request's)."""
    head_end = message.find(_END_OF_HEAD)
    head = message if head_end < 0 else message[:head_end]
    m = _TOP_VIA.search(_unfold(head))
    if m is None:
        return None
    b = _BRANCH.search(m.group(1))
    return None if b is None else b.group(1).decode("latin-1")
