"""The seam between a media stream and what protects its frames: the protector protocols (plain, sealed with
equal frames and DTMF inside) and the identity protector of plain calls. Types only, no I/O."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from voipgw.audio.pcm import Pcm


class MediaError(RuntimeError):
    """The media stream cannot do what was asked."""


class InsecureMediaRefused(MediaError):
    """A ``secure=False`` protector without ``allow_insecure=True`` (the ``require`` policy)."""

    reason = "insecure-media-refused"


class FrameProtector(Protocol):
    """The per-call sealer/opener seam (implemented by the ratchet session adapter, or PlainProtector)."""

    secure: bool
    """False for the opportunistic plain path: MediaStream refuses it unless explicitly allowed."""

    @property
    def last_index(self) -> int | None:
        """The authenticated frame counter of the frame that last opened (the playout order); None when there is
        none (plain calls, or nothing opened yet)."""
        ...

    def seal(self, payload: bytes, now: float) -> bytes: ...

    def open(self, frame: bytes, now: float) -> bytes:
        """The opened payload; raises ratchet.errors.FrameError (with ``.reason``) for a refused frame."""
        ...


@runtime_checkable
class SealedStream(FrameProtector, Protocol):
    """A secure protector whose frames are made equal and carry DTMF inside (wire v3, ratchet.MediaSession).

    A secure protector without these methods still carries audio, unpadded, but no DTMF."""

    def seal(self, payload: bytes, now: float, event: bytes | None = None) -> bytes:
        """``event`` (8 bytes, rtp.dtmf.encode_sealed) rides inside this audio frame."""
        ...

    def control_size(self, now: float, *, event: bool = False) -> int:
        """The control bytes the next ``seal`` at the same ``now`` carries (what the codec must leave free)."""
        ...

    def set_payload_size(self, p: int | None, *, bucket: int = 32) -> None:
        """Every frame sealed from now on carries ``p`` bytes of control + content (padded); more grows it to
        the next ``p + k * bucket``."""
        ...

    def take_telephone_events(self) -> list[bytes]:
        """The telephone events (8 bytes each) of the frames opened so far, in frame order, each once."""
        ...


@runtime_checkable
class BudgetEncoder(Protocol):
    """An encoder that can make constant-size packets and give bytes up to control data (OpusEncoder)."""

    @property
    def packet_bytes(self) -> int | None:
        """Every packet's size once ``use_cbr`` was called; None while VBR."""
        ...

    def use_cbr(self) -> None: ...

    def encode(self, pcm: Pcm, max_bytes: int | None = None) -> bytes: ...


class PlainProtector:
    """Identity protector for plain (NOT SECURE) calls: payloads go out and come in as clear codec frames."""

    secure = False
    last_index: int | None = None
    """Never set: plain frames carry no authenticated counter (MediaStream orders them by RTP sequence)."""

    def seal(self, payload: bytes, now: float) -> bytes:
        return payload

    def open(self, frame: bytes, now: float) -> bytes:
        return frame
