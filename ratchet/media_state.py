"""What the two directions of one call's media ratchet share: the local settings (``MediaConfig``), the control
schedules (how often a ratchet key, an ack or the SAS reveal repeats), our ratchet key pairs, the peer's current
key, the acks crossing between the directions, the degraded conditions and the event queue (``_RatchetState``),
and the counters. Split from ``session`` (see its docstring for the theory of operation)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ratchet.events import Degradation, Event, MediaDegraded, MediaRestored
from ratchet.frame import KeyAck

if TYPE_CHECKING:
    from ratchet.pq_ratchet import PqRatchet

REPEAT_FIRST = 3
"""A control item (ratchet key, ack) goes in the first 3 frames after it is armed, then in every 4th: under 30 %
independent loss one of the first 3 arrives with probability 97 %, and the every-4th tail bounds the wait after a
burst to 4 frames (80 ms) once audio flows again."""
REPEAT_EVERY = 4
ACK_TAIL_FRAMES = 128
NOTICE_FRAMES = 500
"""How long a NOTICE is repeated (10 s of 20 ms frames, on the repeat schedule: about 125 copies)."""
"""An ack repeats for this many of our frames after the last authenticated repeat of the announcement it answers:
the announcer repeats until acked, so a silence this long means it has its ack (or cannot hear us: its next repeat
re-arms us)."""
REVEAL_TIERS = ((128, 4), (1 << 62, 16))
"""SAS reveal: the first 3 frames, every 4th until frame 128 of the reveal, then every 16th until the period ends."""


def repeats(rel: int) -> bool:
    """Whether the frame ``rel`` frames after an item was armed carries it (first 3, then every 4th)."""
    return rel < REPEAT_FIRST or rel % REPEAT_EVERY == 0


def reveal_repeats(rel: int) -> bool:
    if rel < REPEAT_FIRST:
        return True
    for until, every in REVEAL_TIERS:
        if rel < until:
            return rel % every == 0
    return False


def next_repeat(rel: int) -> int:
    """The smallest ``r >= rel`` with ``repeats(r)``: where the sealer's fast path must hand over."""
    if rel < REPEAT_FIRST:
        return rel
    return -(-rel // REPEAT_EVERY) * REPEAT_EVERY


def next_reveal_repeat(rel: int) -> int | None:
    """The smallest ``r >= rel`` with ``reveal_repeats(r)`` (None: never again)."""
    if rel < REPEAT_FIRST:
        return rel
    for until, every in REVEAL_TIERS:
        if rel < until:
            r = -(-rel // every) * every
            if r < until:
                return r
            rel = until
    return None


@dataclass(frozen=True)
class MediaConfig:
    """Local media-ratchet settings (not negotiated; the peer need not share them)."""

    dh_interval_s: float = 30.0
    """Seconds between our DH ratchet steps (0 disables stepping)."""
    peer_dh_timeout_s: float = 60.0
    """No authenticated DH step of the peer for this long raises MediaDegraded(NO_PEER_STEP); 0 = never."""
    frame_ms: int = 20
    """The peer's frame duration: turns an outage's length into a bound on forward chain steps."""
    max_skew_ms: int = 2000
    """Accepted difference between a frame's interval and ours, either way."""
    max_skip_steps: int = 1024
    """Chain steps one frame may make us derive without the time bound (bounds work per forged frame)."""
    max_stored_keys: int = 2000
    """Most retained message keys (skipped or partly used steps) across all epochs, as libsignal."""
    max_key_age_s: float = 5.0
    """Retained message keys older than this are dropped: late audio is useless, and it bounds exposure."""
    prev_chain_ttl_s: float = 5.0
    """How long a superseded receiving epoch still opens late frames."""
    max_recv_chains: int = 5
    max_own_keys: int = 8
    """How many of our past ratchet private keys we keep for the peer's steps that may still use them."""
    replay_window: int = 256
    reveal_period_s: float = 20.0
    """How long each side keeps repeating its SAS reveal."""
    pq_interval_s: float = 60.0
    """In-call post-quantum ratchet (§B.12; only with an erasure coder): seconds from the end of one of our ML-KEM
    exchanges to the start of the next (0 disables ours). The offerer starts its first after half of it, the
    answerer after all of it, so the two sides' exchanges rarely overlap."""
    pq_stall_s: float = 30.0
    """Our ML-KEM exchange not completed this long after its start raises MediaDegraded(PQ_STALLED)."""
    pq_classical: bool = False
    """Run the in-call PQ ratchet on calls whose handshake was classical (X25519 only) too."""


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _wipe(buf: bytearray | None) -> None:
    if buf is not None:
        buf[:] = bytes(len(buf))


@dataclass
class RatchetStats:
    """A snapshot of one session's counters."""

    sealed: int = 0
    opened: int = 0
    announcements_sent: int = 0
    """Frames that carried one of our RATCHET_KEY TLVs."""
    overhead_bytes: int = 0
    """Total bytes added by sealing (header + control length byte + control TLVs incl. padding + tag)."""
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    local_epoch: int = 0
    peer_epoch: int = 0
    oversize_frames: int = 0
    """Frames that did not fit the set payload size and grew by whole buckets."""
    degraded: frozenset[Degradation] = frozenset()
    """The degraded conditions active now."""
    local_steps: int = 0
    peer_steps: int = 0
    pq_local_epochs: int = 0
    """Our DH steps that mixed a completed ML-KEM-768 exchange (§B.12)."""
    pq_peer_epochs: int = 0
    """The peer's DH steps that mixed an ML-KEM-768 exchange we answered."""
    pq_chunks_sent: int = 0
    pq_announcements_sent: int = 0
    pq_refused: collections.Counter[str] = field(default_factory=collections.Counter)
    """Refused PQ chunks and exchanges by reason (their frames opened)."""

    @property
    def pq_epochs(self) -> int:
        """Completed post-quantum epochs, both directions."""
        return self.pq_local_epochs + self.pq_peer_epochs


class _RatchetState:
    """DH-ratchet state shared by both directions of one call."""

    def __init__(self, keygen: Callable[[], X25519PrivateKey], max_own_keys: int, now: float) -> None:
        self.keygen = keygen
        self.max_own_keys = max_own_keys
        self.own_keys: collections.OrderedDict[int, X25519PrivateKey] = collections.OrderedDict()
        self.own_public: dict[int, bytes] = {}
        self.peer_current: tuple[int, bytes] | None = None
        """The peer's ratchet key of its current epoch (one it switched to, so it keeps its private half)."""
        self.events: collections.deque[Event] = collections.deque()
        self.ack: KeyAck | None = None
        """The ack our sealer repeats for the peer's newest announced key (None: nothing to ack)."""
        self.ack_rel = 0
        """Our frames sealed since ``ack`` was (re-)armed."""
        self.peer_acks: dict[int, bytes] = {}
        """The newest authenticated KEY_ACK prefix per epoch of ours (the sealer checks its announcement)."""
        self.degraded: set[Degradation] = set()
        self.last_peer_step_at = now
        self.version = 0
        """Bumped whenever the opener changes this state (it does so only for a frame that authenticated through
        its general path, with control TLVs or a new epoch): the sealer's fast path holds only while it is
        unchanged. Anything else that changes this state outside the sealer's general path must bump it too."""
        self.pq: PqRatchet | None = None
        """The in-call PQ ratchet (§B.12), or None when it is off."""
        self.add_own_key(0, keygen())

    def add_own_key(self, index: int, key: X25519PrivateKey) -> None:
        """Our key for epoch ``index`` (a re-announcement replaces the unacked key of the same epoch)."""
        self.version += 1
        self.own_keys.pop(index, None)
        self.own_keys[index] = key
        self.own_public[index] = _raw_public(key)
        while len(self.own_keys) > self.max_own_keys:
            old, _ = self.own_keys.popitem(last=False)
            self.own_public.pop(old, None)

    def arm_ack(self, ack: KeyAck) -> None:
        self.version += 1
        self.ack = ack
        self.ack_rel = 0

    def learn_peer_key(self, index: int, public: bytes) -> None:
        self.version += 1
        if self.peer_current is None or index > self.peer_current[0]:
            self.peer_current = (index, public)

    def degrade(self, reason: Degradation, now: float) -> None:
        if reason not in self.degraded:  # raised once: seal checks every frame
            self.version += 1
            self.degraded.add(reason)
            self.events.append(MediaDegraded(reason, now))

    def restore(self, reason: Degradation, now: float) -> None:
        if reason in self.degraded:
            self.version += 1
            self.degraded.discard(reason)
            self.events.append(MediaRestored(reason, now))
