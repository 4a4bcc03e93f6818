"""Shared protocol types: suites, roles, negotiated media parameters and the handshake's output keys.

The handshake (``handshake.py``) produces a :class:`SessionKeys`; the media ratchet (``session.py``) consumes
it. Secret fields are ``bytearray`` so their owner can overwrite them once copied into live state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Suite(enum.IntEnum):
    """Key-exchange suites, as bits of the offer's suite mask. Higher value = preferred."""

    X25519 = 0x01
    X25519_MLKEM768 = 0x02


SUITE_NAMES = {Suite.X25519: "x25519", Suite.X25519_MLKEM768: "x25519-mlkem768"}


class FrameSuite(enum.IntEnum):
    """AEAD suites for media frames (the S bit of the frame header)."""

    AES256_CCM_80 = 0  # default: 10-byte tag, 14 bytes of steady-state overhead
    AES256_GCM_128 = 1  # 16-byte tag


class Role(enum.Enum):
    OFFERER = "offerer"
    ANSWERER = "answerer"


class Direction(enum.IntEnum):
    """Media direction, used in labels and time-key metadata."""

    OFFERER_TO_ANSWERER = 0
    ANSWERER_TO_OFFERER = 1

    @property
    def label(self) -> bytes:
        return b"o2a" if self is Direction.OFFERER_TO_ANSWERER else b"a2o"


# Ranges accepted for negotiated parameters (a peer outside them gets BadParameters).
MIN_INTERVAL_MS = 20
MAX_INTERVAL_MS = 60_000
MIN_FRAMES_PER_KEY = 1
MAX_FRAMES_PER_KEY = 1024
DEFAULT_INTERVAL_MS = 2000
"""Default time-key renewal interval (the offer proposes it; see PROTOCOL.md §5.3)."""


@dataclass(frozen=True)
class SendParams:
    """How one side keys the frames it sends; signed in its handshake message."""

    frames_per_key: int = 50
    """Frames sealed under one chain step (message key). 1 = the chain steps on every frame."""
    per_frame_keys: bool = False
    """Derive a distinct AEAD key for every frame from the step's message key (see PROTOCOL.md §6)."""
    frame_suite: FrameSuite = FrameSuite.AES256_CCM_80


@dataclass(repr=False)
class SessionKeys:
    """Everything the media layer needs after a successful handshake, from the local point of view."""

    suite: Suite
    role: Role
    call_id: str
    local_aor: str
    remote_aor: str
    local_identity: bytes
    """Serialized identity key (33 bytes) of this side."""
    remote_identity: bytes
    transcript_hash: bytes
    interval_ms: int
    """Time-key renewal interval, common to both directions."""
    send_params: SendParams
    recv_params: SendParams
    send_root: bytearray
    recv_root: bytearray
    send_chain: bytearray
    recv_chain: bytearray
    send_time_secret: bytearray
    recv_time_secret: bytearray
    send_stream_salt: bytes
    """Sender's handshake nonce, the per-stream salt of its time keys."""
    recv_stream_salt: bytes
    sas_seed: bytearray
    sas_commitment: bytes
    """The offerer's 16-byte commitment to its SAS contribution ``r`` (signed in the offer)."""
    answer_sas_commitment: bytes
    """The answerer's 16-byte commitment to its SAS contribution ``s`` (signed in the answer)."""
    sas_secret: bytearray | None = None
    """This side's own SAS contribution, which it reveals in-band: ``r`` at the offerer (from its first frames),
    ``s`` at the answerer (only after ``MediaSession.reveal_sas()``). None only in hand-built keys (benchmarks)."""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def send_direction(self) -> Direction:
        return Direction.OFFERER_TO_ANSWERER if self.role is Role.OFFERER else Direction.ANSWERER_TO_OFFERER

    @property
    def recv_direction(self) -> Direction:
        return Direction.ANSWERER_TO_OFFERER if self.role is Role.OFFERER else Direction.OFFERER_TO_ANSWERER

    @property
    def offer_sas_commitment(self) -> bytes:
        """The offer's commitment (the same value as ``sas_commitment``, named after the message carrying it)."""
        return self.sas_commitment

    def peer_sas_commitment(self) -> bytes:
        """The commitment the peer's reveal must open: the answer's at the offerer, the offer's at the answerer."""
        return self.answer_sas_commitment if self.role is Role.OFFERER else self.sas_commitment

    def wipe(self) -> None:
        """Overwrite every secret field in place (best effort; see PROTOCOL.md on Python's limits)."""
        for buf in (
            self.send_root,
            self.recv_root,
            self.send_chain,
            self.recv_chain,
            self.send_time_secret,
            self.recv_time_secret,
            self.sas_seed,
            self.sas_secret,
        ):
            if buf is not None:
                buf[:] = bytes(len(buf))

    def __repr__(self) -> str:  # never show key material
        return f"SessionKeys(suite={self.suite.name}, role={self.role.value}, remote_aor={self.remote_aor!r})"
