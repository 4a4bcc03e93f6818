"""The web phone's SIP side: one outgoing call from a web page to the gateway's own inside listener, as the inside
user, over UDP, answering the gateway's digest challenge with the user's inside password. This is what makes a
browser an ordinary inside phone to the B2BUA: routing, policy, labels, the SAS announcement and ``*1``/``*0``
are the ones every SIP phone gets, unchanged.

It speaks only to the gateway (a fixed address on the same host or inside network), so it is a deliberately small
user agent: INVITE (retransmitted on RFC 3261's T1 schedule until a response), the digest retry, ACK, CANCEL,
BYE both ways; anything else in the dialog is answered 200 (OPTIONS) or 488 (re-INVITE: the browser's media does
not move).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from voipgw.sip.digest import ALGORITHMS, digest_response

log = logging.getLogger(__name__)

T1_S = 0.5
INVITE_TRIES = 7
BYE_TRIES = 4
COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
           "c": "content-type"}  # fmt: skip


class CallOutcome(enum.Enum):
    ANSWERED = "answered"
    REFUSED = "refused"
    """A final status >= 300: ``code`` and ``warning`` say why (the gateway's refusal reasons)."""
    NO_ANSWER = "no-answer"
    """The gateway never answered the INVITE."""
    CANCELLED = "cancelled"


@dataclass
class Message:
    first: str
    headers: list[tuple[str, str]]
    body: str

    def get(self, name: str) -> str:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), "")

    @property
    def code(self) -> int:
        parts = self.first.split(" ", 2)
        return int(parts[1]) if self.first.startswith("SIP/2.0 ") and len(parts) > 1 and parts[1].isdigit() else 0

    @property
    def method(self) -> str:
        return "" if self.first.startswith("SIP/2.0 ") else self.first.split(" ", 1)[0]

    @property
    def cseq_method(self) -> str:
        return self.get("cseq").rpartition(" ")[2].upper()


def parse_message(data: bytes) -> Message | None:
    """One SIP datagram -> Message (None when it is not SIP we can read)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    head, sep, body = text.partition("\r\n\r\n")
    if not sep:
        return None
    lines = head.split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation
            k, v = headers[-1]
            headers[-1] = (k, f"{v} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if colon:
            key = name.strip().lower()
            headers.append((COMPACT.get(key, key), value.strip()))
    return Message(lines[0], headers, body)


def _uri_of(value: str) -> str:
    m = re.search(r"<([^>]+)>", value)
    return m.group(1) if m else value.split(";", 1)[0].strip()


def _tag_of(value: str) -> str:
    m = re.search(r";\s*tag=([^;>\s]+)", value)
    return m.group(1) if m else ""


def _challenge(value: str) -> dict[str, str]:
    return {k.lower(): v1 or v2 for k, v1, v2 in re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', value)}


@dataclass
class Dialog:
    """One call's dialog state (ours: placed by the page; or incoming: the gateway ringing the page)."""

    call_id: str
    local_tag: str
    remote_uri: str
    """The far party's URI: the To of our INVITE, or the From of the gateway's."""
    incoming: bool = False
    invite: Message | None = None
    """The gateway's INVITE (incoming): what our responses answer."""
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    cseq: int = 1
    branch: str = ""
    remote_tag: str = ""
    remote_target: str = ""
    auth: str = ""
    remote_sdp: str = ""
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: str = ""


