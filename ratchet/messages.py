"""The handshake's wire messages (docs/PROTOCOL.md §A.3): constants, ``HandshakeConfig``, the strict parser, the
signed OFFER and ANSWER, and the ``a=voipgw`` attribute encoding. Sans-I/O. Split from ``handshake``, which holds
the checks, the replay cache, the key schedule and the two roles."""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .aor import normalize_aor
from .errors import (
    BadParameters,
    MalformedAor,
    MalformedHandshake,
    UnsupportedVersion,
)
from .identity import SERIALIZED_LEN as IDENTITY_LEN
from .identity import SIGNATURE_LEN, IdentityKey, IdentityPublicKey
from .params import (
    DEFAULT_INTERVAL_MS,
    MAX_FRAMES_PER_KEY,
    MAX_INTERVAL_MS,
    MIN_FRAMES_PER_KEY,
    MIN_INTERVAL_MS,
    FrameSuite,
    SendParams,
    Suite,
)
from .sas import SAS_COMMITMENT_LEN

# --- wire constants -----------------------------------------------------------------------------------------

VERSION = 3
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

OFFER_SIG_CONTEXT = b"voipgw-v2 offer\x00"
ANSWER_SIG_CONTEXT = b"voipgw-v2 answer\x00"
TRANSCRIPT_LABEL = b"voipgw-v2 transcript"

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
        raise UnsupportedVersion(
            f"the peer speaks voipgw protocol version {version}; this endpoint speaks version {VERSION} only"
        )
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
    sas_commitment: bytes
    """The answerer's commitment to its SAS contribution ``s`` (PROTOCOL.md §A.6)."""
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
            self.sas_commitment,
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
        commitment = r.take(SAS_COMMITMENT_LEN)
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
            sas_commitment=commitment,
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
