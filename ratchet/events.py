"""Events the media session emits for the I/O layer (pulled with ``MediaSession.next_event()``)."""

from __future__ import annotations

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
class SasReady:
    """The short authentication string can be shown: at the answerer once the offerer's ``r`` arrived
    authenticated and opened the offer's commitment (before the answerer reveals ``s``); at the offerer once the
    answerer's ``s`` arrived authenticated and opened the answer's commitment."""

    sas: Sas


@dataclass(frozen=True)
class SasCommitmentFailed:
    """The peer's in-band SAS reveal contradicts the commitment it signed: treat the call as attacked. No
    SasReady follows in this session."""


Event = LocalRatchetStep | PeerRatchetStep | SasReady | SasCommitmentFailed
