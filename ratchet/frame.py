"""The media frame wire format: a 4-byte header, optional in-band extensions, and the AEAD construction.

Layout and every constant are specified in docs/PROTOCOL.md §6. This module only encodes, parses and derives;
the state (which key, which epoch, replay) lives in ``session.py``. It never reads the RTP header: relays
rewrite SSRC, sequence numbers and timestamps, so the frame carries its own counter.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM

from ratchet.errors import MalformedFrame
from ratchet.kdf import LABEL_CHAIN_ID, LABEL_FRAME_KEY, LABEL_FRAME_KEY_PER_FRAME, LABEL_KCV
from ratchet.params import FrameSuite

HEADER_LEN = 4
# Header bit layout (big-endian u32): S(1) X(1) E(3) C(13) I(6) K(8)
SUITE_SHIFT = 31
EXT_FLAG = 1 << 30
EPOCH_SHIFT = 27
EPOCH_BITS = 3
EPOCH_MOD = 1 << EPOCH_BITS
COUNTER_SHIFT = 14
COUNTER_BITS = 13
COUNTER_MOD = 1 << COUNTER_BITS
INTERVAL_SHIFT = 8
INTERVAL_MASK = 0x3F
KCV_MASK = 0xFF

TAG_LEN = {FrameSuite.AES256_CCM_80: 10, FrameSuite.AES256_GCM_128: 16}
MAX_PAYLOAD = 1400  # one frame per RTP packet; larger is a bug or an attack

# Extension TLV types
EXT_RATCHET_KEY = 0x01
EXT_SAS_REVEAL = 0x02
EXT_CONTENT_TYPE = 0x03
RATCHET_KEY_LEN = 2 + 2 + 4 + 32
SAS_REVEAL_LEN = 16
CONTENT_TYPE_LEN = 1

# Content types (docs/PROTOCOL.md §B.11). Audio is the absence of the CONTENT_TYPE extension, so audio frames
# are sealed exactly as before; any other content names itself inside the authenticated extension block.
CONTENT_AUDIO = 0
CONTENT_TELEPHONE_EVENT = 1
NO_PEER_EPOCH = 0xFFFF

AeadCipher = AESCCM | AESGCM


@dataclass(frozen=True)
class RatchetKeyAnnouncement:
    """The sender's ratchet public key for its epoch ``epoch`` (authenticated as part of the frame's AAD)."""

    epoch: int
    """Full sender epoch this key belongs to (0 = the initial key, announced but not yet used to send)."""
    peer_epoch: int
    """The receiver's ratchet key (by its epoch index) that the DH used; NO_PEER_EPOCH for epoch 0."""
    start_counter: int
    """First frame counter of the epoch, so the receiver can index the new chain."""
    public_key: bytes


@dataclass(frozen=True)
class Extensions:
    ratchet_key: RatchetKeyAnnouncement | None = None
    sas_reveal: bytes | None = None
    content_type: int | None = None
    """None for audio; CONTENT_TELEPHONE_EVENT (or a later type) otherwise. Never CONTENT_AUDIO on the wire."""


def encode_extensions(ext: Extensions) -> bytes:
    """Return the extension block: u8 length, then TLVs (u8 type, u8 len, value)."""
    body = b""
    if ext.ratchet_key is not None:
        rk = ext.ratchet_key
        body += bytes([EXT_RATCHET_KEY, RATCHET_KEY_LEN])
        body += struct.pack(">HHI", rk.epoch, rk.peer_epoch, rk.start_counter) + rk.public_key
    if ext.sas_reveal is not None:
        body += bytes([EXT_SAS_REVEAL, SAS_REVEAL_LEN]) + ext.sas_reveal
    if ext.content_type is not None:
        if not 0 < ext.content_type <= 0xFF:
            raise ValueError("content type must be 1..255 (audio is the absence of the extension)")
        body += bytes([EXT_CONTENT_TYPE, CONTENT_TYPE_LEN, ext.content_type])
    if not body or len(body) > 255:
        raise ValueError("extension block must hold 1..255 bytes")
    return bytes([len(body)]) + body


def with_content_type(block: bytes, content_type: int) -> bytes:
    """``block`` (an encoded extension block, or b"" for none) with a CONTENT_TYPE TLV appended."""
    if not 0 < content_type <= 0xFF:
        raise ValueError("content type must be 1..255 (audio is the absence of the extension)")
    body = block[1:] + bytes([EXT_CONTENT_TYPE, CONTENT_TYPE_LEN, content_type])
    if len(body) > 255:
        raise ValueError("extension block must hold 1..255 bytes")
    return bytes([len(body)]) + body


