"""The signed zero-round-trip handshake carried in the SDP offer/answer: wire formats, checks, key schedule.

Sans-I/O: bytes and ``now`` in, bytes and :class:`SessionKeys` out. It never reads a clock, touches SIP or
keeps an ephemeral private key past the handshake. docs/protocol/handshake.md is the normative description.

Theory of operation: the offerer builds a signed OFFER (``Offerer``) that goes into the INVITE's SDP; the
answerer checks it and returns a signed ANSWER bound to the offer's hash plus its keys (``answer_offer``); the
offerer checks the answer (``Offerer.accept_answer``) and derives the same keys. Every refusal raises one
:class:`HandshakeError` subclass, in the order documented in the spec.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import math
import os
import re
import struct
from dataclasses import dataclass, field, replace
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .aor import normalize_aor
from .errors import (
    BadParameters,
    CallIdMismatch,
    DowngradeDetected,
    FutureTimestamp,
    HandshakeClosed,
    HybridRequired,
    IdentityMismatch,
    MalformedAor,
    MalformedHandshake,
    OfferHashMismatch,
    ReplayedNonce,
    StaleTimestamp,
    UnsupportedSuite,
    UnsupportedVersion,
)
from .identity import SERIALIZED_LEN as IDENTITY_LEN
from .identity import SIGNATURE_LEN, IdentityKey, IdentityPublicKey
from .kdf import LABEL_CHAIN, LABEL_ROOT, LABEL_SAS, LABEL_TIME, hkdf_expand, hkdf_extract
from .params import (
    DEFAULT_INTERVAL_MS,
    MAX_FRAMES_PER_KEY,
    MAX_INTERVAL_MS,
    MIN_FRAMES_PER_KEY,
    MIN_INTERVAL_MS,
    Direction,
    FrameSuite,
    Role,
    SendParams,
    SessionKeys,
    Suite,
)
from .sas import SAS_COMMITMENT_LEN, SAS_SECRET_LEN, sas_commitment

# --- wire constants -----------------------------------------------------------------------------------------

VERSION = 1
TYPE_OFFER = 0x01
TYPE_ANSWER = 0x02
NONCE_LEN = 16
X25519_LEN = 32
OFFER_HASH_LEN = 32
MLKEM_EK_LEN = 1184
MLKEM_CT_LEN = 1088
MLKEM_SEED_LEN = 64
MAX_STRING_LEN = 255
KNOWN_SUITES_MASK = int(Suite.X25519) | int(Suite.X25519_MLKEM768)
FLAG_PER_FRAME_KEYS = 0x01
FLAG_FRAME_SUITE_SHIFT = 1
FLAG_FRAME_SUITE_MASK = 0x06
KNOWN_FLAGS_MASK = FLAG_PER_FRAME_KEYS | FLAG_FRAME_SUITE_MASK

OFFER_SIG_CONTEXT = b"voipgw-v1 offer\x00"
ANSWER_SIG_CONTEXT = b"voipgw-v1 answer\x00"
TRANSCRIPT_LABEL = b"voipgw-v1 transcript"

MAX_ATTRIBUTE_CHARS = 8192
"""Bound on the base64 text we decode (the largest legal message is under 2 KB of binary)."""

DEFAULT_MAX_SKEW_S = 60.0
DEFAULT_NONCE_CACHE_ENTRIES = 100_000

_U64_MAX = (1 << 64) - 1
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


# --- configuration ------------------------------------------------------------------------------------------


def _check_send_params(params: SendParams) -> None:
    if not MIN_FRAMES_PER_KEY <= params.frames_per_key <= MAX_FRAMES_PER_KEY:
        raise BadParameters(f"frames_per_key {params.frames_per_key} outside the accepted range")


def _check_interval(interval_ms: int) -> None:
    if not MIN_INTERVAL_MS <= interval_ms <= MAX_INTERVAL_MS:
        raise BadParameters(f"interval_ms {interval_ms} outside the accepted range")


@dataclass(frozen=True)
class HandshakeConfig:
    """Local handshake policy; the same object serves the offering and the answering role."""

    suites: frozenset[Suite] = frozenset({Suite.X25519})
    """Suites this side offers / accepts. x25519 is mandatory; add X25519_MLKEM768 for the hybrid."""
    max_skew_s: float = DEFAULT_MAX_SKEW_S
    """Largest accepted |now - peer timestamp|; also sizes the nonce cache's memory."""
    send_params: SendParams = field(default_factory=SendParams)
    """How this side keys the frames it sends (signed in its message)."""
    interval_ms: int = DEFAULT_INTERVAL_MS
    """Time-key renewal interval proposed in our offers (an answerer adopts the offer's)."""
    accept_any_callee: bool = False
    """Accept a peer whose signed AOR differs from the one we called/are (call forwarding, gateways)."""
    require_hybrid: bool = False
    """Refuse a session on x25519 alone: the peer must offer (as offerer) or choose (as answerer) X25519_MLKEM768.
    x25519 is still offered, as the wire format demands; this is local policy, invisible on the wire."""

    def __post_init__(self) -> None:
        if Suite.X25519 not in self.suites:
            raise ValueError("the x25519 suite is mandatory")
        if self.require_hybrid and Suite.X25519_MLKEM768 not in self.suites:
            raise ValueError("require_hybrid needs the X25519_MLKEM768 suite in suites")
        if not 0 < self.max_skew_s < math.inf:  # also refuses nan, which would pass every freshness comparison
            raise ValueError("max_skew_s must be positive and finite")
        _check_send_params(self.send_params)
        _check_interval(self.interval_ms)

    @property
    def suite_mask(self) -> int:
        mask = 0
        for suite in self.suites:
            mask |= int(suite)
        return mask


