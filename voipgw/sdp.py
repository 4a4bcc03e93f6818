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
SENDRECV = "sendrecv"
SENDONLY = "sendonly"
RECVONLY = "recvonly"
INACTIVE = "inactive"
DEFAULT_TELEPHONE_EVENT_PT = 101
TELEPHONE_EVENT_RATE = 8000
TELEPHONE_EVENT_FMTP = "0-16"
"""The events we send and accept: DTMF digits 0-9 * # A-D (RFC 4733 §3.2)."""
MAX_CRYPTO_LINES = 8
"""``a=crypto`` lines kept from one stream (an offer lists one per suite it supports)."""
SAVP = "RTP/SAVP"
HOLD_ADDRESSES = ("0.0.0.0", "::")
"""RFC 2543 hold: a null connection address means "do not send to me" (read as our peer being sendonly)."""


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
    """The peer's stream direction (sendrecv, sendonly, recvonly, inactive): the media-level attribute wins over
    the session-level one; an RFC 2543 hold (``c=0.0.0.0``) reads as sendonly (recvonly becomes inactive)."""
    handshake: str | None
    """The raw value of the ``a=voipgw:`` attribute, if present (validated by ratchet.handshake)."""
    lines: tuple[str, ...] = field(repr=False, default=())
    profile: str = "RTP/AVP"
    """The audio stream's transport protocol (``RTP/SAVP`` for SDES-SRTP)."""
    crypto: tuple[str, ...] = field(repr=False, default=())
    """The raw values of the audio stream's ``a=crypto:`` lines, in order (parsed by voipgw.rtp.sdes; they carry
    keys: never logged)."""

    def find(self, name: str) -> Codec | None:
        return next((c for c in self.codecs if c.name == name), None)

    @property
    def telephone_event(self) -> Codec | None:
        """The peer's RFC 4733 event payload type at 8000 Hz (other clock rates are ignored), or None."""
        return next(
            (c for c in self.codecs if c.name == TELEPHONE_EVENT and c.clock_rate == TELEPHONE_EVENT_RATE), None
        )

    @property
    def sends(self) -> bool:
        """Whether the peer will send media (the ``send`` half of its direction)."""
        return self.direction in (SENDRECV, SENDONLY)

    @property
    def receives(self) -> bool:
        """Whether the peer wants media sent to it."""
        return self.direction in (SENDRECV, RECVONLY)

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
    session_direction = SENDRECV
    media_direction: str | None = None
    handshake: str | None = None
    profile = "RTP/AVP"
    crypto: list[str] = []
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
            profile = parts[2][:32]
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
                    session_direction = name
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
                media_direction = name
            elif name == "crypto" and len(crypto) < MAX_CRYPTO_LINES:
                crypto.append(attr)
    if port is None:
        raise SdpError("sdp-no-audio", "no m=audio stream")
    address = media_host or session_host
    if address is None:
        raise SdpError("sdp-malformed", "no connection address")
    direction = media_direction or session_direction
    if address in HOLD_ADDRESSES:
        direction = {SENDRECV: SENDONLY, RECVONLY: INACTIVE}.get(direction, direction)
    codecs: list[Codec] = []
    for pt in pts:
        known = rtpmaps.get(pt) or STATIC_PT.get(pt)
        if known is not None:
            codecs.append(Codec(known[0], pt, known[1]))
    return AudioDescription(address, port, tuple(codecs), direction, handshake, tuple(lines), profile, tuple(crypto))


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
    telephone_event_pt: int | None = None,
    crypto: str | None = None,
    savp: bool = True,
    cbr_opus: bool = False,
) -> str:
    """Render a one-stream audio SDP. ``handshake`` is the base64url value of the ``a=voipgw:`` line.

    ``crypto`` (an ``a=crypto`` value from voipgw.rtp.sdes) makes the stream ``RTP/SAVP`` (SDES-SRTP), or with
    ``savp=False`` an ``RTP/AVP`` stream with a crypto line (RFC 4568 best effort: a phone may answer plain).

    ``telephone_event_pt`` adds RFC 4733 DTMF (``telephone-event/8000``, events 0-16) after the audio codecs.
    ``cbr_opus`` asks the peer for 24 kbps CBR Opus (RFC 7587 ``maxaveragebitrate=24000;cbr=1``): a gateway that
    seals a phone's packets as they are (pass-through) then makes frames of one size (voipgw.gateway.pipes).
    ``a=<direction>`` is always written, ``a=sendrecv`` included: baresip and Linphone both accept it, and the
    output with the default arguments stays byte-identical to earlier versions.
    """
    if direction not in DIRECTIONS:
        raise SdpError("sdp-bad-direction", direction[:20])
    if telephone_event_pt is not None and not 96 <= telephone_event_pt <= 127:
        raise SdpError("sdp-bad-payload-type", f"telephone-event payload type {telephone_event_pt}")
    pts = [c.payload_type for c in codecs]
    if any(c.payload_type == telephone_event_pt and c.name != TELEPHONE_EVENT for c in codecs):
        raise SdpError("sdp-bad-payload-type", f"payload type {telephone_event_pt} is already an audio codec")
    if telephone_event_pt is not None and telephone_event_pt not in pts:
        pts.append(telephone_event_pt)
    ip_ver = "IP6" if ":" in host else "IP4"
    sid = session_id if session_id is not None else secrets.randbelow(1 << 62)
    lines = [
        "v=0",
        f"o=voipgw {sid} {version} IN {ip_ver} {host}",
        "s=voipgw",
        f"c=IN {ip_ver} {host}",
        "t=0 0",
        f"m=audio {port} {SAVP if crypto is not None and savp else 'RTP/AVP'} {' '.join(str(pt) for pt in pts)}",
    ]
    for c in codecs:
        if c.name == OPUS:
            lines.append(f"a=rtpmap:{c.payload_type} opus/48000/2")
            cbr = ";maxaveragebitrate=24000;cbr=1" if cbr_opus else ""
            lines.append(f"a=fmtp:{c.payload_type} minptime=20;useinbandfec=0{cbr}")
        elif c.name == TELEPHONE_EVENT:
            lines.append(f"a=rtpmap:{c.payload_type} telephone-event/{c.clock_rate}")
            if c.payload_type == telephone_event_pt:
                lines.append(f"a=fmtp:{c.payload_type} {TELEPHONE_EVENT_FMTP}")
        elif c.payload_type >= 96:
            lines.append(f"a=rtpmap:{c.payload_type} {c.name.upper()}/{c.clock_rate}")
    if telephone_event_pt is not None and not any(c.payload_type == telephone_event_pt for c in codecs):
        lines.append(f"a=rtpmap:{telephone_event_pt} telephone-event/{TELEPHONE_EVENT_RATE}")
        lines.append(f"a=fmtp:{telephone_event_pt} {TELEPHONE_EVENT_FMTP}")
    lines.append("a=ptime:20")
    lines.append(f"a={direction}")
    if crypto is not None:
        lines.append(f"a=crypto:{crypto}")
    if handshake is not None:
        lines.append(f"a=voipgw:{handshake}")
    return "\r\n".join(lines) + "\r\n"


def answer_direction(offered: str, *, local_hold: bool = False) -> str:
    """Our answer's direction for an offer's (RFC 3264 §6.1), optionally putting our side on hold too."""
    send = offered in (SENDRECV, RECVONLY) and not local_hold
    recv = offered in (SENDRECV, SENDONLY)
    return {(True, True): SENDRECV, (True, False): SENDONLY, (False, True): RECVONLY}.get((send, recv), INACTIVE)


def hold_direction(local_hold: bool, remote_hold: bool = False) -> str:
    """The direction to offer when we (and/or the peer, as last seen) hold the call: RFC 6337 §5.3 style."""
    # We hold: the peer must stop sending to us (sendonly). The peer holds us: we must not send (recvonly).
    send, recv = not remote_hold, not local_hold
    return {(True, True): SENDRECV, (True, False): SENDONLY, (False, True): RECVONLY}.get((send, recv), INACTIVE)


def telephone_event_codec(pt: int = DEFAULT_TELEPHONE_EVENT_PT) -> Codec:
    return Codec(TELEPHONE_EVENT, pt, TELEPHONE_EVENT_RATE)


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
