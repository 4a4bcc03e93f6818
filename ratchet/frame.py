"""The media frame wire format (v3): a 4-byte clear header (the AAD), then the AEAD of ``u8 ctl_len ‖ ctl ‖
content``; ``ctl`` holds the control TLVs (ratchet keys, acks, SAS reveal, telephone events, padding).

Layout and every constant are specified in docs/PROTOCOL.md §B.2. This module only encodes, parses and derives;
the state (which key, which epoch, replay) lives in the sealer and the opener. It never reads the RTP header:
relays rewrite SSRC, sequence numbers and timestamps, so the frame carries its own counter. All control data is
inside the ciphertext, so a relay can neither read it nor tell which frames carry it.
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
# Header bit layout (big-endian u32): S(1) E(3) C(14) I(6) K(8)
SUITE_SHIFT = 31
EPOCH_SHIFT = 28
EPOCH_BITS = 3
EPOCH_MOD = 1 << EPOCH_BITS
COUNTER_SHIFT = 14
COUNTER_BITS = 14
COUNTER_MOD = 1 << COUNTER_BITS
INTERVAL_SHIFT = 8
INTERVAL_MASK = 0x3F
KCV_MASK = 0xFF

TAG_LEN = {FrameSuite.AES256_CCM_80: 10, FrameSuite.AES256_GCM_128: 16}
MAX_PAYLOAD = 1400  # one frame per RTP packet; larger is a bug or an attack
MAX_CTL = 255

# Control TLV types (docs/PROTOCOL.md §B.2)
TLV_PAD = 0x00
TLV_RATCHET_KEY = 0x01
TLV_SAS_REVEAL = 0x02
TLV_KEY_ACK = 0x03
TLV_TELEPHONE_EVENT = 0x04
TLV_NOTICE = 0x05
TLV_PQ_CHUNK = 0x06
TLV_RATCHET_KEY_PQ = 0x07
RATCHET_KEY_LEN = 2 + 2 + 4 + 32
SAS_REVEAL_LEN = 16
KEY_ACK_LEN = 2 + 4
TELEPHONE_EVENT_LEN = 8
NOTICE_LEN = 1
RATCHET_KEY_PQ_LEN = RATCHET_KEY_LEN + 1
KEY_PREFIX_LEN = 4
NO_PEER_EPOCH = 0xFFFF

AeadCipher = AESCCM | AESGCM


@dataclass(frozen=True)
class RatchetKeyAnnouncement:
    """The sender's ratchet public key for its epoch ``epoch``, announced before the sender switches to it."""

    epoch: int
    """Full sender epoch this key belongs to (0 = the initial key, never used to derive a sending chain)."""
    peer_epoch: int
    """The receiver's ratchet key (by its epoch index) that the DH used; NO_PEER_EPOCH for epoch 0."""
    start_counter: int
    """Lowest frame counter of the epoch: its chain step s covers counters start + s*fpk .. + fpk - 1."""
    public_key: bytes
    pq_exchange: int | None = None
    """The sender's completed ML-KEM exchange (7-bit id) whose secret this step mixes into the root: the
    announcement then travels as RATCHET_KEY_PQ (§B.12). None: a classical step (RATCHET_KEY)."""

    def encode(self) -> bytes:
        fields = struct.pack(">HHI", self.epoch, self.peer_epoch, self.start_counter) + self.public_key
        if self.pq_exchange is None:
            return bytes([TLV_RATCHET_KEY, RATCHET_KEY_LEN]) + fields
        return bytes([TLV_RATCHET_KEY_PQ, RATCHET_KEY_PQ_LEN]) + fields + bytes([self.pq_exchange])


@dataclass(frozen=True)
class KeyAck:
    """ "I authenticated your ratchet key of this epoch (named by its first 4 bytes) and hold its chain"."""

    epoch: int
    prefix: bytes

    def encode(self) -> bytes:
        return bytes([TLV_KEY_ACK, KEY_ACK_LEN]) + struct.pack(">H", self.epoch) + self.prefix


@dataclass(frozen=True)
class Control:
    """The parsed control block of one authenticated frame (PAD and unknown types dropped)."""

    ratchet_key: RatchetKeyAnnouncement | None = None
    key_ack: KeyAck | None = None
    sas_reveal: bytes | None = None
    telephone_event: bytes | None = None
    notice: int | None = None
    """A NOTICE code (§B.2): something the sender tells the receiver about the call, authenticated."""
    pq_chunk: bytes | None = None
    """The value of a PQ_CHUNK TLV (§B.12), any length: the PQ ratchet validates it (a bad chunk never costs
    the frame its audio)."""


EMPTY_CONTROL = Control()


def sas_reveal_tlv(secret: bytes) -> bytes:
    return bytes([TLV_SAS_REVEAL, SAS_REVEAL_LEN]) + secret


def telephone_event_tlv(event: bytes) -> bytes:
    if len(event) != TELEPHONE_EVENT_LEN:
        raise ValueError(f"a telephone event is {TELEPHONE_EVENT_LEN} bytes")
    return bytes([TLV_TELEPHONE_EVENT, TELEPHONE_EVENT_LEN]) + event