# --- parsing helpers ----------------------------------------------------------------------------------------


class _Reader:
    """Cursor over an untrusted buffer; every short read or bad value is a MalformedHandshake."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise MalformedHandshake("message truncated")
        out = self._data[self._pos : end]
        self._pos = end
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack(">Q", self.take(8))[0]
        return value

    def text(self, what: str) -> str:
        raw = self.take(self.u8())
        if not raw:
            raise MalformedHandshake(f"empty {what}")
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedHandshake(f"{what} is not UTF-8") from exc
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
            raise MalformedHandshake(f"{what} contains spaces or control characters")
        return value

    def aor(self, what: str) -> str:
        value = self.text(what)
        try:
            normal = normalize_aor(value)
        except MalformedAor as exc:
            raise MalformedAor(f"{what}: {exc.detail}") from exc
        if normal != value:
            raise MalformedAor(f"{what} is not in normal form")
        return value

    def identity(self) -> bytes:
        raw = self.take(IDENTITY_LEN)
        IdentityPublicKey.from_bytes(raw)  # raises MalformedIdentityKey
        return raw

    @property
    def offset(self) -> int:
        return self._pos

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise MalformedHandshake("trailing bytes after the signature")

    def signature(self) -> bytes:
        """The closing signature, which must end the message."""
        signature = self.take(SIGNATURE_LEN)
        self.finish()
        return signature


def _read_header(reader: _Reader, expected_type: int) -> None:
    if not reader._data:
        raise MalformedHandshake("empty message")
    version = reader.u8()
    if version != VERSION:
        raise UnsupportedVersion(f"version {version}")
    msg_type = reader.u8()
    if msg_type != expected_type:
        raise MalformedHandshake(f"unexpected message type 0x{msg_type:02x}")


def _open_message(data: bytes, expected_type: int) -> _Reader:
    """A reader over ``data`` positioned after a checked version and message type."""
    reader = _Reader(bytes(data))
    _read_header(reader, expected_type)
    return reader


def _read_keying(reader: _Reader) -> tuple[SendParams, int, int, bytes]:
    """The fields both messages carry after their suite bytes: send parameters, interval, timestamp, nonce."""
    flags = reader.u8()
    frames_per_key = reader.u16()
    params = _decode_params(flags, frames_per_key)
    return params, reader.u32(), reader.u64(), reader.take(NONCE_LEN)


def _encode_flags(params: SendParams) -> int:
    return (FLAG_PER_FRAME_KEYS if params.per_frame_keys else 0) | (int(params.frame_suite) << FLAG_FRAME_SUITE_SHIFT)


def _decode_params(flags: int, frames_per_key: int) -> SendParams:
    if flags & ~KNOWN_FLAGS_MASK:
        raise MalformedHandshake("reserved flag bits set")
    try:
        frame_suite = FrameSuite((flags & FLAG_FRAME_SUITE_MASK) >> FLAG_FRAME_SUITE_SHIFT)
    except ValueError as exc:
        raise MalformedHandshake("unknown frame suite") from exc
    return SendParams(
        frames_per_key=frames_per_key,
        per_frame_keys=bool(flags & FLAG_PER_FRAME_KEYS),
        frame_suite=frame_suite,
    )


def _text_field(value: str, what: str) -> bytes:
    raw = value.encode("utf-8")
    if not 1 <= len(raw) <= MAX_STRING_LEN:
        raise BadParameters(f"{what} must be 1..{MAX_STRING_LEN} bytes of UTF-8")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise BadParameters(f"{what} contains spaces or control characters")
    return bytes([len(raw)]) + raw


def _suites_in(mask: int) -> list[Suite]:
    return [s for s in Suite if mask & int(s)]


def _pack_fixed(
    msg_type: int, suite_bytes: tuple[int, ...], params: SendParams, interval_ms: int, timestamp_ms: int
) -> bytes:
    """The fixed-size head of a message: version, type, its suite byte(s), flags, frames per key, interval, time."""
    return struct.pack(
        f">BB{'B' * len(suite_bytes)}BHIQ",
        VERSION,
        msg_type,
        *suite_bytes,
        _encode_flags(params),
        params.frames_per_key,
        interval_ms,
        timestamp_ms,
    )


def _join_body(*parts: bytes, trailer: bytes | None) -> bytes:
    """The signed body: ``parts`` then the optional ML-KEM value."""
    return b"".join(parts if trailer is None else (*parts, trailer))


def _ephemeral_x25519(private: bytes | None) -> X25519PrivateKey:
    """The injected ephemeral key (test vectors), else a fresh one."""
    return X25519PrivateKey.from_private_bytes(private) if private is not None else X25519PrivateKey.generate()


def _own_nonce(nonce: bytes | None) -> bytes:
    """The injected nonce (test vectors), else a fresh random one."""
    nonce = nonce if nonce is not None else os.urandom(NONCE_LEN)
    if len(nonce) != NONCE_LEN:
        raise ValueError("nonce must be 16 bytes")
    return nonce


# --- messages -----------------------------------------------------------------------------------------------


class _SignedMessage:
    """What the offer and the answer share: a body signed by the sender's identity under a context string."""

    _SIG_CONTEXT: ClassVar[bytes]
    identity: bytes
    signature: bytes

    def body(self) -> bytes:
        """Every byte before the signature."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        return self.body() + self.signature

    def sign(self, identity: IdentityKey) -> bytes:
        """``identity``'s signature over this message's body."""
        return identity.sign(self._SIG_CONTEXT + self.body())

    def verify_signature(self) -> None:
        """Raise BadSignature unless the embedded identity signed this message."""
        IdentityPublicKey.from_bytes(self.identity).verify(self.signature, self._SIG_CONTEXT + self.body())


@dataclass(frozen=True, repr=False)
class OfferMessage(_SignedMessage):
    """The offer, as on the wire (all public values; the signature covers every field before it)."""

    _SIG_CONTEXT: ClassVar[bytes] = OFFER_SIG_CONTEXT

    suite_mask: int
    send_params: SendParams
    interval_ms: int
    timestamp_ms: int
    nonce: bytes
    sas_commitment: bytes
    identity: bytes
    x25519: bytes
    offerer_aor: str
    callee_aor: str
    call_id: str
    mlkem_ek: bytes | None
    signature: bytes = b""

    def body(self) -> bytes:
        """Every byte before the signature."""
        hybrid = bool(self.suite_mask & int(Suite.X25519_MLKEM768))
        if hybrid != (self.mlkem_ek is not None):
            raise ValueError("ML-KEM encapsulation key present iff the hybrid bit is set")
        return _join_body(
            _pack_fixed(TYPE_OFFER, (self.suite_mask,), self.send_params, self.interval_ms, self.timestamp_ms),
            self.nonce,
            self.sas_commitment,
            self.identity,
            self.x25519,
            _text_field(self.offerer_aor, "offerer AOR"),
            _text_field(self.callee_aor, "callee AOR"),
            _text_field(self.call_id, "Call-ID"),
            trailer=self.mlkem_ek,
        )

    @classmethod
    def parse(cls, data: bytes) -> OfferMessage:
        """Structural parse only (no signature, freshness or policy check)."""
        r = _open_message(data, TYPE_OFFER)
        suite_mask = r.u8()
        if suite_mask & ~KNOWN_SUITES_MASK:
            raise MalformedHandshake("unknown suite bits set in the offer")
        if not suite_mask:
            raise MalformedHandshake("empty suite mask")
        params, interval_ms, timestamp_ms, nonce = _read_keying(r)
        commitment = r.take(SAS_COMMITMENT_LEN)
        identity = r.identity()
        x25519 = r.take(X25519_LEN)
        offerer_aor = r.aor("offerer AOR")
        callee_aor = r.aor("callee AOR")
        call_id = r.text("Call-ID")
        ek = r.take(MLKEM_EK_LEN) if suite_mask & int(Suite.X25519_MLKEM768) else None
        signature = r.signature()
        return cls(
            suite_mask=suite_mask,
            send_params=params,
            interval_ms=interval_ms,
            timestamp_ms=timestamp_ms,
            nonce=nonce,
            sas_commitment=commitment,
            identity=identity,
            x25519=x25519,
            offerer_aor=offerer_aor,
            callee_aor=callee_aor,
            call_id=call_id,
            mlkem_ek=ek,
            signature=signature,
        )

    def __repr__(self) -> str:
        return (
            f"OfferMessage(suites=0x{self.suite_mask:02x}, from={self.offerer_aor!r}, "
            f"to={self.callee_aor!r}, call_id={self.call_id!r})"
        )


@dataclass(frozen=True, repr=False)
class AnswerMessage(_SignedMessage):
    """The answer, as on the wire; ``offer_hash`` binds it to exactly one offer."""

    _SIG_CONTEXT: ClassVar[bytes] = ANSWER_SIG_CONTEXT

    chosen_suite: Suite
    supported_mask: int
    send_params: SendParams
    interval_ms: int
    timestamp_ms: int
    nonce: bytes
    offer_hash: bytes
    identity: bytes
    x25519: bytes
    answerer_aor: str
    mlkem_ct: bytes | None
    signature: bytes = b""

    def body(self) -> bytes:
        hybrid = self.chosen_suite is Suite.X25519_MLKEM768
        if hybrid != (self.mlkem_ct is not None):
            raise ValueError("ML-KEM ciphertext present iff the hybrid suite is chosen")
        return _join_body(
            _pack_fixed(
                TYPE_ANSWER,
                (int(self.chosen_suite), self.supported_mask),
                self.send_params,
                self.interval_ms,
                self.timestamp_ms,
            ),
            self.nonce,
            self.offer_hash,
            self.identity,
            self.x25519,
            _text_field(self.answerer_aor, "answerer AOR"),
            trailer=self.mlkem_ct,
        )

    @classmethod
    def parse(cls, data: bytes) -> AnswerMessage:
        r = _open_message(data, TYPE_ANSWER)
        chosen_raw = r.u8()
        if chosen_raw & ~KNOWN_SUITES_MASK or bin(chosen_raw).count("1") != 1:
            raise MalformedHandshake("the answer must choose exactly one known suite")
        chosen = Suite(chosen_raw)
        supported = r.u8()
        if supported & ~KNOWN_SUITES_MASK:
            raise MalformedHandshake("unknown suite bits set in the answer")
        params, interval_ms, timestamp_ms, nonce = _read_keying(r)
        offer_hash = r.take(OFFER_HASH_LEN)
        identity = r.identity()
        x25519 = r.take(X25519_LEN)
        answerer_aor = r.aor("answerer AOR")
        ct = r.take(MLKEM_CT_LEN) if chosen is Suite.X25519_MLKEM768 else None
        signature = r.signature()
        return cls(
            chosen_suite=chosen,
            supported_mask=supported,
            send_params=params,
            interval_ms=interval_ms,
            timestamp_ms=timestamp_ms,
            nonce=nonce,
            offer_hash=offer_hash,
            identity=identity,
            x25519=x25519,
            answerer_aor=answerer_aor,
            mlkem_ct=ct,
            signature=signature,
        )

    def __repr__(self) -> str:
        return f"AnswerMessage(suite={self.chosen_suite.name}, from={self.answerer_aor!r})"


# --- the a=voipgw attribute value (voipgw/sdp.py finds the line) --------------------------------------------


def encode_attribute(wire: bytes) -> str:
    """The attribute value: base64url without padding."""
    return base64.urlsafe_b64encode(wire).rstrip(b"=").decode("ascii")


def decode_attribute(value: str) -> bytes:
    """Strict inverse of :func:`encode_attribute`; anything non-canonical is MalformedHandshake."""
    value = value.strip()
    if len(value) > MAX_ATTRIBUTE_CHARS or not _B64URL.match(value) or len(value) % 4 == 1:
        raise MalformedHandshake("attribute is not unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedHandshake("attribute is not unpadded base64url") from exc
    if encode_attribute(raw) != value:
        raise MalformedHandshake("non-canonical base64url (stray low bits)")
    return raw


# --- replay protection --------------------------------------------------------------------------------------


class NonceCache:
    """Offer nonces seen recently (sans-I/O: ``now`` is passed in). Used by the answerer.

    An entry lives 2 x max_skew after it is recorded, which outlasts the offer's freshness window. The cache
    is bounded: when full, the entry closest to expiry is evicted and the highest timestamp ever evicted
    becomes a floor; offers not newer than the floor are refused as replays, so eviction can cost availability
    under a flood of validly signed offers, but never lets a replay through.
    """

    def __init__(self, max_skew_s: float = DEFAULT_MAX_SKEW_S, max_entries: int = DEFAULT_NONCE_CACHE_ENTRIES):
        if max_entries < 1 or not 0 < max_skew_s < math.inf:
            raise ValueError("bad NonceCache bounds")
        self._ttl = 2.0 * max_skew_s
        self._max = max_entries
        self._entries: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes, int]] = []  # (expires_at, nonce, timestamp_ms)
        self._floor_ms = -1

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires_at, nonce, _ = heapq.heappop(self._heap)
            if self._entries.get(nonce) == expires_at:
                del self._entries[nonce]

    def check_and_add(self, nonce: bytes, timestamp_ms: int, now: float) -> None:
        """Record ``nonce``; raise ReplayedNonce if it (or possibly it, after an eviction) was seen."""
        self._expire(now)
        nonce = bytes(nonce)
        if nonce in self._entries:
            raise ReplayedNonce("offer nonce seen before")
        if timestamp_ms <= self._floor_ms:
            raise ReplayedNonce("offer older than the nonce cache's eviction floor")
        while len(self._entries) >= self._max:
            _, old_nonce, old_ts = heapq.heappop(self._heap)
            if old_nonce in self._entries:
                del self._entries[old_nonce]
                self._floor_ms = max(self._floor_ms, old_ts)
        expires_at = now + self._ttl
        self._entries[nonce] = expires_at
        heapq.heappush(self._heap, (expires_at, nonce, timestamp_ms))


# --- shared checks and the key schedule ---------------------------------------------------------------------


def _timestamp_ms(now: float) -> int:
    ts = int(now * 1000)
    if not 0 <= ts <= _U64_MAX:
        raise ValueError("now is outside the u64 millisecond range")
    return ts


def _check_freshness(timestamp_ms: int, now: float, max_skew_s: float) -> None:
    age_s = now - timestamp_ms / 1000.0
    if age_s > max_skew_s:
        raise StaleTimestamp(f"message is {age_s:.3f} s old (max {max_skew_s} s)")
    if age_s < -max_skew_s:
        raise FutureTimestamp(f"message is {-age_s:.3f} s in the future (max {max_skew_s} s)")


def _check_aor(signed: str, expected: str | None, who: str) -> None:
    if expected is not None and normalize_aor(expected) != signed:
        raise IdentityMismatch(f"{who} signed AOR {signed!r}, SIP says {normalize_aor(expected)!r}")


def transcript_hash(offer_wire: bytes, answer_wire: bytes) -> bytes:
    """TH = SHA-256("voipgw-v1 transcript" ‖ offer wire bytes ‖ answer wire bytes)."""
    return hashlib.sha256(TRANSCRIPT_LABEL + bytes(offer_wire) + bytes(answer_wire)).digest()


@dataclass(repr=False)
class DerivedKeys:
    """The key schedule's output, by direction (o2a = offerer to answerer)."""

    transcript_hash: bytes
    root: dict[Direction, bytearray]
    chain: dict[Direction, bytearray]
    time: dict[Direction, bytearray]
    sas_seed: bytearray

    def __repr__(self) -> str:
        return "DerivedKeys(<secret>)"


