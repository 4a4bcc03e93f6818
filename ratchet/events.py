"""Events the media session emits for the I/O layer (pulled with ``MediaSession.next_event()``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ratchet.sas import Sas


@dataclass(frozen=True)
class LocalRatchetStep:
    """We started sending under a fresh DH epoch (post-compromise security for our direction)."""

    epoch: int
    """Our new sending epoch."""
    at: float
    """The ``now`` at which the step happened."""


@dataclass(frozen=True)
class PeerRatchetStep:
    """The peer's new DH epoch authenticated; its frames now open under the new chain."""

    epoch: int
    at: float


@dataclass(frozen=True)
class LocalPqStep:
    """Our DH step ``epoch`` mixed the secret of our completed ML-KEM-768 exchange ``exchange`` into our root and
    we switched to it (§B.12): our direction has post-compromise security against a quantum attacker too."""

    exchange: int
    epoch: int
    started_at: float
    """When we started the exchange (the PQ epoch's duration is ``at - started_at``)."""
    at: float


@dataclass(frozen=True)
class PeerPqStep:
    """The peer's epoch ``epoch``, which mixes the secret of its ML-KEM-768 exchange ``exchange``, authenticated."""

    exchange: int
    epoch: int
    at: float


@dataclass(frozen=True)
class SasReady:
    """The short authentication string can be shown: at the answerer once the offerer's ``r`` arrived
    authenticated and opened the offer's commitment (before the answerer reveals ``s``); at the offerer once the
    answerer's ``s`` arrived authenticated and opened the answer's commitment."""

    sas: Sas


@dataclass(frozen=True)
class SasCommitmentFailed:
    """The peer's in-band SAS reveal contradicts the commitment it signed: treat the call as attacked. No
    SasReady follows in this session."""


@dataclass(frozen=True)
class TelephoneEventReceived:
    """An authenticated TELEPHONE_EVENT TLV (§B.11), in frame order: the 8-byte ``u32 event_id ‖ RFC 4733
    payload``. Retransmissions of one event arrive once per frame that carried them: dedup by event_id."""

    data: bytes


class Notice(enum.IntEnum):
    """NOTICE codes (PROTOCOL.md §B.2): what one side tells the other about the call, inside the encryption."""

    KEY_CHANGE_SEEN = 1
    """"I saw a changed identity key for you on this call and went on without verifying it" (a contact store's
    ``warn`` policy): the side whose key changed learns it at once, even if it hangs up first."""


@dataclass(frozen=True)
class PeerNotice:
    """The first authenticated NOTICE of a code from the peer (each code is reported once per session). ``code``
    is a ``Notice`` value, or another number from a newer peer (ignore what you do not know)."""

    code: int


class Degradation(enum.Enum):
    """Why the ratchet is not doing its job although audio may flow (PROTOCOL.md §B.7)."""

    OWN_STEP_UNACKED = "own-step-unacked"
    """Our announced next ratchet key was not acked within 2 × dh_interval_s: our direction is not stepping."""
    NO_PEER_STEP = "no-peer-step"
    """No authenticated DH step of the peer within peer_dh_timeout_s: the peer's direction is not stepping."""
    PQ_STALLED = "pq-stalled"
    """Our post-quantum epoch (§B.12) did not complete within pq_stall_s of its start (the peer stopped answering,
    does not run the PQ ratchet, or sent chunks we refused): our direction heals only against classical attackers."""


@dataclass(frozen=True)
class MediaDegraded:
    """A Degradation started (raised once until restored)."""

    reason: Degradation
    since: float


@dataclass(frozen=True)
class MediaRestored:
    """A Degradation ended."""

    reason: Degradation
    at: float


Event = (
    LocalRatchetStep
    | PeerRatchetStep
    | SasReady
    | SasCommitmentFailed
    | TelephoneEventReceived
    | MediaDegraded
    | MediaRestored
    | PeerNotice
    | LocalPqStep
    | PeerPqStep
)
