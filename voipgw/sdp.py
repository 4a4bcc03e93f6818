"""SDP offers and answers for voipgw calls (RFC 4566 / RFC 3264), written and parsed by our own code.

We need byte-exact control of the ``a=voipgw:`` handshake attribute and of the audio codec lines, and we
only ever handle one audio stream, so a small, strict parser is simpler and safer here than a general SDP
library: every malformed input raises :class:`SdpError` with a reason; nothing else escapes.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field

MAX_SDP_BYTES = 16_384
OPUS = "opus"
PCMU = "pcmu"
PCMA = "pcma"
TELEPHONE_EVENT = "telephone-event"
STATIC_PT = {0: (PCMU, 8000), 8: (PCMA, 8000)}
DEFAULT_OPUS_PT = 111
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class SdpError(ValueError):
    """The SDP cannot be used; ``reason`` is a stable code for logs and SIP Warning texts."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Codec:
    name: str
    """Lower-case encoding name (opus, pcmu, pcma, telephone-event...)."""
    payload_type: int
    clock_rate: int


@dataclass(frozen=True)
class AudioDescription:
    """What we need from a peer's SDP: where to send, in which codecs, and its handshake attribute."""

    host: str
    port: int
    codecs: tuple[Codec, ...]
    direction: str
    handshake: str | None
    """The raw value of the ``a=voipgw:`` attribute, if present (validated by ratchet.handshake)."""
    lines: tuple[str, ...] = field(repr=False, default=())

    def find(self, name: str) -> Codec | None:
        return next((c for c in self.codecs if c.name == name), None)

    @property
    def rtp_address(self) -> tuple[str, int]:
        return (self.host, self.port)