def derive_keys(ikm: bytes | bytearray, offer_wire: bytes, answer_wire: bytes) -> DerivedKeys:
    """PRK = HKDF-Extract(salt=TH, ikm); per direction root/chain/time secrets, and the SAS seed."""
    th = transcript_hash(offer_wire, answer_wire)
    prk = bytearray(hkdf_extract(th, bytes(ikm)))
    try:
        root: dict[Direction, bytearray] = {}
        chain: dict[Direction, bytearray] = {}
        time: dict[Direction, bytearray] = {}
        for d in Direction:
            root[d] = bytearray(hkdf_expand(bytes(prk), LABEL_ROOT + d.label, 32))
            chain[d] = bytearray(hkdf_expand(bytes(prk), LABEL_CHAIN + d.label, 32))
            time[d] = bytearray(hkdf_expand(bytes(prk), LABEL_TIME + d.label, 32))
        sas_seed = bytearray(hkdf_expand(bytes(prk), LABEL_SAS, 32))
    finally:
        prk[:] = bytes(len(prk))
    return DerivedKeys(th, root, chain, time, sas_seed)


def _x25519(private: X25519PrivateKey, peer_public: bytes) -> bytearray:
    try:
        return bytearray(private.exchange(X25519PublicKey.from_public_bytes(peer_public)))
    except ValueError as exc:  # all-zero output: a small-order point
        raise MalformedHandshake("degenerate X25519 public key") from exc


