"""One fuzz target per parser that sees network or file bytes; each takes bytes and lets only bugs escape.

A target swallows exactly the parser's typed rejections (checking each names a specific reason) and raises
anything else: an unexpected exception class, a generic reason, or a broken invariant is a finding.
Used by tests/fuzz/test_*.py (hypothesis, bounded) and tests/fuzz/run.py (atheris, ``make fuzz``).
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ratchet.aor import normalize_aor
from ratchet.errors import (
    FrameError,
    HandshakeError,
    IdentityFileError,
    MalformedAor,
    MalformedFrame,
    MalformedIdentityKey,
    RatchetError,
)
from ratchet.frame import (
    MAX_CTL,
    RATCHET_KEY_LEN,
    TLV_RATCHET_KEY,
    RatchetKeyAnnouncement,
    parse_control,
    split_plaintext,
)
from ratchet.handshake import AnswerMessage, OfferMessage, decode_attribute, encode_attribute
from ratchet.identity import IdentityKey, IdentityPublicKey
from ratchet.sealer import _Plan
from ratchet.session import MediaSession
from tests.support.handshake_fixtures import CLASSICAL, HYBRID, T0, answer, make_offerer
from tests.support.ratchet_pairs import make_pair
from voipgw.config import ConfigError as PhoneConfigError
from voipgw.config import load_phone_config
from voipgw.ops.config import ConfigError as GatewayConfigError
from voipgw.ops.config import load_gateway_config
from voipgw.ops.control import RequestError, handle_request, parse_request
from voipgw.rtp.dtmf import SEALED_LEN, DtmfError, DtmfReceiver, TelephoneEvent, decode_sealed, encode_sealed
from voipgw.rtp.packet import (
    PacketError,
    ReceiverReport,
    ReportBlock,
    SenderReport,
    SourceDescription,
    build_rtcp,
    build_rtp,
    parse_rtcp,
    parse_rtp,
)
from voipgw.sdp import SdpError, build_sdp, opus_codec, parse_sdp
from voipgw.sip.digest import (
    Authenticated,
    Challenge,
    DigestAuthenticator,
    DigestParseError,
    Forbidden,
    parse_authorization,
)
from voipgw.sip.framing import FramingError, Message, Ping, StreamFramer
from voipgw.sip.guard import Accept, DatagramGuard, Drop, Reply, SipStats
from voipgw.store.errors import ContactStoreError
from voipgw.store.export import MalformedExport, parse_document

Target = Callable[[bytes], None]
ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = bytes(range(40))
MAX_INPUT = 70_000
"""Inputs beyond this are truncated: every parser here has its own, smaller size bound."""


class Finding(AssertionError):
    """A fuzz input broke a rule (the wrong exception type, no specific reason, an invariant)."""


def _typed(exc: RatchetError, *generic: type[RatchetError]) -> None:
    if type(exc) in generic or not exc.reason or exc.reason in ("error", "handshake", "frame"):
        raise Finding(f"rejection without a specific reason: {type(exc).__name__}({exc})") from exc


def _coded(exc: PacketError | SdpError) -> None:
    if not exc.reason or " " in exc.reason:
        raise Finding(f"rejection without a reason code: {exc!r}") from exc


# --- handshake (SDP attribute and the binary messages) ---------------------------------------------------------

_OFFERER = make_offerer(HYBRID)
OFFER = _OFFERER.offer_bytes
ANSWER, _ = answer(OFFER)
CLASSICAL_OFFER = make_offerer(CLASSICAL).offer_bytes


def handshake_offer(data: bytes) -> None:
    """An offer as the answerer receives it: structural parse, then the full answer path."""
    for call in (lambda: OfferMessage.parse(data), lambda: answer(data)):
        try:
            call()
        except HandshakeError as exc:
            _typed(exc, HandshakeError)


def handshake_answer(data: bytes) -> None:
    """An answer as the offerer receives it; a refusal must not consume the offerer (it can still accept)."""
    try:
        AnswerMessage.parse(data)
    except HandshakeError as exc:
        _typed(exc, HandshakeError)
    offerer = make_offerer(CLASSICAL)
    try:
        offerer.accept_answer(data, T0 + 0.2)
    except HandshakeError as exc:
        _typed(exc, HandshakeError)


def sdp_attribute(data: bytes) -> None:
    """The ``a=voipgw:`` value (as text: the SIP guard has already refused non-UTF-8)."""
    text = data.decode("utf-8", "replace")
    try:
        decode_attribute(text)
    except HandshakeError as exc:
        _typed(exc, HandshakeError)
    # The production path: voipgw.sdp finds the line (or refuses the SDP), ratchet decodes the value.
    try:
        found = parse_sdp(build_sdp("127.0.0.1", 4000, [opus_codec()], handshake=text)).handshake
    except SdpError as exc:
        _coded(exc)
        return
    if found is None:
        return
    try:
        decode_attribute(found)
    except HandshakeError as exc:
        _typed(exc, HandshakeError)


def sdp(data: bytes) -> None:
    """A whole SDP body, then the handshake attribute it carries."""
    try:
        desc = parse_sdp(data.decode("utf-8", "replace"))
    except SdpError as exc:
        _coded(exc)
        return
    if not 0 <= desc.port <= 65535:
        raise Finding(f"port {desc.port} out of range accepted")
    if desc.handshake is None:
        return
    try:
        decode_attribute(desc.handshake)
    except HandshakeError as exc:
        _typed(exc, HandshakeError)


# --- media frames and in-band ratchet key announcements ---------------------------------------------------------


def _pair(seed: bytes) -> tuple[MediaSession, MediaSession]:
    offerer_keys, answerer_keys = make_pair(seed=seed)
    return MediaSession(offerer_keys, T0), MediaSession(answerer_keys, T0)


def frame_header(data: bytes) -> None:
    """The plaintext split and the control-block parser alone (what runs after the tag verified)."""
    try:
        block, content = split_plaintext(data)
        if 1 + len(block) + len(content) != len(data):
            raise Finding("control block and content do not add up to the plaintext")
        parse_control(block)
    except MalformedFrame as exc:
        _typed(exc)


def frame_open(data: bytes) -> None:
    """A datagram payload at a live receiver: only a FrameError, and the receiver's state is unchanged."""
    tx, rx = _pair(b"fuzz-frame")
    genuine = [tx.seal(PAYLOAD, T0 + i * 0.02) for i in range(3)]
    rx.open(genuine[0], T0)
    opened = False
    try:
        rx.open(data, T0 + 0.03)
        opened = True  # a frame sealed under this call's keys (a mutation that kept it authentic)
    except FrameError as exc:
        _typed(exc, FrameError)
    check_next = not (opened and rx.last_index == 2)
    if check_next and rx.open(genuine[2], T0 + 0.05) != PAYLOAD:
        raise Finding("a genuine frame opened to another payload after the fuzz input")
    if rx.stats.opened != 1 + opened + check_next:
        raise Finding(f"opened count {rx.stats.opened} does not add up")


