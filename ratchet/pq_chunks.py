"""The chunk layer of the in-call post-quantum ratchet (docs/PROTOCOL.md §B.12): an ML-KEM-768 encapsulation key
or ciphertext, with a digest, cut into erasure-coded 12-byte shares that ride one per frame in a PQ_CHUNK TLV, and
the bounded reassembly of the peer's shares. It never trusts a message before its digest verified after decoding.

The erasure code itself is injected (``ErasureCoder``): ``ratchet/`` depends on ``cryptography`` and the standard
library only; voipgw passes ``voipgw.erasure.ZfecCoder``.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from typing import Protocol

from ratchet.errors import ConflictingPqChunk, MalformedPqChunk, PqDigestMismatch
from ratchet.frame import TLV_PQ_CHUNK

SHARE_LEN = 12
"""Data bytes per chunk. The TLV is 2 + 2 + 12 = 16 bytes, the whole per-frame budget of the PQ ratchet."""
CHUNK_VALUE_LEN = 2 + SHARE_LEN
CHUNK_TLV_LEN = 2 + CHUNK_VALUE_LEN
SHARES = 256
"""Shares per message (``n`` of the code): share indexes are one byte, and zfec's field GF(2^8) allows 256."""
DIGEST_LEN = 8
LABEL_PQ_DIGEST = b"vgw1pqm"
EXCHANGE_MOD = 128
"""Exchange ids are 7 bits (the head byte's low bits), counted per sender from 0."""
ENCAPS_KEY_LEN = 1184
CIPHERTEXT_LEN = 1088


class ErasureCoder(Protocol):
    """A systematic (k, n) erasure code over byte blocks: any ``k`` of the ``n`` shares rebuild the ``k`` blocks.
    The wire names one exact code (§B.12: zfec's); an implementation must produce exactly its shares."""

    def encode(self, blocks: Sequence[bytes], n: int) -> list[bytes]:
        """The ``n`` shares of ``k = len(blocks)`` equal blocks; share ``i < k`` is block ``i``."""
        ...

    def decode(self, shares: Mapping[int, bytes], k: int, n: int) -> list[bytes]:
        """The ``k`` blocks from exactly ``k`` shares, by share index."""
        ...


class Kind(enum.IntEnum):
    """What a message carries (the head byte's top bit)."""

    ENCAPS_KEY = 0
    """The initiator's fresh ML-KEM-768 encapsulation key (1184 bytes)."""
    CIPHERTEXT = 1
    """The responder's ML-KEM-768 ciphertext for it (1088 bytes)."""


MESSAGE_LEN = {Kind.ENCAPS_KEY: ENCAPS_KEY_LEN, Kind.CIPHERTEXT: CIPHERTEXT_LEN}


def blocks_needed(kind: Kind) -> int:
    """``k`` of a message of this kind: ceil((len + digest) / 12): 100 for a key, 92 for a ciphertext."""
    return -(-(MESSAGE_LEN[kind] + DIGEST_LEN) // SHARE_LEN)


def digest(kind: Kind, exchange: int, message: bytes) -> bytes:
    return hashlib.sha256(LABEL_PQ_DIGEST + bytes([kind, exchange]) + message).digest()[:DIGEST_LEN]


def encode_message(coder: ErasureCoder, kind: Kind, exchange: int, message: bytes) -> list[bytes]:
    """The ``SHARES`` PQ_CHUNK TLVs of a message: ``message ‖ digest``, zero-padded to ``k`` blocks, coded."""
    if len(message) != MESSAGE_LEN[kind]:
        raise ValueError(f"a {kind.name} is {MESSAGE_LEN[kind]} bytes, not {len(message)}")
    k = blocks_needed(kind)
    data = (message + digest(kind, exchange, message)).ljust(k * SHARE_LEN, b"\x00")
    shares = coder.encode([data[i * SHARE_LEN : (i + 1) * SHARE_LEN] for i in range(k)], SHARES)
    head = (kind << 7) | exchange
    return [bytes([TLV_PQ_CHUNK, CHUNK_VALUE_LEN, head, i]) + share for i, share in enumerate(shares)]


def parse_chunk(value: bytes) -> tuple[Kind, int, int, bytes]:
    """(kind, exchange, share index, share) of a PQ_CHUNK value, or MalformedPqChunk."""
    if len(value) != CHUNK_VALUE_LEN:
        raise MalformedPqChunk(f"a PQ chunk is {CHUNK_VALUE_LEN} bytes, not {len(value)}")
    return Kind(value[0] >> 7), value[0] & 0x7F, value[1], value[2:]


class Partial:
    """One message being reassembled: at most ``k`` distinct shares (about 1.2 KB), never trusted until the
    decoded message matches its digest."""

    __slots__ = ("exchange", "kind", "shares")

    def __init__(self, kind: Kind, exchange: int) -> None:
        self.kind = kind
        self.exchange = exchange
        self.shares: dict[int, bytes] = {}

    def add(self, coder: ErasureCoder, index: int, share: bytes) -> bytes | None:
        """Store a share; the verified message once ``k`` distinct shares are in, else None. A share index seen
        with other bytes is ConflictingPqChunk; a decoded message that fails its digest is PqDigestMismatch."""
        held = self.shares.get(index)
        if held is not None:
            if held != share:
                raise ConflictingPqChunk(f"share {index} of {self.kind.name} {self.exchange} changed")
            return None
        self.shares[index] = share
        k = blocks_needed(self.kind)
        if len(self.shares) < k:
            return None
        data = b"".join(coder.decode(self.shares, k, SHARES))
        size = MESSAGE_LEN[self.kind]
        message, tag = data[:size], data[size : size + DIGEST_LEN]
        if tag != digest(self.kind, self.exchange, message) or any(data[size + DIGEST_LEN :]):
            raise PqDigestMismatch(f"{self.kind.name} {self.exchange} does not match its digest")
        return message