def _session_keys(
    *,
    role: Role,
    suite: Suite,
    offer: OfferMessage,
    answer: AnswerMessage,
    derived: DerivedKeys,
    sas_secret: bytearray | None,
) -> SessionKeys:
    offerer = role is Role.OFFERER
    send_d = Direction.OFFERER_TO_ANSWERER if offerer else Direction.ANSWERER_TO_OFFERER
    recv_d = Direction.ANSWERER_TO_OFFERER if offerer else Direction.OFFERER_TO_ANSWERER
    return SessionKeys(
        suite=suite,
        role=role,
        call_id=offer.call_id,
        local_aor=offer.offerer_aor if offerer else answer.answerer_aor,
        remote_aor=answer.answerer_aor if offerer else offer.offerer_aor,
        local_identity=offer.identity if offerer else answer.identity,
        remote_identity=answer.identity if offerer else offer.identity,
        transcript_hash=derived.transcript_hash,
        interval_ms=offer.interval_ms,
        send_params=offer.send_params if offerer else answer.send_params,
        recv_params=answer.send_params if offerer else offer.send_params,
        send_root=derived.root[send_d],
        recv_root=derived.root[recv_d],
        send_chain=derived.chain[send_d],
        recv_chain=derived.chain[recv_d],
        send_time_secret=derived.time[send_d],
        recv_time_secret=derived.time[recv_d],
        send_stream_salt=offer.nonce if offerer else answer.nonce,
        recv_stream_salt=answer.nonce if offerer else offer.nonce,
        sas_seed=derived.sas_seed,
        sas_commitment=offer.sas_commitment,
        sas_secret=sas_secret,
    )


