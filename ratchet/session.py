"""The media Double Ratchet of one call: a FrameSealer for our direction, a FrameOpener for the peer's.

Theory of operation (full rules in docs/PROTOCOL.md §5–§7):

* Each direction has its own root key and a sequence of *epochs*. Epoch 0's chain comes from the handshake.
  Epoch e ≥ 1 starts when the sender draws a fresh X25519 key x_e and computes
  ``(root, chain) = KDF_RK(root, DH(x_e, Y_j))`` with the peer's newest ratchet public key Y_j.
* The chain steps once per ``frames_per_key`` frames (KDF_CK); each step's message key is combined with the
  interval's time key into the AEAD key.
* Ratchet public keys travel in-band in an authenticated header extension, repeated on a schedule (frames
  0-2 of an epoch, every 4th frame until frame 128, every 16th until 512, then every 128th), so losing the
  frames that carry them delays the peer by at most one repetition and never desynchronises it. Each side's
  initial key X_0 is announced the same way in epoch 0.
* The opener changes nothing until a frame authenticates: epoch trials, forward chain steps and replay
  updates are computed on the side and committed only after the AEAD tag verifies. Work per forged frame is
  bounded: forward chain steps go into a per-chain look-ahead so none is derived twice (``max_skip_steps`` in
  all), and trial DH is rate-limited per second.

Modules: ``media_state`` (settings, announcement schedule, shared state), ``sealer`` (``FrameSealer``),
``opener`` (``FrameOpener``); this one assembles them per call (``MediaSession``). The sealer and the opener
share one ``_RatchetState`` (our private ratchet keys, the peer's newest public
key, the event queue). Nothing here reads a clock: every entry point takes ``now`` (seconds).
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ratchet.events import Event
from ratchet.media_state import (
    MediaConfig,
    RatchetStats,
    _RatchetState,
    announces,
)
from ratchet.opener import START_LEARNING_S, FrameOpener
from ratchet.params import SessionKeys
from ratchet.sas import Sas
from ratchet.sealer import MAX_EPOCH, FrameSealer
from ratchet.timekeys import MAX_WINDOW_INTERVALS, TimeKeySchedule


class MediaSession:
    """Both directions of one call's media crypto. Build it from the handshake's SessionKeys.

    The SessionKeys secrets are copied into the session and then overwritten in ``keys`` (they must not
    outlive their use); pass a fresh SessionKeys per session. ``reveal_at_start`` makes an answerer reveal its
    SAS contribution from its first frame, as if ``reveal_sas()`` were called at once: only for callers not yet
    wired to a ring point (it forfeits the protection against silent probing, PROTOCOL.md §A.6).
    """

    def __init__(
        self,
        keys: SessionKeys,
        now: float,
        config: MediaConfig | None = None,
        *,
        keygen: Callable[[], X25519PrivateKey] = X25519PrivateKey.generate,
        reveal_at_start: bool = False,
    ) -> None:
        self.config = config or MediaConfig()
        window = TimeKeySchedule.window_intervals(self.config.max_skew_ms, keys.interval_ms)
        if window > MAX_WINDOW_INTERVALS:
            raise ValueError(
                f"max_skew_ms={self.config.max_skew_ms} spans {window} intervals of {keys.interval_ms} ms; "
                f"at most {MAX_WINDOW_INTERVALS} fit the header"
            )
        self._state = _RatchetState(keygen, self.config.max_own_keys)
        self.sealer = FrameSealer(keys, self._state, self.config, now)
        self.opener = FrameOpener(keys, self._state, self.config, now)
        self.role = keys.role
        keys.wipe()
        if reveal_at_start:
            self.reveal_sas()

        # The hot paths, bound once: a MediaSession call costs exactly one Python call.
        self.seal: Callable[[bytes, float], bytes] = self.sealer.seal
        self.open: Callable[[bytes, float], bytes] = self.opener.open
        self.seal_event: Callable[[bytes, float], bytes] = self.sealer.seal_event
        """Seal a telephone-event payload in the audio's frame sequence (§B.11)."""
        self.open_event: Callable[[bytes, float], bytes] = self.opener.open_event
        """Open a frame that arrived with the telephone-event payload type (§B.11)."""

    @property
    def last_index(self) -> int:
        return self.opener.last_index

    @property
    def sas(self) -> Sas | None:
        """The SAS once this side knows it, else None: the answerer once the offerer's ``r`` opened the offer's
        commitment (before its own reveal), the offerer once the answerer's ``s`` opened the answer's."""
        return self.opener.sas

    def reveal_sas(self) -> None:
        """Answerer: start revealing ``s`` in our announcing frames. The call layer calls this only at its
        user-visible commitment point (the phone rings with the SAS on its display, or an auto-answering endpoint
        has recorded the call as an attempt); before it, nobody else can compute the SAS (PROTOCOL.md §A.6).
        Idempotent; a no-op at the offerer, which reveals ``r`` from its first frames."""
        self.sealer.start_reveal()

    @property
    def sas_revealed(self) -> bool:
        """Whether our SAS contribution is (being) revealed: the offerer from the start, the answerer once
        ``reveal_sas()`` was called."""
        return self.sealer.reveal_started

    @property
    def sas_failed(self) -> bool:
        return self.opener.sas_failed

    @property
    def stats(self) -> RatchetStats:
        s, o = self.sealer, self.opener
        return RatchetStats(
            sealed=s.sealed,
            opened=o.opened,
            announcements_sent=s.announcements,
            overhead_bytes=s.overhead_bytes,
            refused=collections.Counter(o.refused),
            local_epoch=s.epoch,
            peer_epoch=o.peer_epoch,
        )

    def next_event(self) -> Event | None:
        return self._state.events.popleft() if self._state.events else None

    def close(self) -> None:
        self.sealer.close()
        self.opener.close()
        self._state.own_keys.clear()
        self._state.own_public.clear()


__all__ = [
    "MAX_EPOCH",
    "START_LEARNING_S",
    "FrameOpener",
    "FrameSealer",
    "MediaConfig",
    "MediaSession",
    "RatchetStats",
    "announces",
]
