"""Sans-I/O protocol core of voipgw: identities, the signed zero-RTT handshake, the media Double Ratchet,
per-interval time keys, the frame format, safety numbers and SAS.

Nothing here opens a socket, starts a thread, reads a clock or imports a SIP stack: time is always an
argument (``now``, in seconds), bytes go in and bytes or events come out. Only ``cryptography`` and the
standard library are imported. ``voipgw`` adapts this core to the network; never the other way round.
"""

PROTOCOL_VERSION = 3
"""The wire protocol version (docs/PROTOCOL.md); ``ratchet.messages.VERSION`` is the same value."""

from ratchet.events import (  # noqa: E402  (the version constant above is imported by the modules below)
    Degradation,
    Event,
    LocalRatchetStep,
    MediaDegraded,
    MediaRestored,
    Notice,
    PeerNotice,
    PeerRatchetStep,
    SasCommitmentFailed,
    SasReady,
    TelephoneEventReceived,
)
from ratchet.session import MediaConfig, MediaSession, RatchetStats  # noqa: E402

__all__ = [
    "PROTOCOL_VERSION",
    "Degradation",
    "Event",
    "LocalRatchetStep",
    "MediaConfig",
    "MediaDegraded",
    "MediaRestored",
    "MediaSession",
    "Notice",
    "PeerNotice",
    "PeerRatchetStep",
    "RatchetStats",
    "SasCommitmentFailed",
    "SasReady",
    "TelephoneEventReceived",
]