# --- offerer ------------------------------------------------------------------------------------------------


class Offerer:
    """The calling side: builds the offer at construction, then accepts one answer (or is closed).

    The keyword arguments after ``now`` inject secrets for deterministic test vectors only; production code
    passes none of them and gets fresh randomness.
    """

    def __init__(
        self,
        identity: IdentityKey,
        local_aor: str,
        remote_aor: str,
        call_id: str,
        config: HandshakeConfig,
        now: float,
        *,
        ephemeral_private: bytes | None = None,
        nonce: bytes | None = None,
        sas_secret: bytes | None = None,
        mlkem_seed: bytes | None = None,
    ) -> None:
        self.config = config
        self.local_aor = normalize_aor(local_aor)
        self.remote_aor = normalize_aor(remote_aor)
        self.call_id = call_id
        hybrid = Suite.X25519_MLKEM768 in config.suites
        self._eph: X25519PrivateKey | None = _ephemeral_x25519(ephemeral_private)
        self._mlkem: MLKEM768PrivateKey | None = None
        if hybrid:
            self._mlkem = (
                MLKEM768PrivateKey.from_seed_bytes(mlkem_seed)
                if mlkem_seed is not None
                else MLKEM768PrivateKey.generate()
            )
        secret = bytearray(sas_secret if sas_secret is not None else os.urandom(SAS_SECRET_LEN))
        if len(secret) != SAS_SECRET_LEN:
            raise ValueError("sas_secret must be 16 bytes")
        self._sas_secret: bytearray | None = secret
        own_nonce = _own_nonce(nonce)
        unsigned = OfferMessage(
            suite_mask=config.suite_mask,
            send_params=config.send_params,
            interval_ms=config.interval_ms,
            timestamp_ms=_timestamp_ms(now),
            nonce=bytes(own_nonce),
            sas_commitment=sas_commitment(secret),
            identity=identity.public.serialize(),
            x25519=self._eph.public_key().public_bytes_raw(),
            offerer_aor=self.local_aor,
            callee_aor=self.remote_aor,
            call_id=call_id,
            mlkem_ek=self._mlkem.public_key().public_bytes_raw() if self._mlkem is not None else None,
        )
        self.offer = replace(unsigned, signature=unsigned.sign(identity))
        self.offer_bytes = self.offer.to_bytes()
        self._offer_hash = hashlib.sha256(self.offer_bytes).digest()

    @property
    def closed(self) -> bool:
        return self._eph is None

    def close(self) -> None:
        """Drop the ephemeral secrets (call failed or cancelled). Idempotent."""
        self._eph = None
        self._mlkem = None
        if self._sas_secret is not None:
            self._sas_secret[:] = bytes(len(self._sas_secret))
            self._sas_secret = None

    def accept_answer(self, answer_bytes: bytes, now: float, expected_remote_aor: str | None = None) -> SessionKeys:
        """Check the answer and derive the session keys; the ephemeral secrets are dropped on success.

        ``expected_remote_aor`` defaults to the callee we offered to, unless ``accept_any_callee`` is set.
        A refused answer leaves the offerer usable, so a forged answer cannot kill a call that a genuine
        answer would complete.
        """
        if self._eph is None or self._sas_secret is None:
            raise HandshakeClosed("this offer was already answered or closed")
        answer = AnswerMessage.parse(answer_bytes)
        answer.verify_signature()
        if answer.offer_hash != self._offer_hash:
            raise OfferHashMismatch("the answer is bound to another offer")
        _check_freshness(answer.timestamp_ms, now, self.config.max_skew_s)
        if expected_remote_aor is None and not self.config.accept_any_callee:
            expected_remote_aor = self.remote_aor
        _check_aor(answer.answerer_aor, expected_remote_aor, "answerer")
        if answer.interval_ms != self.offer.interval_ms:
            raise BadParameters("the answer changed the offer's interval_ms")
        _check_send_params(answer.send_params)
        offer_mask = self.offer.suite_mask
        common = offer_mask & answer.supported_mask
        chosen = int(answer.chosen_suite)
        if not (chosen & offer_mask and chosen & answer.supported_mask) or chosen != max(_suites_in(common)):
            raise DowngradeDetected(
                f"answer chose {answer.chosen_suite.name} from offer 0x{offer_mask:02x} and "
                f"answerer 0x{answer.supported_mask:02x}"
            )
        if self.config.require_hybrid and answer.chosen_suite is not Suite.X25519_MLKEM768:
            raise HybridRequired(f"the answerer chose {answer.chosen_suite.name}; this side requires X25519_MLKEM768")
        ikm = _x25519(self._eph, answer.x25519)
        try:
            if answer.chosen_suite is Suite.X25519_MLKEM768:
                assert self._mlkem is not None and answer.mlkem_ct is not None
                try:
                    ikm += self._mlkem.decapsulate(answer.mlkem_ct)
                except ValueError as exc:
                    raise MalformedHandshake("invalid ML-KEM ciphertext") from exc
            derived = derive_keys(ikm, self.offer_bytes, bytes(answer_bytes))
        finally:
            ikm[:] = bytes(len(ikm))
        keys = _session_keys(
            role=Role.OFFERER,
            suite=answer.chosen_suite,
            offer=self.offer,
            answer=answer,
            derived=derived,
            sas_secret=bytearray(self._sas_secret),
        )
        self.close()
        return keys

    def __repr__(self) -> str:
        return f"Offerer(to={self.remote_aor!r}, call_id={self.call_id!r}, closed={self.closed})"