def parse_sdp(text: str) -> AudioDescription:
    """Parse the first ``m=audio`` stream of an SDP body."""
    if len(text) > MAX_SDP_BYTES:
        raise SdpError("sdp-too-large", f"{len(text)} bytes")
    lines = [ln.rstrip("\r") for ln in text.split("\n") if ln.strip()]
    if not lines or not lines[0].startswith("v="):
        raise SdpError("sdp-malformed", "does not start with v=")
    session_host: str | None = None
    media_host: str | None = None
    port: int | None = None
    pts: list[int] = []
    rtpmaps: dict[int, tuple[str, int]] = {}
    direction = "sendrecv"
    handshake: str | None = None
    in_audio = False
    seen_audio = False
    for line in lines:
        if len(line) < 2 or line[1] != "=":
            raise SdpError("sdp-malformed", f"bad line {line[:40]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            if in_audio or seen_audio:
                in_audio = False  # only the first audio stream is ours; later m= lines are ignored
                continue
            parts = value.split()
            if len(parts) < 4:
                raise SdpError("sdp-malformed", "short m= line")
            if parts[0] != "audio":
                continue
            try:
                port = int(parts[1].split("/")[0])
                pts = [int(p) for p in parts[3:]]
            except ValueError:
                raise SdpError("sdp-malformed", "non-numeric port or payload type") from None
            if not 0 <= port <= 65535 or any(not 0 <= p <= 127 for p in pts):
                raise SdpError("sdp-malformed", "port or payload type out of range")
            in_audio = seen_audio = True
        elif kind == "c":
            host = _parse_connection(value)
            if in_audio:
                media_host = host
            elif not seen_audio:
                session_host = host
        elif kind == "a":
            name, _, attr = value.partition(":")
            if name == "voipgw" and (in_audio or not seen_audio):
                if handshake is not None:
                    raise SdpError("sdp-duplicate-handshake", "more than one a=voipgw line")
                handshake = attr
            elif not in_audio:
                if name in DIRECTIONS and not seen_audio:
                    direction = name
                continue
            elif name == "rtpmap":
                pt_text, _, enc = attr.partition(" ")
                enc_parts = enc.split("/")
                try:
                    pt = int(pt_text)
                    rate = int(enc_parts[1])
                except (ValueError, IndexError):
                    raise SdpError("sdp-malformed", f"bad rtpmap {attr[:40]!r}") from None
                rtpmaps[pt] = (enc_parts[0].lower(), rate)
            elif name in DIRECTIONS:
                direction = name
    if port is None:
        raise SdpError("sdp-no-audio", "no m=audio stream")
    address = media_host or session_host
    if address is None:
        raise SdpError("sdp-malformed", "no connection address")
    codecs: list[Codec] = []
    for pt in pts:
        known = rtpmaps.get(pt) or STATIC_PT.get(pt)
        if known is not None:
            codecs.append(Codec(known[0], pt, known[1]))
    return AudioDescription(address, port, tuple(codecs), direction, handshake, tuple(lines))


def _parse_connection(value: str) -> str:
    parts = value.split()
    if len(parts) < 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError("sdp-malformed", f"bad c= line {value[:40]!r}")
    addr = parts[2].split("/")[0]
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise SdpError("sdp-malformed", f"connection address {addr[:40]!r} is not an IP address") from None
    return addr


def build_sdp(
    host: str,
    port: int,
    codecs: list[Codec],
    *,
    handshake: str | None = None,
    direction: str = "sendrecv",
    session_id: int | None = None,
    version: int = 1,
) -> str:
    """Render a one-stream audio SDP. ``handshake`` is the base64url value of the ``a=voipgw:`` line."""
    ip_ver = "IP6" if ":" in host else "IP4"
    sid = session_id if session_id is not None else secrets.randbelow(1 << 62)
    lines = [
        "v=0",
        f"o=voipgw {sid} {version} IN {ip_ver} {host}",
        "s=voipgw",
        f"c=IN {ip_ver} {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(str(c.payload_type) for c in codecs)}",
    ]
    for c in codecs:
        if c.name == OPUS:
            lines.append(f"a=rtpmap:{c.payload_type} opus/48000/2")
            lines.append(f"a=fmtp:{c.payload_type} minptime=20;useinbandfec=0")
        elif c.name == TELEPHONE_EVENT:
            lines.append(f"a=rtpmap:{c.payload_type} telephone-event/{c.clock_rate}")
        elif c.payload_type >= 96:
            lines.append(f"a=rtpmap:{c.payload_type} {c.name.upper()}/{c.clock_rate}")
    lines.append("a=ptime:20")
    lines.append(f"a={direction}")
    if handshake is not None:
        lines.append(f"a=voipgw:{handshake}")
    return "\r\n".join(lines) + "\r\n"


def opus_codec(pt: int = DEFAULT_OPUS_PT) -> Codec:
    return Codec(OPUS, pt, 48000)


PCMU_CODEC = Codec(PCMU, 0, 8000)
PCMA_CODEC = Codec(PCMA, 8, 8000)

SECURE_CODECS = (OPUS,)
"""A secure call carries Opus only: the ratchet's frame format seals Opus frames."""
PLAIN_CODECS = (OPUS, PCMU, PCMA)
"""What a NOT SECURE (opportunistic) call offers and accepts, in our order of preference."""


def offer_codecs(names: tuple[str, ...]) -> list[Codec]:
    """Our offer's codec list for ``names`` (SECURE_CODECS or PLAIN_CODECS), with our payload type numbers."""
    ours = {OPUS: opus_codec(), PCMU: PCMU_CODEC, PCMA: PCMA_CODEC}
    return [ours[n] for n in names]


def choose_codec(offered: tuple[Codec, ...], preference: tuple[str, ...]) -> Codec | None:
    """The first codec of ``preference`` that ``offered`` lists, with the offer's payload type number
    (RFC 3264 §6.1: the answer reuses the offerer's numbers); None if there is no common codec."""
    for name in preference:
        for codec in offered:
            if codec.name == name:
                return codec
    return None
