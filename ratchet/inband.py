"""The key exchange in the media path (docs/PROTOCOL.md §C.6): the packet format that carries a signed OFFER or
ANSWER in RTP payloads when a PBX strips ``a=voipgw`` from the SDP, its reassembly and its retransmission schedule.

It owns framing only. Nothing in a chunk is trusted: the reassembled message goes through ``answer_offer`` /
``accept_answer`` exactly as an SDP attribute would; the transfer id is a hash check against corruption and mixing,
not authentication. There is no library for this: ZRTP (RFC 6189) carries its own messages in its own RTP-like
packets beside the media, and its message set is not ours; no RTP extension carries arbitrary signed blobs through a
B2BUA that relays only the Opus payload. Sans-I/O: no clock reads (``now`` is an argument), no sockets.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import IntEnum

from ratchet.errors import InbandConflict, InbandHashMismatch, MalformedInband


class InbandKind(IntEnum):
    OFFER = 1
    ANSWER = 2


OPUS_REFUSED = b"\xff\x00"
"""An Opus packet every decoder refuses: TOC config 31, s=1, c=3 (code 3), then a frame-count byte with M = 0,
which RFC 6716 §3.2.5 forbids [R5]. A plain phone that gets one conceals one frame instead of playing noise."""
MAGIC = b"VGWK"
INBAND_PREFIX = OPUS_REFUSED + MAGIC
INBAND_VERSION = 1
HEADER_LEN = 20
"""prefix (6) ‖ version (1) ‖ kind (1) ‖ transfer_id (8) ‖ index (1) ‖ count (1) ‖ total_len (2, big-endian)."""
TRANSFER_ID_LEN = 8
MAX_CHUNK_DATA = 1000
"""Data bytes per chunk: a packet is at most 1020 bytes, under any path MTU with RTP/UDP/IP headers."""
MAX_CHUNKS = 8
MAX_MESSAGE = 4096
"""The largest message carried (a hybrid offer is about 1.4 KB, a hybrid answer 1.3 KB)."""

_HEADER = struct.Struct(">6sBB8sBBH")  # HEADER_LEN bytes

RETRANSMIT_OFFSETS = (0.0, 0.2, 0.6, 1.4)
"""Seconds from the start to the first bursts: gaps of 0.2, 0.4 and 0.8 s (doubling, as SIP's timer A), written
out so that a caller's ``start + 0.6`` is the same float as ours."""
RETRANSMIT_MAX_GAP = 1.0
"""The gap between every later burst."""


def is_inband(payload: bytes | memoryview) -> bool:
    """Whether an RTP payload starts with the in-band prefix (cheap: called for every received packet). A sealed
    frame can start with these 6 bytes by chance (2^-48): a prefixed packet that fails to parse is then tried as a
    sealed frame when keys exist (§C.6)."""
    return payload[: len(INBAND_PREFIX)] == INBAND_PREFIX


def transfer_id(message: bytes) -> bytes:
    """The first 8 bytes of SHA-256(message): names a transfer and checks its reassembly."""
    return hashlib.sha256(message).digest()[:TRANSFER_ID_LEN]


def chunk_size(total_len: int, count: int) -> int:
    """Data bytes in every chunk but the last: ceil(total_len / count)."""
    return -(-total_len // count)


@dataclass(frozen=True)
class InbandChunk:
    """One parsed in-band packet: a slice of one message."""

    kind: InbandKind
    transfer_id: bytes
    """SHA-256(message)[:8], checked when the set is complete."""
    index: int
    count: int
    total_len: int
    """The whole message's length."""
    data: bytes
    """message[index·cs : (index+1)·cs], cs = ceil(total_len / count)."""

    def encode(self) -> bytes:
        head = _HEADER.pack(
            INBAND_PREFIX, INBAND_VERSION, self.kind, self.transfer_id, self.index, self.count, self.total_len
        )
        return head + self.data


def chunk_message(kind: InbandKind, message: bytes) -> list[bytes]:
    """The RTP payloads that carry ``message``, in index order: ceil(len / MAX_CHUNK_DATA) chunks of equal size
    (the last may be shorter). A message outside 1..MAX_MESSAGE bytes is a local error (ValueError)."""
    if not 1 <= len(message) <= MAX_MESSAGE:
        raise ValueError(f"an in-band message is 1..{MAX_MESSAGE} bytes, not {len(message)}")
    count = chunk_size(len(message), MAX_CHUNK_DATA)
    cs = chunk_size(len(message), count)
    tid = transfer_id(message)
    return [
        InbandChunk(InbandKind(kind), tid, i, count, len(message), message[i * cs : (i + 1) * cs]).encode()
        for i in range(count)
    ]


def parse_chunk(payload: bytes | memoryview) -> InbandChunk:
    """Parse one in-band packet, or raise MalformedInband naming what is wrong. Checks everything that can be
    checked on one packet; agreement between packets is the Reassembler's job."""
    data = bytes(payload)
    if len(data) < HEADER_LEN:
        raise MalformedInband(f"{len(data)} bytes, shorter than the {HEADER_LEN}-byte header")
    prefix, version, kind, tid, index, count, total_len = _HEADER.unpack_from(data)
    if prefix != INBAND_PREFIX:
        raise MalformedInband("no in-band prefix")
    if version != INBAND_VERSION:
        raise MalformedInband(f"in-band version {version}; this endpoint speaks version {INBAND_VERSION}")
    if kind not in (InbandKind.OFFER, InbandKind.ANSWER):
        raise MalformedInband(f"unknown kind {kind}")
    if not 1 <= count <= MAX_CHUNKS:
        raise MalformedInband(f"count {count} outside 1..{MAX_CHUNKS}")
    if index >= count:
        raise MalformedInband(f"index {index} not below count {count}")
    if not 1 <= total_len <= MAX_MESSAGE:
        raise MalformedInband(f"total length {total_len} outside 1..{MAX_MESSAGE}")
    cs = chunk_size(total_len, count)
    if cs > MAX_CHUNK_DATA:
        raise MalformedInband(f"{count} chunks of {cs} bytes for {total_len} bytes: over {MAX_CHUNK_DATA} per chunk")
    if (count - 1) * cs >= total_len:
        raise MalformedInband(f"{count} chunks for {total_len} bytes leave the last one empty")
    expected = min(cs, total_len - index * cs)
    if len(data) - HEADER_LEN != expected:
        raise MalformedInband(f"chunk {index} carries {len(data) - HEADER_LEN} bytes, not {expected}")
    return InbandChunk(InbandKind(kind), tid, index, count, total_len, data[HEADER_LEN:])


@dataclass(frozen=True)
class InbandMessage:
    """A complete message whose bytes hash to its transfer id. Not authenticated yet."""

    kind: InbandKind
    message: bytes
    transfer_id: bytes


@dataclass
class _Partial:
    kind: InbandKind
    count: int
    total_len: int
    chunks: dict[int, bytes] = field(default_factory=dict)


class Reassembler:
    """Collects chunks into messages, bounded: at most ``max_transfers`` partial transfers and ``max_bytes``
    reserved for them (each partial reserves its whole ``total_len`` when its first chunk arrives, so the data
    held never exceeds the bound). A new transfer beyond either bound evicts the OLDEST partial ones (counted in
    ``evicted``) and is never refused for it: a flood of forged transfers costs the genuine one at most a
    retransmission, and the genuine one completes when its chunks arrive back to back.

    On completion the transfer's state is dropped, so a retransmitted message completes again: the caller decides
    what a repeat means (the handshake's replay cache refuses a second ``answer_offer``)."""

    def __init__(self, max_transfers: int = 4, max_bytes: int = 16384) -> None:
        if max_transfers < 1:
            raise ValueError("max_transfers must be at least 1")
        if max_bytes < MAX_MESSAGE:
            raise ValueError(f"max_bytes must hold one whole message ({MAX_MESSAGE} bytes)")
        self.max_transfers = max_transfers
        self.max_bytes = max_bytes
        self._partials: OrderedDict[bytes, _Partial] = OrderedDict()  # oldest first
        self._reserved = 0
        self.evicted = 0
        """Partial transfers dropped to make room for newer ones, since creation."""

    @property
    def pending(self) -> int:
        """Partial transfers held."""
        return len(self._partials)

    @property
    def buffered(self) -> int:
        """Bytes reserved for partial transfers (their total lengths); at most ``max_bytes``."""
        return self._reserved

    def clear(self) -> None:
        self._partials.clear()
        self._reserved = 0

    def add(self, payload: bytes | memoryview) -> InbandMessage | None:
        """Take one in-band packet. Returns the message when this chunk completes its set, None while it is
        incomplete (or the chunk is an exact duplicate). Raises MalformedInband, InbandConflict or
        InbandHashMismatch; a conflict or a hash mismatch drops the whole partial transfer."""
        chunk = parse_chunk(payload)
        partial = self._partials.get(chunk.transfer_id)
        if partial is None:
            partial = self._start(chunk)
        elif (partial.kind, partial.count, partial.total_len) != (chunk.kind, chunk.count, chunk.total_len):
            self._drop(chunk.transfer_id)
            raise InbandConflict(
                f"chunk {chunk.index} says kind {chunk.kind.name}, {chunk.count} chunks, {chunk.total_len} bytes; "
                f"its transfer said {partial.kind.name}, {partial.count}, {partial.total_len}"
            )
        held = partial.chunks.get(chunk.index)
        if held is not None:
            if held == chunk.data:
                return None
            self._drop(chunk.transfer_id)
            raise InbandConflict(f"chunk {chunk.index} arrived twice with different data")
        partial.chunks[chunk.index] = chunk.data
        if len(partial.chunks) < partial.count:
            return None
        self._drop(chunk.transfer_id)
        message = b"".join(partial.chunks[i] for i in range(partial.count))
        if transfer_id(message) != chunk.transfer_id:
            raise InbandHashMismatch(f"{partial.count} chunks, {len(message)} bytes")
        return InbandMessage(partial.kind, message, chunk.transfer_id)

    def _start(self, chunk: InbandChunk) -> _Partial:
        while self._partials and (
            len(self._partials) >= self.max_transfers or self._reserved + chunk.total_len > self.max_bytes
        ):
            oldest = next(iter(self._partials))
            self._drop(oldest)
            self.evicted += 1
        partial = _Partial(chunk.kind, chunk.count, chunk.total_len)
        self._partials[chunk.transfer_id] = partial
        self._reserved += chunk.total_len
        return partial

    def _drop(self, tid: bytes) -> None:
        partial = self._partials.pop(tid)
        self._reserved -= partial.total_len


class Retransmitter:
    """When to (re)send one message's packets: every chunk at ``now`` (the start), then bursts after gaps of
    0.2 s, 0.4 s and 0.8 s (at start + 0.2, + 0.6, + 1.4), then every 1 s (+ 2.4, + 3.4, ...), until stop() or
    ``now >= start + give_up_s``. Burst times are fixed offsets from the start; a late ``due`` call sends one
    burst and skips the missed ones (no catch-up bursts)."""

    def __init__(self, packets: list[bytes], now: float, give_up_s: float) -> None:
        if not packets:
            raise ValueError("nothing to retransmit")
        if give_up_s < 0:
            raise ValueError("give_up_s must not be negative")
        self._packets = list(packets)
        self._start = now
        self.deadline = now + give_up_s
        """No burst at or after this time."""
        self._step = 0  # index of the next burst in the schedule
        self._stopped = False
        self.bursts = 0
        """Bursts sent so far."""

    @staticmethod
    def offset(step: int) -> float:
        """The schedule: seconds from the start to burst number ``step`` (0, 0.2, 0.6, 1.4, 2.4, 3.4, ...)."""
        if step < len(RETRANSMIT_OFFSETS):
            return RETRANSMIT_OFFSETS[step]
        return RETRANSMIT_OFFSETS[-1] + (step - len(RETRANSMIT_OFFSETS) + 1) * RETRANSMIT_MAX_GAP

    def _time(self, step: int) -> float:
        return self._start + self.offset(step)

    def next_due(self) -> float | None:
        """Absolute time of the next burst; None when none remains (stopped, or the next is past the deadline)."""
        if self._stopped:
            return None
        t = self._time(self._step)
        return t if t < self.deadline else None

    @property
    def finished(self) -> bool:
        return self.next_due() is None

    def due(self, now: float) -> list[bytes]:
        """The packets to send now (every chunk, in index order), or [] when no burst is due."""
        if now >= self.deadline:
            self._stopped = True
            return []
        t = self.next_due()
        if t is None or now < t:
            return []
        self._step += 1
        if self._time(self._step) <= now:  # called late: skip the missed bursts instead of catching up
            elapsed = now - self._start - RETRANSMIT_OFFSETS[-1]
            self._step = max(self._step, len(RETRANSMIT_OFFSETS) + int(elapsed // RETRANSMIT_MAX_GAP))
            while self._time(self._step) <= now:
                self._step += 1
        self.bursts += 1
        return list(self._packets)

    def stop(self) -> None:
        """Acknowledged (or abandoned): send nothing more."""
        self._stopped = True