def key_announcement(data: bytes) -> None:
    """A control block of the peer's choice inside an authenticated frame (a hostile but keyed peer)."""
    body = data[:MAX_CTL]
    if not body:
        return
    tx, rx = _pair(b"fuzz-announce")
    plan = _Plan(body, key=False, reveal=False)

    class HostileSealer(type(tx.sealer)):  # type: ignore[misc]
        """The same sealer with its honest control block replaced (the sealer is slotted: no instance patching)."""

        __slots__ = ()

        def _plan(self, now: float, event: bytes | None) -> _Plan:
            return plan

    tx.sealer.__class__ = HostileSealer
    for i in range(3):
        frame = tx.seal(PAYLOAD, T0 + i * 0.02)
        try:
            rx.open(frame, T0 + i * 0.02)
        except FrameError as exc:
            _typed(exc, FrameError)
    while rx.next_event() is not None:
        pass


def announcement_body(epoch: int, peer_epoch: int, start: int, public: bytes) -> bytes:
    """The TLV body (without the length byte) of one ratchet-key announcement."""
    return bytes([TLV_RATCHET_KEY, RATCHET_KEY_LEN]) + struct.pack(">HHI", epoch, peer_epoch, start) + public


# --- RTP / RTCP ----------------------------------------------------------------------------------------------


