"""Front door for inbound SIP datagrams: vets each one before sippy sees it, counts and rate-limits the junk.

Pure bytes in, verdict out (accept / reply with these bytes / drop); never touches sockets, sippy, threads.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, field, fields

from voipgw.logutil import RateLimitedLog

MIN_DATAGRAM = 32
"""sippy silently ignores anything shorter; we count it instead."""
MAX_DATAGRAM = 8192
"""A SIP datagram larger than this is refused: 513 Message Too Large when it can be answered (RFC 3261 §21.5.14),
else dropped. UDP SIP should stay under 1300 bytes anyway (§18.1.1); larger requests go over TCP."""
SUPPORTED_VERSION = "SIP/2.0"

_REQUEST_LINE = re.compile(r"^([!%'*+\-.0-9A-Z_`a-z~]+) (\S+) (SIP/\d+\.\d+)$")
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length"}
_ECHOED = ("via", "from", "to", "call-id", "cseq")

log = logging.getLogger("voipgw.sip.guard")


@dataclass
class SipStats:
    """Counters of the SIP front door; read a snapshot with ``SipStack.stats``."""

    datagrams_in: int = 0
    accepted: int = 0
    malformed: int = 0
    """Every datagram that was not handed to sippy (sum of the kinds below)."""
    runt: int = 0
    non_utf8: int = 0
    bad_start_line: int = 0
    bad_version: int = 0
    bad_header: int = 0
    bad_content_length: int = 0
    truncated_body: int = 0
    oversized: int = 0
    """Datagrams over MAX_DATAGRAM bytes (513 when the request can be answered, else dropped)."""
    sippy_errors: int = 0
    """Exceptions or complaints sippy raised on datagrams we had let through (logged, rate-limited)."""
    replied_400: int = 0
    replied_505: int = 0
    replied_513: int = 0
    register_ok: int = 0
    """REGISTERs our registrar accepted (200)."""
    register_malformed: int = 0
    """REGISTERs answered 400 for a malformed Contact or Expires."""
    auth_challenged: int = 0
    """REGISTERs and INVITEs answered 401 (no, stale or unusable credentials)."""
    auth_refused: int = 0
    """REGISTERs and INVITEs answered 403 (unknown user, wrong password, someone else's credentials)."""
    progress_sent: int = 0
    """183 Session Progress responses sent by ``IncomingCall.progress()``, retransmissions included."""
    progress_retransmits: int = 0
    """Of those, the retransmissions (RFC 3262 section 3 schedule, until acknowledged or a final response)."""
    provisional_absorbed: int = 0
    """Repeated 18x for our INVITEs (same code, To-tag and body) that reached a dialog and were not reported."""
    prack_ok: int = 0
    """PRACKs that acknowledged our reliable 183 (RFC 3262), answered 200."""
    prack_refused: int = 0
    """PRACKs naming no unacknowledged reliable 18x of their dialog, answered 481."""
    stray_2xx_ignored: int = 0
    """2xx with another To-tag for an answered INVITE that came from elsewhere than the INVITE's next hop: dropped."""
    stray_2xx: int = 0
    """2xx for an INVITE already answered by another fork (another To-tag), ACKed and BYEd (RFC 3261 13.2.2.4)."""
    icmp_unreachable: int = 0
    """Requests ended at once (503) by an ICMP port unreachable that quoted them (``voipgw.sip.unreachable``)."""
    icmp_ignored: int = 0
    """ICMP port-unreachable errors that quoted none of our pending requests (a response's, a retransmission's
    after its transaction ended, or a forgery): ignored."""
    stray_2xx_failed: int = 0
    """Such a 2xx whose ACK/BYE could not be built: dropped so that its retransmission is tried again."""
    refused: dict[str, int] = field(default_factory=dict)
    """Requests refused by a trust-zone rule, by reason (``register_on_outside``, ``pbx_on_inside``,
    ``untrusted_source``, ``binding_other_source``, ``register_bad_credentials``, ``invite_bad_credentials``...)."""

    def copy(self) -> SipStats:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["refused"] = dict(self.refused)
        return SipStats(**values)

    def malformed_by_reason(self) -> dict[str, int]:
        """The non-zero malformed counters by kind (``runt``, ``bad_header``, ``oversized``...), summing to
        ``malformed``; sippy's own complaints and malformed REGISTERs are separate counters."""
        return {kind: n for kind in MALFORMED_KINDS if (n := getattr(self, kind))}


MALFORMED_KINDS = (
    "runt",
    "non_utf8",
    "bad_start_line",
    "bad_version",
    "bad_header",
    "bad_content_length",
    "truncated_body",
    "oversized",
)
"""The kinds of junk the guard tells apart (each a SipStats counter)."""


@dataclass(frozen=True, slots=True)
class Accept:
    """Hand the datagram to sippy unchanged."""


@dataclass(frozen=True, slots=True)
class Reply:
    """Drop the request and send ``data`` (a 400, 505 or 513) back to the source."""

    data: bytes
    code: int


@dataclass(frozen=True, slots=True)
class Drop:
    """Discard silently (after counting)."""


Verdict = Accept | Reply | Drop


class DatagramGuard:
    """Classifies inbound datagrams per RFC 3261 §8.2/§18.3; `check()` is called on sippy's reactor thread."""

    def __init__(self, agent_host: str, user_agent: str, stats: SipStats) -> None:
        self._agent = agent_host
        self._ua = user_agent
        self.stats = stats
        self.ratelog = RateLimitedLog(log)

    def check(self, data: bytes, source: tuple[str, int], max_size: int | None = MAX_DATAGRAM) -> Verdict:
        """The verdict on one inbound message; ``max_size`` None for a stream transport (framed with its own
        limits), else the datagram size limit."""
        st = self.stats
        st.datagrams_in += 1
        if max_size is not None and len(data) > max_size:
            verdict = self._oversized(data, source, max_size)
        else:
            verdict = self._classify(data, source)
        if isinstance(verdict, Accept):
            st.accepted += 1
        else:
            st.malformed += 1
            if isinstance(verdict, Reply):
                if verdict.code == 505:
                    st.replied_505 += 1
                elif verdict.code == 513:
                    st.replied_513 += 1
                else:
                    st.replied_400 += 1
        return verdict

    def _oversized(self, data: bytes, source: tuple[str, int], max_size: int) -> Verdict:
        """RFC 3261 §21.5.14: 513 Message Too Large to a request whose Via we can read; anything else is dropped
        (a response, an ACK, a request without a readable start line or Via), with the reason logged."""
        head_end = data.find(b"\r\n\r\n")
        head = (data if head_end < 0 else data[:head_end]).decode("latin-1")
        lines = head.replace("\r\n", "\n").split("\n")
        start = lines[0]
        size = f"{len(data)} bytes, over the {max_size}-byte limit"
        m = _REQUEST_LINE.match(start)
        if start.startswith("SIP/") or m is None:
            what = "response" if start.startswith("SIP/") else "datagram without a request line"
            self._junk("oversized", source, f"{what}, {size}: dropped")
            return Drop()
        method = m.group(1)
        headers, _ = _headers(lines[1:])
        if "via" not in headers or method == "ACK":
            why = "an ACK is never answered" if method == "ACK" else "no Via: cannot answer"
            self._junk("oversized", source, f"{method}, {size}: dropped ({why})")
            return Drop()
        self._junk("oversized", source, f"{method}, {size}: 513")
        return Reply(self._response(513, "Message Too Large", headers, f"message too large ({size})"), 513)

    def _junk(self, kind: str, source: tuple[str, int], detail: str) -> None:
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        self.ratelog(kind, logging.WARNING, "malformed SIP datagram from %s:%d (%s): %s", *source, kind, detail)

    def _classify(self, data: bytes, source: tuple[str, int]) -> Verdict:
        if len(data) < MIN_DATAGRAM:
            # Also covers CRLF keep-alives (RFC 5626), which are legitimate; they are counted, never logged.
            if data.strip(b"\r\n"):
                self._junk("runt", source, f"{len(data)} bytes")
            else:
                self.stats.runt += 1
            return Drop()
        non_utf8 = False
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            non_utf8 = True
            text = data.decode("latin-1")
        head_end = data.find(b"\r\n\r\n")
        sep = 4
        if head_end < 0:
            head_end, sep = data.find(b"\n\n"), 2
        head = (data if head_end < 0 else data[:head_end]).decode("latin-1")
        body_len = 0 if head_end < 0 else len(data) - head_end - sep
        lines = head.replace("\r\n", "\n").split("\n")
        start = lines[0]
        if start.startswith("SIP/"):
            return self._check_response(start, non_utf8, head_end < 0, lines, body_len, source)
        m = _REQUEST_LINE.match(start)
        if m is None:
            self._junk("bad_start_line", source, repr(start[:60]))
            return Drop()
        method, version = m.group(1), m.group(3)
        headers, bad_line = _headers(lines[1:])
        if "via" not in headers:
            self._junk("bad_header", source, f"{method} without Via: cannot answer")
            return Drop()
        reply_ok = method != "ACK"  # RFC 3261 §17.2.3: never respond to an ACK

        def fail(kind: str, code: int, phrase: str, detail: str) -> Verdict:
            self._junk(kind, source, detail)
            if not reply_ok:
                return Drop()
            return Reply(self._response(code, phrase, headers, detail), code)

        if version != SUPPORTED_VERSION:
            return fail("bad_version", 505, "Version Not Supported", f"{version} in request line")
        if non_utf8:
            return fail("non_utf8", 400, "Bad Request", "message is not valid UTF-8")
        if bad_line is not None:
            return fail("bad_header", 400, "Bad Request", f"malformed header line {bad_line[:40]!r}")
        for name in ("from", "to", "call-id", "cseq"):
            if name not in headers:
                return fail("bad_header", 400, "Bad Request", f"missing {name} header")
        cseq = headers["cseq"][0].split()
        if len(cseq) != 2 or not cseq[0].isdigit() or cseq[1] != method:
            return fail("bad_header", 400, "Bad Request", "CSeq does not match the request")
        if "max-forwards" in headers and not headers["max-forwards"][0].strip().isdigit():
            return fail("bad_header", 400, "Bad Request", "Max-Forwards is not a number")
        if head_end < 0:
            return fail("truncated_body", 400, "Bad Request", "no empty line after the headers")
        lengths = {v.strip() for v in headers.get("content-length", [])}
        if len(lengths) > 1 or any(not v.isdigit() for v in lengths):
            return fail("bad_content_length", 400, "Bad Request", "Content-Length is not one number")
        if lengths and int(next(iter(lengths))) > body_len:
            # RFC 3261 §18.3: the datagram ended before the body did.
            return fail("truncated_body", 400, "Bad Request", "body shorter than Content-Length")
        del text
        return Accept()

    def reject_unparsable(self, data: bytes, source: tuple[str, int], detail: str) -> Verdict:
        """For a request that passed `check()` but that sippy cannot parse (e.g. a mangled From): 400 it."""
        self.stats.accepted -= 1
        self.stats.malformed += 1
        self._junk("bad_header", source, f"unparsable request: {detail[:80]}")
        lines = data.decode("utf-8", errors="replace").replace("\r\n", "\n").split("\n\n", 1)[0].split("\n")
        if lines[0].startswith("ACK "):
            return Drop()
        headers, _ = _headers(lines[1:])
        self.stats.replied_400 += 1
        return Reply(self._response(400, "Bad Request", headers, "unparsable header"), 400)

    def _check_response(
        self,
        start: str,
        non_utf8: bool,
        no_blank: bool,
        lines: list[str],
        body_len: int,
        source: tuple[str, int],
    ) -> Verdict:
        # Broken responses are always dropped silently (RFC 3261 §18.3); the transaction times out instead.
        if not start.startswith(SUPPORTED_VERSION + " "):
            self._junk("bad_version", source, repr(start[:40]))
            return Drop()
        if non_utf8:
            self._junk("non_utf8", source, "response is not valid UTF-8")
            return Drop()
        parts = start.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit() or len(parts[1]) != 3:
            self._junk("bad_start_line", source, repr(start[:40]))
            return Drop()
        headers, bad_line = _headers(lines[1:])
        if bad_line is not None or not all(h in headers for h in _ECHOED):
            self._junk("bad_header", source, "response with malformed or missing headers")
            return Drop()
        if no_blank:
            self._junk("truncated_body", source, "response without an empty line after the headers")
            return Drop()
        lengths = {v.strip() for v in headers.get("content-length", [])}
        if len(lengths) > 1 or any(not v.isdigit() for v in lengths):
            self._junk("bad_content_length", source, "response Content-Length is not one number")
            return Drop()
        if lengths and int(next(iter(lengths))) > body_len:
            self._junk("truncated_body", source, "response body shorter than Content-Length")
            return Drop()
        return Accept()

    def _response(self, code: int, phrase: str, headers: dict[str, list[str]], detail: str) -> bytes:
        out = [f"{SUPPORTED_VERSION} {code} {phrase}"]
        out += [f"Via: {v}" for v in headers["via"]]
        for name, canon in (("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq")):
            for value in headers.get(name, [])[:1]:
                if name == "to" and ";tag=" not in value.replace(" ", "").lower():
                    value += f";tag={secrets.token_hex(8)}"
                out.append(f"{canon}: {value}")
        out.append(f"Server: {self._ua}")
        safe = detail.replace('"', "'").replace("\\", "/")
        out.append(f'Warning: 399 {self._agent} "{safe}"')
        out.append("Content-Length: 0")
        return ("\r\n".join(out) + "\r\n\r\n").encode("utf-8", errors="replace")


def _headers(lines: list[str]) -> tuple[dict[str, list[str]], str | None]:
    """Header values by lower-case full name (Via split on commas), and the first bad line, if any."""
    out: dict[str, list[str]] = {}
    last: str | None = None
    for line in lines:
        if not line:
            continue
        if line[0] in " \t" and last is not None:
            out[last][-1] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name or " " in name:
            return out, line
        name = _COMPACT.get(name, name)
        values = [v.strip() for v in value.split(",")] if name == "via" else [value.strip()]
        out.setdefault(name, []).extend(values)
        last = name
    return out, None