def parse_extensions(block: bytes) -> Extensions:
    """Parse TLVs (the length byte already stripped). Unknown types are skipped; duplicates are malformed."""
    ratchet_key: RatchetKeyAnnouncement | None = None
    sas: bytes | None = None
    content: int | None = None
    pos = 0
    seen: set[int] = set()
    while pos < len(block):
        if pos + 2 > len(block):
            raise MalformedFrame("truncated extension TLV")
        typ, ln = block[pos], block[pos + 1]
        pos += 2
        if pos + ln > len(block):
            raise MalformedFrame("extension value overruns the block")
        value = block[pos : pos + ln]
        pos += ln
        if typ in seen:
            raise MalformedFrame(f"duplicate extension type {typ}")
        seen.add(typ)
        if typ == EXT_RATCHET_KEY:
            if ln != RATCHET_KEY_LEN:
                raise MalformedFrame("ratchet-key extension has the wrong length")
            epoch, peer_epoch, start = struct.unpack_from(">HHI", value)
            ratchet_key = RatchetKeyAnnouncement(epoch, peer_epoch, start, bytes(value[8:]))
        elif typ == EXT_SAS_REVEAL:
            if ln != SAS_REVEAL_LEN:
                raise MalformedFrame("SAS-reveal extension has the wrong length")
            sas = bytes(value)
        elif typ == EXT_CONTENT_TYPE:
            if ln != CONTENT_TYPE_LEN or value[0] == CONTENT_AUDIO:
                raise MalformedFrame("content-type extension has the wrong length or names audio")
            content = value[0]
    return Extensions(ratchet_key, sas, content)


def split_frame(frame: bytes) -> tuple[int, bytes | None, int]:
    """Return (header word, extension TLV block or None, length of the authenticated prefix)."""
    if len(frame) < HEADER_LEN:
        raise MalformedFrame("shorter than the frame header")
    word = int.from_bytes(frame[:HEADER_LEN], "big")
    if not word & EXT_FLAG:
        return word, None, HEADER_LEN
    if len(frame) < HEADER_LEN + 1:
        raise MalformedFrame("missing extension length")
    ext_len = frame[HEADER_LEN]
    end = HEADER_LEN + 1 + ext_len
    if ext_len == 0 or len(frame) < end:
        raise MalformedFrame("extension block truncated")
    return word, frame[HEADER_LEN + 1 : end], end


def header_word(suite: int, ext: bool, epoch: int, counter: int, interval: int, kcv: int) -> int:
    return (
        (suite << SUITE_SHIFT)
        | (EXT_FLAG if ext else 0)
        | ((epoch % EPOCH_MOD) << EPOCH_SHIFT)
        | ((counter % COUNTER_MOD) << COUNTER_SHIFT)
        | ((interval & INTERVAL_MASK) << INTERVAL_SHIFT)
        | (kcv & KCV_MASK)
    )


def nearest(truncated: int, modulus: int, reference: int) -> int:
    """The integer ≡ truncated (mod modulus) closest to reference (ties go forward)."""
    base = reference - (reference % modulus) + truncated
    if base - reference > modulus // 2:
        base -= modulus
    elif reference - base >= modulus // 2:
        base += modulus
    return base


# --- key derivation for frames ---------------------------------------------------------------------------


def chain_id(initial_chain_key: bytes | bytearray) -> bytes:
    """A one-way identifier of an epoch's chain, used only for the key-check value."""
    return hashlib.sha256(LABEL_CHAIN_ID + bytes(initial_chain_key)).digest()[:16]


def key_check_value(chain_ident: bytes, time_key: bytes) -> int:
    """8-bit KCV over (epoch chain, interval): differs when the peers' keys disagree."""
    return hashlib.sha256(LABEL_KCV + chain_ident + time_key).digest()[0]


def frame_key(message_key: bytes | bytearray, time_key: bytes) -> bytes:
    """AEAD key for all frames of one chain step within one interval."""
    return hashlib.sha256(LABEL_FRAME_KEY + bytes(message_key) + time_key).digest()


def per_frame_key(message_key: bytes | bytearray, time_key: bytes, counter: int) -> bytes:
    """AEAD key for exactly one frame (per_frame_keys mode)."""
    return hashlib.sha256(
        LABEL_FRAME_KEY_PER_FRAME + bytes(message_key) + time_key + counter.to_bytes(8, "big")
    ).digest()


def per_frame_hash(message_key: bytes | bytearray, time_key: bytes) -> hashlib._Hash:
    """The hash state of ``per_frame_key`` before the counter: copy it and add ``u64 n`` for each frame."""
    return hashlib.sha256(LABEL_FRAME_KEY_PER_FRAME + bytes(message_key) + time_key)


def aead_factory(suite: FrameSuite) -> Callable[[bytes], AeadCipher]:
    """A one-argument constructor for the suite's AEAD (avoids a branch per frame in per-frame-key mode)."""
    return functools.partial(AESCCM, tag_length=10) if suite is FrameSuite.AES256_CCM_80 else AESGCM


def make_aead(suite: FrameSuite, key: bytes) -> AeadCipher:
    if suite is FrameSuite.AES256_CCM_80:
        return AESCCM(key, tag_length=10)
    return AESGCM(key)


def nonce_prefix(suite: FrameSuite, epoch: int) -> bytes:
    """Nonce = prefix ‖ u64 counter: 0x00 ‖ u32 epoch for CCM (13 bytes), u32 epoch for GCM (12 bytes)."""
    e = (epoch & 0xFFFFFFFF).to_bytes(4, "big")
    return b"\x00" + e if suite is FrameSuite.AES256_CCM_80 else e
