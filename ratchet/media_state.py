"""What the two directions of one call's media ratchet share: the local settings (``MediaConfig``), the
announcement schedule of ratchet keys, our ratchet key pairs and the peer's newest key with the event queue
(``_RatchetState``), and the counters. Split from ``session`` (see its docstring for the theory of operation)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ratchet.events import Event

# Announcement schedule (frame offsets within an epoch): every frame at first, then ever sparser. The first
# 2.5 s announce every 4th frame so that an outage or burst that swallows the first announcements of a new epoch
# costs at most 3 frames (60 ms) once audio flows again (it cost up to 15 with every 16th; docs/RELIABILITY.md).
ANNOUNCE_FIRST = 3
ANNOUNCE_TIERS = ((128, 4), (512, 16))
"""(until offset, every): below ``until``, every ``every``-th frame announces."""
ANNOUNCE_SPARSE_EVERY = 128


def _announce_every(rel: int) -> int:
    for until, every in ANNOUNCE_TIERS:
        if rel < until:
            return every
    return ANNOUNCE_SPARSE_EVERY


@dataclass(frozen=True)
class MediaConfig:
    """Local media-ratchet settings (not negotiated; the peer need not share them)."""

    dh_interval_s: float = 30.0
    """Seconds between our DH ratchet steps (0 disables stepping)."""
    max_skew_ms: int = 2000
    """Accepted difference between a frame's interval and ours, either way."""
    max_skip_steps: int = 1024
    """Most chain steps one frame may make us derive (bounds work per forged frame)."""
    max_stored_keys: int = 2000
    """Most retained message keys (skipped or partly used steps) across all epochs, as libsignal."""
    max_key_age_s: float = 5.0
    """Retained message keys older than this are dropped: late audio is useless, and it bounds exposure."""
    prev_chain_ttl_s: float = 5.0
    """How long a superseded receiving epoch still opens late frames."""
    max_recv_chains: int = 5
    max_own_keys: int = 4
    """How many of our past ratchet private keys we keep for the peer's steps that may still use them."""
    replay_window: int = 256
    max_epoch_trials_per_s: float = 20.0
    reveal_period_s: float = 20.0
    """How long the offerer keeps repeating its SAS reveal."""


def _next_announce(rel: int) -> int:
    """Smallest epoch-relative frame offset > rel that carries the ratchet-key extension."""
    nxt = rel + 1
    if nxt < ANNOUNCE_FIRST:
        return nxt
    every = _announce_every(nxt)
    return -(-nxt // every) * every  # each tier boundary is a multiple of the next tier's period


def announces(rel: int) -> bool:
    """Whether the frame at epoch-relative offset ``rel`` carries the ratchet-key extension."""
    if rel < ANNOUNCE_FIRST:
        return True
    return rel % _announce_every(rel) == 0


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
    overhead_bytes: int = 0
    """Total bytes added by sealing (header + extensions + tag)."""
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    local_epoch: int = 0
    peer_epoch: int = 0


class _RatchetState:
    """DH-ratchet state shared by both directions of one call."""

    def __init__(self, keygen: Callable[[], X25519PrivateKey], max_own_keys: int) -> None:
        self.keygen = keygen
        self.max_own_keys = max_own_keys
        self.own_keys: collections.OrderedDict[int, X25519PrivateKey] = collections.OrderedDict()
        self.own_public: dict[int, bytes] = {}
        self.peer_latest: tuple[int, bytes] | None = None
        self.events: collections.deque[Event] = collections.deque()
        self.add_own_key(0, keygen())

    def add_own_key(self, index: int, key: X25519PrivateKey) -> None:
        self.own_keys[index] = key
        self.own_public[index] = _raw_public(key)
        while len(self.own_keys) > self.max_own_keys:
            old, _ = self.own_keys.popitem(last=False)
            self.own_public.pop(old, None)

    def learn_peer_key(self, index: int, public: bytes) -> None:
        if self.peer_latest is None or index > self.peer_latest[0]:
            self.peer_latest = (index, public)