class WebUa(asyncio.DatagramProtocol):
    """``await open()``; ``await call(to, sdp)`` -> (outcome, code, warning); ``await hangup()``; ``close()``.
    ``on_progress(code)`` runs for each provisional response, ``on_ended(reason)`` when the far side ends it."""

    def __init__(self, gateway: tuple[str, int], user: str, password: str, local_host: str) -> None:
        self.gateway = gateway
        self.user = user
        self._password = password
        self.local_host = local_host
        self.local_port = 0
        self.on_progress: Callable[[int], None] = lambda code: None
        self.on_ended: Callable[[str], None] = lambda reason: None
        self.dialog: Dialog | None = None
        self.on_invite: Callable[[Dialog], None] | None = None
        """Set on the user's line (registered): an INVITE from the gateway rings through this; None: 480."""
        self._transport: asyncio.DatagramTransport | None = None
        self._responses: asyncio.Queue[Message] = asyncio.Queue()
        self._register_id = secrets.token_hex(12) + "@voipgw-web"
        self._register_cseq = 0
        self._register_responses: asyncio.Queue[Message] = asyncio.Queue()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.local_host, 0))
        self._transport = transport
        self.local_port = int(transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # --- wire ------------------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        if (str(addr[0]), int(addr[1])) != self.gateway:
            return  # only the gateway speaks to this socket
        msg = parse_message(data)
        if msg is None:
            return
        if msg.code and msg.get("call-id") == self._register_id:
            self._register_responses.put_nowait(msg)
            return
        d = self.dialog
        if msg.method == "INVITE" and (d is None or msg.get("call-id") != d.call_id):
            self._incoming(msg)
            return
        if d is None or msg.get("call-id") != d.call_id:
            if msg.method not in ("ACK", ""):
                self._reply(msg, 481, "Call/Transaction Does Not Exist")
            return
        if msg.code:
            self._responses.put_nowait(msg)
        elif msg.method == "ACK":
            d.acked.set()
        elif msg.method == "BYE":
            self._reply(msg, 200, "OK")
            self._ended("hung up by the far end")
        elif msg.method == "CANCEL" and d.incoming and d.invite is not None and not d.acked.is_set():
            self._reply(msg, 200, "OK")
            self._reply(d.invite, 487, "Request Terminated", d.local_tag)
            self._ended("the caller gave up")
        elif msg.method == "INVITE":
            self._reply(msg, 488, "Not Acceptable Here")  # a re-INVITE: the browser's media does not move
        else:
            self._reply(msg, 200, "OK")

    def _incoming(self, msg: Message) -> None:
        d = self.dialog
        if d is not None and not d.ended.is_set():
            self._reply(msg, 486, "Busy Here", secrets.token_hex(6))
            return
        if self.on_invite is None:
            self._reply(msg, 480, "Temporarily Unavailable", secrets.token_hex(6))
            return
        frm = msg.get("from")
        d = Dialog(msg.get("call-id"), secrets.token_hex(6), _uri_of(frm), incoming=True, invite=msg)
        d.remote_tag = _tag_of(frm)
        d.remote_target = _uri_of(msg.get("contact")) or d.remote_uri
        d.remote_sdp = msg.body
        self.dialog = d
        self._reply(msg, 180, "Ringing", d.local_tag)
        self.on_invite(d)

    async def accept(self, d: Dialog, sdp: str) -> bool:
        """200 OK to the gateway's INVITE with ``sdp``, resent on T1 until its ACK (RFC 3261 13.3.1.4)."""
        assert d.invite is not None
        wait = T1_S
        for _ in range(INVITE_TRIES):
            if d.ended.is_set():
                return False
            self._reply(d.invite, 200, "OK", d.local_tag, sdp)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(d.acked.wait(), wait)
                return True
            wait = min(wait * 2, 4.0)
        return False

    def reject(self, d: Dialog, code: int, phrase: str) -> None:
        if d.invite is not None and not d.ended.is_set():
            self._reply(d.invite, code, phrase, d.local_tag)
            self._ended(f"declined ({code})")

    def _send(self, text: str) -> None:
        if self._transport is not None:
            self._transport.sendto(text.encode(), self.gateway)

    def _reply(self, req: Message, code: int, phrase: str, to_tag: str = "", sdp: str = "") -> None:
        lines = [f"SIP/2.0 {code} {phrase}"]
        for k, v in req.headers:
            if k == "to" and to_tag and not _tag_of(v):
                v = f"{v};tag={to_tag}"
            if k in ("via", "from", "to", "call-id", "cseq"):
                lines.append(f"{k.title()}: {v}")
        if to_tag and req.method == "INVITE":
            lines.append(f"Contact: <sip:{self.user}@{self.local_host}:{self.local_port}>")
        if sdp:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(sdp.encode())}")
        self._send("\r\n".join([*lines, "", sdp]))

    def _ended(self, reason: str) -> None:
        d = self.dialog
        if d is not None and not d.ended.is_set():
            d.end_reason = reason
            d.ended.set()
            self.on_ended(reason)

    def _request(self, method: str, d: Dialog, cseq: int, uri: str, sdp: str = "") -> str:
        to = f"<{d.remote_uri}>" + (f";tag={d.remote_tag}" if d.remote_tag else "")
        host = f"{self.gateway[0]}:{self.gateway[1]}"
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.local_host}:{self.local_port};branch={d.branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@{host}>;tag={d.local_tag}",
            f"To: {to}",
            f"Call-ID: {d.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.user}@{self.local_host}:{self.local_port}>",
            "User-Agent: voipgw-web",
        ]
        if d.auth and method in ("INVITE", "CANCEL"):
            lines.append(d.auth)
        if sdp:
            lines.append("Content-Type: application/sdp")
        body = sdp
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join([*lines, "", body])

    # --- the call --------------------------------------------------------------------------------------

    async def call(self, to: str, sdp: str) -> tuple[CallOutcome, int, str]:
        """INVITE ``to`` (an extension or AOR) at the gateway with ``sdp``; returns once it is answered or not."""
        host = f"{self.gateway[0]}:{self.gateway[1]}"
        uri = f"sip:{to}" if "@" in to else f"sip:{to}@{host}"
        d = Dialog(secrets.token_hex(12) + "@voipgw-web", secrets.token_hex(6), uri)
        self.dialog = d
        for _ in range(2):  # the first try, and one more with the digest answer
            d.branch = "z9hG4bK" + secrets.token_hex(8)
            invite = self._request("INVITE", d, d.cseq, uri, sdp)
            final = await self._invite_transaction(invite)
            if final is None:
                return CallOutcome.NO_ANSWER, 0, "the gateway did not answer"
            if final.code in (401, 407) and not d.auth:
                self._ack_failure(d, final, uri)
                d.auth = self._authorization(final, "INVITE", uri)
                d.cseq += 1
                d.remote_tag = ""
                continue
            if 200 <= final.code < 300:
                d.remote_tag = _tag_of(final.get("to"))
                d.remote_target = _uri_of(final.get("contact")) or uri
                d.remote_sdp = final.body
                self._send(self._ack(d))
                return CallOutcome.ANSWERED, final.code, ""
            self._ack_failure(d, final, uri)
            if final.code == 487:
                return CallOutcome.CANCELLED, 487, ""
            warning = final.get("warning")
            m = re.match(r'\d{3}\s+\S+\s+"(.*)"', warning)
            return CallOutcome.REFUSED, final.code, m.group(1) if m else (warning or final.first[12:])
        return CallOutcome.REFUSED, 403, "the gateway refused the credentials"

    async def _invite_transaction(self, invite: str) -> Message | None:
        wait, provisional = T1_S, False
        for _ in range(INVITE_TRIES * 4):
            if not provisional:
                self._send(invite)
            try:
                msg = await asyncio.wait_for(self._responses.get(), wait)
            except TimeoutError:
                if provisional:
                    continue
                wait = min(wait * 2, 4.0)
                continue
            if msg.cseq_method != "INVITE":
                continue
            if msg.code < 200:
                provisional = True
                wait = 64 * T1_S
                self.on_progress(msg.code)
                continue
            return msg
        return None

    def _ack_failure(self, d: Dialog, final: Message, uri: str) -> None:
        tag = _tag_of(final.get("to"))
        saved, d.remote_tag = d.remote_tag, tag
        self._send(self._request("ACK", d, d.cseq, uri))
        d.remote_tag = saved

    def _ack(self, d: Dialog) -> str:
        branch, d.branch = d.branch, "z9hG4bK" + secrets.token_hex(8)
        ack = self._request("ACK", d, d.cseq, d.remote_target)
        d.branch = branch
        return ack

    def _authorization(self, challenge: Message, method: str, uri: str) -> str:
        header = "www-authenticate" if challenge.code == 401 else "proxy-authenticate"
        c = _challenge(challenge.get(header).removeprefix("Digest").strip())
        algorithm = next((a for a in ALGORITHMS if a.lower() == c.get("algorithm", "MD5").lower()), "MD5")
        cnonce, nc = secrets.token_hex(8), "00000001"
        realm, nonce = c.get("realm", ""), c.get("nonce", "")
        response = digest_response(algorithm, self.user, realm, self._password, method, uri, nonce, nc, cnonce,
                                   "auth")  # fmt: skip
        name = "Authorization" if challenge.code == 401 else "Proxy-Authorization"
        opaque = f', opaque="{c["opaque"]}"' if "opaque" in c else ""
        return (
            f'{name}: Digest username="{self.user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm={algorithm}, qop=auth, nc={nc}, cnonce="{cnonce}"{opaque}'
        )

    async def register(self, expires: int) -> int:
        """REGISTER this socket as the user's contact at the gateway's inside registrar (digest answered);
        returns the final status (0: no answer). ``expires`` 0 removes the binding."""
        host = f"{self.gateway[0]}:{self.gateway[1]}"
        uri, auth = f"sip:{host}", ""
        for _ in range(2):
            self._register_cseq += 1
            lines = [
                f"REGISTER {uri} SIP/2.0",
                f"Via: SIP/2.0/UDP {self.local_host}:{self.local_port};branch=z9hG4bK{secrets.token_hex(8)};rport",
                "Max-Forwards: 70",
                f"From: <sip:{self.user}@{host}>;tag={secrets.token_hex(6)}",
                f"To: <sip:{self.user}@{host}>",
                f"Call-ID: {self._register_id}",
                f"CSeq: {self._register_cseq} REGISTER",
                f"Contact: <sip:{self.user}@{self.local_host}:{self.local_port}>;expires={expires}",
                "User-Agent: voipgw-web",
                *([auth] if auth else []),
                "Content-Length: 0",
            ]
            final = await self._register_transaction("\r\n".join([*lines, "", ""]))
            if final is None:
                return 0
            if final.code in (401, 407) and not auth:
                auth = self._authorization(final, "REGISTER", uri)
                continue
            return final.code
        return 403

    async def _register_transaction(self, request: str) -> Message | None:
        wait = T1_S
        for _ in range(INVITE_TRIES):
            self._send(request)
            with contextlib.suppress(TimeoutError):
                while True:
                    msg = await asyncio.wait_for(self._register_responses.get(), wait)
                    if msg.code >= 200 and msg.get("cseq").startswith(f"{self._register_cseq} "):
                        return msg
            wait = min(wait * 2, 4.0)
        return None

    def cancel(self) -> None:
        """CANCEL the ringing INVITE (the gateway then answers it 487)."""
        d = self.dialog
        if d is not None and not d.remote_target:
            self._send(self._request("CANCEL", d, d.cseq, d.remote_uri))

    async def hangup(self) -> None:
        """BYE the answered call (retried on T1 until a response, bounded)."""
        d = self.dialog
        if d is None or not d.remote_target or d.ended.is_set():
            return
        if d.incoming and not d.acked.is_set():
            self.reject(d, 603, "Decline")
            return
        d.cseq += 1
        d.branch = "z9hG4bK" + secrets.token_hex(8)
        bye = self._request("BYE", d, d.cseq, d.remote_target)
        self._ended("hung up")
        for _ in range(BYE_TRIES):
            self._send(bye)
            with contextlib.suppress(TimeoutError):
                while True:
                    msg = await asyncio.wait_for(self._responses.get(), T1_S * 2)
                    if msg.cseq_method == "BYE" and msg.code >= 200:
                        return
        log.warning("web phone: the gateway did not answer the BYE of call %s", d.call_id)
