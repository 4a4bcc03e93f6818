"""A bare SIP user agent on raw UDP sockets, for proving what a PBX test bed does to a call: it sends exactly the
INVITE/ACK/BYE it is told to, answers with exactly the SDP it is given, keeps every message it received verbatim,
and sends and receives RTP on its own socket.

No SIP stack, no retransmission (loopback does not lose datagrams), no auth: only for test beds without digest
auth. Owns its two sockets (closed by ``close()``); binds 127.0.0.1 only.
"""

from __future__ import annotations

import re
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field
from types import TracebackType

RECV_TIMEOUT_S = 5.0
RTP_HEADER = struct.Struct("!BBHII")


@dataclass(frozen=True)
class SipMessage:
    """One received SIP message, as it arrived."""

    raw: str
    start: str
    headers: list[tuple[str, str]]
    body: str
    source: tuple[str, int]

    @property
    def is_response(self) -> bool:
        return self.start.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        return int(self.start.split()[1]) if self.is_response else 0

    @property
    def method(self) -> str:
        """The request's method, or the CSeq method of a response."""
        if self.is_response:
            return self.header("CSeq").split()[1].upper()
        return self.start.split()[0].upper()

    def all(self, name: str) -> list[str]:
        compact = {"call-id": "i", "via": "v", "from": "f", "to": "t", "contact": "m", "content-type": "c"}
        names = {name.lower(), compact.get(name.lower(), name.lower())}
        values: list[str] = []
        for key, value in self.headers:
            if key.lower() in names:
                values.extend(v.strip() for v in _split_commas(value))
        return values

    def header(self, name: str) -> str:
        values = self.all(name)
        if not values:
            raise KeyError(f"no {name} header in:\n{self.raw[:600]}")
        return values[0]

    @property
    def call_id(self) -> str:
        return self.header("Call-ID")


def _split_commas(value: str) -> list[str]:
    """A header value split at commas outside <...> and quotes (Via, Record-Route may be comma lists)."""
    parts, depth, quoted, cur = [], 0, False, ""
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def parse_message(data: bytes, source: tuple[str, int]) -> SipMessage | None:
    text = data.decode("utf-8", "replace")
    head, sep, body = text.partition("\r\n\r\n")
    if not sep:
        return None
    lines = head.split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            headers[-1] = (headers[-1][0], headers[-1][1] + " " + line.strip())
        elif ":" in line:
            key, _, value = line.partition(":")
            headers.append((key.strip(), value.strip()))
    return SipMessage(text, lines[0], headers, body, source)


def sdp_media_addr(sdp: str) -> tuple[str, int]:
    """The audio connection address and port an SDP body asks RTP to be sent to."""
    conn = re.search(r"^c=IN IP4 (\S+)", sdp, re.MULTILINE)
    media = re.search(r"^m=audio (\d+) ", sdp, re.MULTILINE)
    assert conn is not None and media is not None, sdp
    return conn.group(1), int(media.group(1))


def sdp_codecs(sdp: str) -> list[str]:
    """The encoding names (lower case) of the a=rtpmap lines of an SDP body."""
    return [m.lower() for m in re.findall(r"^a=rtpmap:\d+ ([^/\s]+)", sdp, re.MULTILINE)]


def uri_of(name_addr: str) -> str:
    m = re.search(r"<([^>]+)>", name_addr)
    return m.group(1) if m else name_addr.split(";")[0].strip()