def notice_tlv(code: int) -> bytes:
    if not 0 < code < 256:
        raise ValueError("a notice code is 1-255")
    return bytes([TLV_NOTICE, NOTICE_LEN, code])


def padding(n: int) -> bytes:
    """``n`` bytes of PAD: TLVs of at most 255 value bytes; a lone trailing 0x00 is a one-byte PAD (§B.2)."""
    out = bytearray()
    while n >= 2:
        ln = min(n - 2, 255)
        out += bytes([TLV_PAD, ln]) + bytes(ln)
        n -= 2 + ln
    if n == 1:
        out += b"\x00"
    return bytes(out)


def parse_control(block: bytes) -> Control:
    """Parse the TLVs of an authenticated control block. PAD and unknown types are skipped; a known non-PAD type
    twice, a wrong length or an overrun is MalformedFrame (only a buggy sender produces it: the tag verified)."""
    ratchet_key: RatchetKeyAnnouncement | None = None
    ack: KeyAck | None = None
    sas: bytes | None = None
    event: bytes | None = None
    notice: int | None = None
    pq_chunk: bytes | None = None
    pos = 0
    seen: set[int] = set()
    end = len(block)
    while pos < end:
        typ = block[pos]
        if typ == TLV_PAD and pos + 1 == end:
            break  # one-byte PAD
        if pos + 2 > end:
            raise MalformedFrame("truncated control TLV")
        ln = block[pos + 1]
        pos += 2
        if pos + ln > end:
            raise MalformedFrame("control TLV overruns the block")
        value = block[pos : pos + ln]
        pos += ln
        if typ == TLV_PAD:
            continue
        if typ in seen or (typ == TLV_RATCHET_KEY_PQ and TLV_RATCHET_KEY in seen):
            raise MalformedFrame(f"duplicate control TLV type {typ}")
        if typ == TLV_RATCHET_KEY_PQ:
            typ = TLV_RATCHET_KEY  # one announcement per frame, of either kind
            if ln != RATCHET_KEY_PQ_LEN:
                raise MalformedFrame("RATCHET_KEY_PQ has the wrong length")
            epoch, peer_epoch, start = struct.unpack_from(">HHI", value)
            ratchet_key = RatchetKeyAnnouncement(epoch, peer_epoch, start, bytes(value[8:40]), value[40])
            seen.add(typ)
            continue
        seen.add(typ)
        if typ == TLV_RATCHET_KEY:
            if ln != RATCHET_KEY_LEN:
                raise MalformedFrame("RATCHET_KEY has the wrong length")
            epoch, peer_epoch, start = struct.unpack_from(">HHI", value)
            ratchet_key = RatchetKeyAnnouncement(epoch, peer_epoch, start, bytes(value[8:]))
        elif typ == TLV_KEY_ACK:
            if ln != KEY_ACK_LEN:
                raise MalformedFrame("KEY_ACK has the wrong length")
            ack = KeyAck(struct.unpack_from(">H", value)[0], bytes(value[2:]))
        elif typ == TLV_SAS_REVEAL:
            if ln != SAS_REVEAL_LEN:
                raise MalformedFrame("SAS_REVEAL has the wrong length")
            sas = bytes(value)
        elif typ == TLV_TELEPHONE_EVENT:
            if ln != TELEPHONE_EVENT_LEN:
                raise MalformedFrame("TELEPHONE_EVENT has the wrong length")
            event = bytes(value)
        elif typ == TLV_NOTICE:
            if ln != NOTICE_LEN:
                raise MalformedFrame("NOTICE has the wrong length")
            notice = value[0]
        elif typ == TLV_PQ_CHUNK:
            pq_chunk = bytes(value)
    return Control(ratchet_key, ack, sas, event, notice, pq_chunk)


def split_plaintext(plaintext: bytes) -> tuple[bytes, bytes]:
    """(control block, content) of an authenticated plaintext."""
    if not plaintext:
        raise MalformedFrame("empty plaintext (no control length)")
    ctl_end = 1 + plaintext[0]
    if ctl_end > len(plaintext):
        raise MalformedFrame("control block overruns the plaintext")
    return plaintext[1:ctl_end], plaintext[ctl_end:]


def header_word(suite: int, epoch: int, counter: int, interval: int, kcv: int) -> int:
    return (
        (suite << SUITE_SHIFT)
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


def aead_factory(suite: FrameSuite) -> Callable[[bytes], AeadCipher]:
    """A one-argument constructor for the suite's AEAD."""
    return functools.partial(AESCCM, tag_length=10) if suite is FrameSuite.AES256_CCM_80 else AESGCM


def make_aead(suite: FrameSuite, key: bytes) -> AeadCipher:
    if suite is FrameSuite.AES256_CCM_80:
        return AESCCM(key, tag_length=10)
    return AESGCM(key)


def nonce_prefix(suite: FrameSuite, epoch: int) -> bytes:
    """Nonce = prefix ‖ u64 counter: 0x00 ‖ u32 epoch for CCM (13 bytes), u32 epoch for GCM (12 bytes)."""
    e = (epoch & 0xFFFFFFFF).to_bytes(4, "big")
    return b"\x00" + e if suite is FrameSuite.AES256_CCM_80 else e