def rtp(data: bytes) -> None:
    try:
        pkt = parse_rtp(data)
    except PacketError as exc:
        _coded(exc)
        return
    if len(pkt.payload) > len(data) - 12 or not 0 <= pkt.payload_type <= 127:
        raise Finding(f"parsed packet inconsistent with its {len(data)} bytes: {pkt!r:.80}")


def rtcp(data: bytes) -> None:
    try:
        packets = parse_rtcp(data)
    except PacketError as exc:
        _coded(exc)
        return
    if len(packets) > len(data) // 4:
        raise Finding(f"{len(packets)} RTCP packets out of {len(data)} bytes")


# --- control socket -------------------------------------------------------------------------------------------


def _snapshot() -> dict[str, Any]:
    return {"calls": [], "registrations": []}


def control(data: bytes) -> None:
    try:
        parse_request(data)
    except RequestError as exc:
        if not str(exc):
            raise Finding("RequestError without a message") from exc
    reply = handle_request(data, _snapshot)
    if not reply.endswith(b"\n") or reply.count(b"\n") != 1:
        raise Finding(f"reply is not one line: {reply[:80]!r}")
    obj = json.loads(reply)
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool):
        raise Finding(f"reply is not an ok/error object: {reply[:80]!r}")


# --- files: configuration, contacts import, identity key --------------------------------------------------------

_SCRATCH = Path(tempfile.mkdtemp(prefix="voipgw-fuzz-"))


def _scratch_file(name: str, data: bytes) -> Path:
    path = _SCRATCH / f"{os.getpid()}-{name}"
    path.write_bytes(data)
    return path


def phone_config(data: bytes) -> None:
    try:
        config = load_phone_config(_scratch_file("phone.toml", data), {})
    except PhoneConfigError as exc:
        if not str(exc):
            raise Finding("ConfigError without a message") from exc
        return
    for name in ("max_skew_s", "no_answer_timeout_s", "dh_interval_s"):
        if not math.isfinite(getattr(config, name)):
            raise Finding(f"{name}={getattr(config, name)} accepted")
    if config.handshake is None or config.media is None:  # a config that loads builds its protocol objects
        raise Finding("no protocol configuration")


def gateway_config(data: bytes) -> None:
    try:
        load_gateway_config(_scratch_file("gateway.toml", data))
    except GatewayConfigError as exc:
        if not str(exc):
            raise Finding("ConfigError without a message") from exc