@dataclass
class RawSipUa:
    """``RawSipUa("alice")``: a SIP socket and an RTP socket on 127.0.0.1; every message it received is in
    ``received``."""

    user: str
    sip: socket.socket = field(init=False)
    rtp: socket.socket = field(init=False)
    received: list[SipMessage] = field(default_factory=list, init=False)
    tag: str = field(default_factory=lambda: secrets.token_hex(4), init=False)
    _cseq: int = field(default=1, init=False)

    def __post_init__(self) -> None:
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))

    @property
    def sip_port(self) -> int:
        return int(self.sip.getsockname()[1])

    @property
    def rtp_port(self) -> int:
        return int(self.rtp.getsockname()[1])

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@127.0.0.1:{self.sip_port}>"

    def _via(self) -> str:
        return f"SIP/2.0/UDP 127.0.0.1:{self.sip_port};rport;branch=z9hG4bK{secrets.token_hex(6)}"

    def send(self, text: str, addr: tuple[str, int]) -> None:
        self.sip.sendto(text.encode(), addr)

    def expect(self, what: str, timeout: float = RECV_TIMEOUT_S) -> SipMessage:
        """The next message that is ``what`` (a method such as "INVITE", or "200 INVITE" for a response);
        others (100 Trying, 180, retransmissions) are kept in ``received`` and skipped."""
        want_status, _, want_method = what.rpartition(" ")
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [m.start for m in self.received]
                raise TimeoutError(f"{self.user}: no {what} within {timeout} s; got {seen}")
            self.sip.settimeout(left)
            try:
                data, source = self.sip.recvfrom(65535)
            except TimeoutError:
                continue
            msg = parse_message(data, source)
            if msg is None:
                continue
            self.received.append(msg)
            if msg.method != want_method.upper():
                continue
            if want_status and msg.status != int(want_status):
                continue
            if not want_status and msg.is_response:
                continue
            return msg

    def invite(self, request_uri: str, to_uri: str, sdp: str, via: tuple[str, int]) -> str:
        """Send an INVITE with ``sdp`` to ``via`` (the PBX); returns its Call-ID."""
        call_id = f"{secrets.token_hex(8)}@raw-{self.user}"
        self.send(
            f"INVITE {request_uri} SIP/2.0\r\nVia: {self._via()}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:{self.user}@127.0.0.1>;tag={self.tag}\r\nTo: <{to_uri}>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {self._cseq} INVITE\r\nContact: {self.contact}\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(sdp.encode())}\r\n\r\n{sdp}",
            via,
        )
        return call_id

    def reply(self, request: SipMessage, status: int, reason: str, sdp: str = "") -> None:
        """Answer ``request`` back to where it came from, copying what RFC 3261 says a response copies."""
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {v}" for v in request.all("Via")]
        lines += [f"Record-Route: {r}" for r in request.all("Record-Route")]
        to = request.header("To")
        lines += [f"From: {request.header('From')}", f"To: {to if ';tag=' in to else to + ';tag=' + self.tag}"]
        lines += [f"Call-ID: {request.call_id}", f"CSeq: {request.header('CSeq')}", f"Contact: {self.contact}"]
        if sdp:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(sdp.encode())}")
        self.send("\r\n".join(lines) + "\r\n\r\n" + sdp, request.source)

    def in_dialog(
        self,
        method: str,
        dialog: SipMessage,
        via: tuple[str, int],
        *,
        caller: bool,
        cseq_step: int | None = None,
        sdp: str = "",
    ) -> None:
        """ACK, BYE or re-INVITE within the dialog that ``dialog`` (the 200 the caller got, or the INVITE the
        callee got) set up, sent to ``via`` (the PBX) with the route set it recorded. The CSeq is the INVITE's
        plus ``cseq_step`` (default: 0 for ACK, 1 otherwise); ``sdp`` is the body (a re-INVITE's offer)."""
        routes = dialog.all("Record-Route")
        if caller:
            routes = routes[::-1]
            local, remote = dialog.header("From"), dialog.header("To")
            cseq = int(dialog.header("CSeq").split()[0])
        else:
            local, remote = dialog.header("To"), dialog.header("From")
            if ";tag=" not in local:
                local += f";tag={self.tag}"
            cseq = 1
        cseq += (0 if method == "ACK" else 1) if cseq_step is None else cseq_step
        target = uri_of(dialog.header("Contact"))
        lines = [f"{method} {target} SIP/2.0", f"Via: {self._via()}", "Max-Forwards: 70"]
        lines += [f"Route: {r}" for r in routes]
        lines += [f"From: {local}", f"To: {remote}", f"Call-ID: {dialog.call_id}", f"CSeq: {cseq} {method}"]
        lines += [f"Contact: {self.contact}"] if method == "INVITE" else []
        lines += ["Content-Type: application/sdp"] if sdp else []
        lines += [f"Content-Length: {len(sdp.encode())}"]
        self.send("\r\n".join(lines) + "\r\n\r\n" + sdp, via)

    def send_rtp(self, dest: tuple[str, int], payloads: list[bytes], pt: int, ssrc: int) -> None:
        for seq, payload in enumerate(payloads):
            self.rtp.sendto(RTP_HEADER.pack(0x80, pt, seq, seq * 960, ssrc) + payload, dest)
            time.sleep(0.002)

    def recv_rtp(self, count: int, timeout: float = RECV_TIMEOUT_S) -> list[tuple[int, int, bytes]]:
        """Up to ``count`` RTP packets as (payload type, ssrc, payload), waiting at most ``timeout``."""
        got: list[tuple[int, int, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.rtp.settimeout(left)
            try:
                data = self.rtp.recv(65535)
            except TimeoutError:
                break
            if len(data) >= RTP_HEADER.size:
                _, pt, _, _, ssrc = RTP_HEADER.unpack_from(data)
                got.append((pt & 0x7F, ssrc, data[RTP_HEADER.size :]))
        return got

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

    def __enter__(self) -> RawSipUa:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def opus_sdp(rtp_port: int, extra: str = "", session: int = 4242) -> str:
    """An opus-only offer/answer from 127.0.0.1:``rtp_port`` with extra lines (e.g. an ``a=voipgw:`` one)."""
    return (
        f"v=0\r\no=- {session} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n{extra}"
    )


def pcmu_sdp(rtp_port: int, session: int = 4343) -> str:
    return (
        f"v=0\r\no=- {session} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )


@dataclass(frozen=True)
class RawCall:
    """What each end of one raw call sent and got during setup."""

    caller_call_id: str
    offer: str
    callee_invite: SipMessage
    answer: str
    caller_ok: SipMessage


def setup_call(
    caller: RawSipUa, callee: RawSipUa, pbx: tuple[str, int], request_uri: str, offer: str, answer: str
) -> RawCall:
    """INVITE (with ``offer``) from ``caller`` through ``pbx``; ``callee`` answers 200 with ``answer``; the caller
    ACKs and the ACK reaches the callee."""
    call_id = caller.invite(request_uri, request_uri.split(";")[0], offer, pbx)
    invite = callee.expect("INVITE")
    callee.reply(invite, 200, "OK", answer)
    ok = caller.expect("200 INVITE")
    caller.in_dialog("ACK", ok, pbx, caller=True)
    callee.expect("ACK")
    return RawCall(call_id, offer, invite, answer, ok)


def reinvite(
    call: RawCall, caller: RawSipUa, callee: RawSipUa, pbx: tuple[str, int], offer: str, answer: str
) -> tuple[SipMessage, SipMessage]:
    """A re-INVITE (CSeq +1) from the caller with ``offer``; the callee answers 200 with ``answer``; the caller
    ACKs. Returns (the re-INVITE the callee got, the 200 the caller got)."""
    caller.in_dialog("INVITE", call.caller_ok, pbx, caller=True, cseq_step=1, sdp=offer)
    got = callee.expect("INVITE")
    callee.reply(got, 200, "OK", answer)
    ok = caller.expect("200 INVITE")
    caller.in_dialog("ACK", call.caller_ok, pbx, caller=True, cseq_step=1)
    callee.expect("ACK")
    return got, ok


def hang_up(call: RawCall, caller: RawSipUa, callee: RawSipUa, pbx: tuple[str, int], cseq_step: int = 1) -> SipMessage:
    """BYE from the caller through ``pbx``; the callee answers 200 and the caller gets it. Returns the callee's BYE.
    ``cseq_step``: 2 after a ``reinvite``."""
    caller.in_dialog("BYE", call.caller_ok, pbx, caller=True, cseq_step=cseq_step)
    bye = callee.expect("BYE")
    callee.reply(bye, 200, "OK")
    caller.expect("200 BYE")
    return bye