# --- answerer -----------------------------------------------------------------------------------------------


def answer_offer(
    identity: IdentityKey,
    local_aor: str,
    offer_bytes: bytes,
    config: HandshakeConfig,
    now: float,
    nonce_cache: NonceCache,
    expected_remote_aor: str | None = None,
    call_id: str | None = None,
    *,
    ephemeral_private: bytes | None = None,
    nonce: bytes | None = None,
    mlkem_encapsulation: tuple[bytes, bytes] | None = None,
) -> tuple[bytes, SessionKeys]:
    """Check an offer and return ``(answer wire bytes, session keys)``.

    ``expected_remote_aor`` is the SIP From AOR; ``call_id`` the dialog's Call-ID. The keyword-only arguments
    inject secrets for deterministic test vectors (``mlkem_encapsulation`` = (shared secret, ciphertext)).
    """
    offer = OfferMessage.parse(offer_bytes)
    offer.verify_signature()
    _check_freshness(offer.timestamp_ms, now, config.max_skew_s)
    _check_aor(offer.offerer_aor, expected_remote_aor, "offerer")
    local = normalize_aor(local_aor)
    if not config.accept_any_callee and offer.callee_aor != local:
        raise IdentityMismatch(f"the offer is for {offer.callee_aor!r}, we are {local!r}")
    if call_id is not None and call_id != offer.call_id:
        raise CallIdMismatch("the offer was signed for another Call-ID")
    _check_interval(offer.interval_ms)
    _check_send_params(offer.send_params)
    if not offer.suite_mask & int(Suite.X25519):
        raise UnsupportedSuite("the offer lacks the mandatory x25519 suite")
    common = offer.suite_mask & config.suite_mask
    if not common:
        raise UnsupportedSuite(f"no common suite (offer 0x{offer.suite_mask:02x}, ours 0x{config.suite_mask:02x})")
    chosen = max(_suites_in(common))
    if config.require_hybrid and chosen is not Suite.X25519_MLKEM768:
        raise HybridRequired(f"the offer has no X25519_MLKEM768 (0x{offer.suite_mask:02x}); this side requires it")
    nonce_cache.check_and_add(offer.nonce, offer.timestamp_ms, now)

    eph = _ephemeral_x25519(ephemeral_private)
    ikm = _x25519(eph, offer.x25519)
    ct: bytes | None = None
    try:
        if chosen is Suite.X25519_MLKEM768:
            assert offer.mlkem_ek is not None
            if mlkem_encapsulation is not None:
                shared, ct = mlkem_encapsulation
            else:
                try:
                    ek = MLKEM768PublicKey.from_public_bytes(offer.mlkem_ek)
                except ValueError as exc:
                    raise MalformedHandshake("invalid ML-KEM encapsulation key") from exc
                shared, ct = ek.encapsulate()
            ikm += shared
            del shared
        own_nonce = _own_nonce(nonce)
        unsigned = AnswerMessage(
            chosen_suite=chosen,
            supported_mask=config.suite_mask,
            send_params=config.send_params,
            interval_ms=offer.interval_ms,
            timestamp_ms=_timestamp_ms(now),
            nonce=bytes(own_nonce),
            offer_hash=hashlib.sha256(bytes(offer_bytes)).digest(),
            identity=identity.public.serialize(),
            x25519=eph.public_key().public_bytes_raw(),
            answerer_aor=local,
            mlkem_ct=ct,
        )
        body = unsigned.body()
        answer_wire = body + unsigned.sign(identity)
        derived = derive_keys(ikm, bytes(offer_bytes), answer_wire)
    finally:
        ikm[:] = bytes(len(ikm))
        del eph
    answer = AnswerMessage.parse(answer_wire)
    keys = _session_keys(role=Role.ANSWERER, suite=chosen, offer=offer, answer=answer, derived=derived, sas_secret=None)
    return answer_wire, keys