def contacts_import(data: bytes) -> None:
    """What ``voipgw contacts import`` does before touching the store: JSON, then full validation."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return  # the CLI reports these itself (cmd_contacts.run_import)
    try:
        parse_document(doc)
    except MalformedExport as exc:
        if not str(exc):
            raise Finding("MalformedExport without a message") from exc
    except ContactStoreError as exc:
        raise Finding(f"untyped contacts rejection {type(exc).__name__}: {exc}") from exc


def identity(data: bytes) -> None:
    """The PEM identity file, a serialized identity public key and an AOR."""
    try:
        IdentityKey.from_pem(data)
    except IdentityFileError as exc:
        _typed(exc, IdentityFileError)
    try:
        IdentityPublicKey.from_bytes(data)
    except MalformedIdentityKey as exc:
        _typed(exc)
    try:
        normalize_aor(data.decode("utf-8", "replace"))
    except MalformedAor as exc:
        _typed(exc)


# --- SIP pre-parse guard ----------------------------------------------------------------------------------------


def sip_guard(data: bytes) -> None:
    stats = SipStats()
    verdict = DatagramGuard("127.0.0.1", "fuzz", stats).check(data, ("127.0.0.1", 9))
    if not isinstance(verdict, Accept | Reply | Drop):
        raise Finding(f"verdict {verdict!r}")
    if isinstance(verdict, Reply) and not verdict.data.startswith(b"SIP/2.0 "):
        raise Finding(f"reply is not SIP: {verdict.data[:40]!r}")
    if stats.accepted + stats.malformed != 1:
        raise Finding("datagram not counted exactly once")


# --- DTMF events and SIP digest credentials (added this session by the DTMF and SIP owners) -------------------

_AUTH = DigestAuthenticator("voipgw", lambda user: "secret" if user == "alice" else None)
AUTH_SEED = (
    f'Digest username="alice", realm="voipgw", nonce="{_AUTH.new_nonce()}", uri="sip:bob@127.0.0.1", '
    'response="0123456789abcdef0123456789abcdef", algorithm=MD5, qop=auth, nc=00000001, cnonce="c1"'
)


def dtmf(data: bytes) -> None:
    """RFC 4733 payloads, and a stream of sealed events (8 bytes each) into one receiver."""
    try:
        TelephoneEvent.decode(data)
    except DtmfError as exc:
        if not str(exc):
            raise Finding("DtmfError without a message") from exc
    receiver = DtmfReceiver()
    reported = []
    for i in range(0, len(data) - len(data) % SEALED_LEN, SEALED_LEN):
        try:
            digit = receiver.feed(*decode_sealed(data[i : i + SEALED_LEN]))
        except DtmfError:
            continue
        if digit is not None:
            reported.append(digit)
    if len(reported) != receiver.reported:
        raise Finding("reported digits do not match the receiver's count")


def sip_digest(data: bytes) -> None:
    """An Authorization header value: parsed, then verified (every outcome is a verdict, never an exception)."""
    text = data.decode("utf-8", "replace")
    try:
        parse_authorization(text)
    except DigestParseError as exc:
        if not str(exc):
            raise Finding("DigestParseError without a message") from exc
    verdict = _AUTH.verify([text], "INVITE", "alice")
    if not isinstance(verdict, Authenticated | Challenge | Forbidden):
        raise Finding(f"verdict {verdict!r}")
    if isinstance(verdict, Authenticated):
        raise Finding("a fuzzed credential authenticated")


STREAM_MAX_HEADER = 512
STREAM_MAX_BODY = 1024
"""Small limits, so fuzzed streams reach them."""


def _frame_stream(chunks: list[bytes]) -> tuple[list[Message | Ping], str | None]:
    framer = StreamFramer(STREAM_MAX_HEADER, STREAM_MAX_BODY)
    frames: list[Message | Ping] = []
    for chunk in chunks:
        try:
            frames += framer.feed(chunk)
        except FramingError as exc:
            if type(exc) is FramingError or not exc.detail:
                raise Finding(f"unspecific framing error {exc!r}") from exc
            try:
                framer.feed(b"INVITE")
            except FramingError:
                return frames, exc.kind
            raise Finding("a framer accepted bytes after a framing error") from exc
    return frames, None


def sip_stream(data: bytes) -> None:
    """A SIP-over-TCP/TLS byte stream (RFC 3261 §18.3 framing, RFC 5626 pings), as one read and as many reads cut
    where the first byte says: the frames and the verdict must not depend on how the stream was cut."""
    step = 1 + (data[0] if data else 0) % 97
    whole, whole_error = _frame_stream([data])
    cut, cut_error = _frame_stream([data[i : i + step] for i in range(0, len(data), step)])
    if whole_error != cut_error:
        raise Finding(f"verdict depends on the cuts: {whole_error} whole, {cut_error} cut every {step} bytes")
    if whole_error is None and whole != cut:
        raise Finding(f"frames depend on the cuts (every {step} bytes)")
    framed = sum(len(f.data) if isinstance(f, Message) else 4 for f in cut)
    if framed > len(data):
        raise Finding("more bytes framed than fed")
    for f in cut:
        if isinstance(f, Message) and len(f.data) > STREAM_MAX_HEADER + STREAM_MAX_BODY:
            raise Finding("a message over the limits was delivered")


TARGETS: dict[str, Target] = {
    "handshake_offer": handshake_offer,
    "handshake_answer": handshake_answer,
    "sdp_attribute": sdp_attribute,
    "sdp": sdp,
    "frame_header": frame_header,
    "frame_open": frame_open,
    "key_announcement": key_announcement,
    "rtp": rtp,
    "rtcp": rtcp,
    "control": control,
    "phone_config": phone_config,
    "gateway_config": gateway_config,
    "contacts_import": contacts_import,
    "identity": identity,
    "sip_guard": sip_guard,
    "dtmf": dtmf,
    "sip_digest": sip_digest,
    "sip_stream": sip_stream,
}


def run(name: str, data: bytes) -> None:
    TARGETS[name](data[:MAX_INPUT])


# --- seeds: one or more valid inputs per target, so mutation starts deep inside each format --------------------


def _sip_request() -> bytes:
    return (
        b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKf1\r\n"
        b"From: <sip:alice@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: f1\r\nCSeq: 1 INVITE\r\n"
        b"Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
    )


def _contacts_doc() -> bytes:
    key = IdentityKey.from_seed(b"\x07" * 32).public.serialize().hex()
    contact = {
        "aor": "bob@example.org",
        "identity_key": key,
        "key_first_seen": 1.0,
        "first_seen": 1.0,
        "last_seen": 2.0,
        "call_count": 3,
        "verified": True,
        "verified_at": 2.0,
        "verified_method": "sas",
        "local_aor": "alice@example.org",
        "changed_at": None,
        "pending_key": None,
        "pending_first_seen": None,
        "pending_last_seen": None,
        "name": "Bob Example",
        "history": [
            {
                "identity_key": key,
                "first_seen": 0.5,
                "last_seen": 0.9,
                "replaced_at": 1.0,
                "why": "changed",
                "was_verified": False,
            }
        ],
    }
    return json.dumps({"format": "voipgw-contacts", "version": 1, "exported_at": 5.0, "contacts": [contact]}).encode()


def seeds() -> dict[str, list[bytes]]:
    tx, _rx = _pair(b"fuzz-frame")
    frames = [tx.seal(PAYLOAD, T0 + i * 0.02) for i in range(3)]
    public = IdentityKey.from_seed(b"\x01" * 32).public
    offer_sdp = build_sdp("127.0.0.1", 4000, [opus_codec()], handshake=encode_attribute(CLASSICAL_OFFER))
    report = ReportBlock(1, 2, 3, 4, 5, 6, 7)
    return {
        "handshake_offer": [OFFER, CLASSICAL_OFFER],
        "handshake_answer": [ANSWER],
        "sdp_attribute": [encode_attribute(CLASSICAL_OFFER).encode()],
        "sdp": [offer_sdp.encode()],
        "frame_header": [b"\x00" + PAYLOAD, b"\x2a" + RatchetKeyAnnouncement(0, 0xFFFF, 0, bytes(32)).encode()],
        "frame_open": frames,
        "key_announcement": [
            RatchetKeyAnnouncement(0, 0xFFFF, 0, bytes(range(32))).encode(),
            announcement_body(1, 0, 1, bytes(32)),
        ],
        "rtp": [build_rtp(111, 7, 960, 0x1234, PAYLOAD, marker=True), build_rtp(0, 1, 2, 3, b"", csrc=(1, 2))],
        "rtcp": [
            build_rtcp(SenderReport(1, 2, 3, 4, 5, (report,))) + build_rtcp(SourceDescription(((1, "cname@host"),))),
            build_rtcp(ReceiverReport(9, (report, report))),
        ],
        "control": [b'{"cmd": "status"}\n', b'{"cmd":"ping"}'],
        "phone_config": [(ROOT / "config" / "phone.example.toml").read_bytes()],
        "gateway_config": [(ROOT / "config" / "gateway.example.toml").read_bytes()],
        "contacts_import": [_contacts_doc()],
        "identity": [IdentityKey.from_seed(b"\x02" * 32).to_pem(), public.serialize(), b"sip:bob@Example.ORG:5060"],
        "sip_guard": [_sip_request()],
        "dtmf": [
            TelephoneEvent(5, False, 10, 160).encode(),
            encode_sealed(7, TelephoneEvent(1, False, 10, 160)) + encode_sealed(7, TelephoneEvent(1, True, 10, 800)),
        ],
        "sip_digest": [AUTH_SEED.encode()],
        "sip_stream": [b"\r\n\r\n" + _sip_request() + b"\r\n\r\n" + _sip_request()],
    }
