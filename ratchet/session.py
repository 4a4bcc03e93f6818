"""The media Double Ratchet of one call (wire version 3): a FrameSealer for our direction, a FrameOpener for the
peer's.

Theory of operation (full rules in docs/PROTOCOL.md Part B):

* Each direction has its own root key and a sequence of *epochs*. Epoch 0's chain comes from the handshake.
  Epoch e+1 starts when the sender draws a fresh X25519 key x and computes ``(root, chain) = KDF_RK(root,
  DH(x, Y_j))`` with the peer's current ratchet public key Y_j.
* The sender announces the next key in a RATCHET_KEY TLV *inside* its epoch-e frames and switches only after it
  authenticated the peer's KEY_ACK naming that key. The receiver derives the next chain only from an authenticated
  announcement (one X25519 per distinct key), so a forged frame never costs a DH and a missed announcement is
  always recoverable: the sender repeats it until acked, and re-announces a fresh key when it went unacked too long.
* All control data (ratchet keys, acks, the SAS reveal, telephone events, padding) is inside the ciphertext; with a
  payload size set, every frame has the same length.
* The opener changes nothing until a frame authenticates and its control block parses. Forward chain steps go into
  a per-chain look-ahead so none is derived twice, bounded by ``max_skip_steps`` or, after a silence, by time.
* Degraded conditions (our step unacked, no peer step) are raised as events from ``seal``, which runs every frame.

Modules: ``media_state`` (settings, schedules, shared state), ``sealer`` (``FrameSealer``), ``opener``
(``FrameOpener``); this one assembles them per call (``MediaSession``). Nothing here reads a clock: every entry
point takes ``now`` (seconds).
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
)
from ratchet.opener import START_LEARNING_S, FrameOpener
from ratchet.params import Role, SessionKeys, Suite
from ratchet.pq_chunks import ErasureCoder
from ratchet.pq_ratchet import PqRatchet
from ratchet.sas import Sas
from ratchet.sealer import MAX_EPOCH, FrameSealer
from ratchet.timekeys import MAX_WINDOW_INTERVALS, TimeKeySchedule


class MediaSession:
    """Both directions of one call's media crypto. Build it from the handshake's SessionKeys.

    The SessionKeys secrets are copied into the session and then overwritten in ``keys`` (they must not
    outlive their use); pass a fresh SessionKeys per session. ``coder`` (an erasure code, ``voipgw.erasure``) turns
    on the in-call post-quantum ratchet (PROTOCOL.md §B.12) when the handshake negotiated X25519_MLKEM768 (or
    ``config.pq_classical``); None leaves the wire exactly as without it. ``reveal_at_start`` makes an answerer
    reveal its SAS contribution from its first frame, as if ``reveal_sas()`` were called at once: only for callers
    not yet wired to a ring point (it forfeits the protection against silent probing, PROTOCOL.md §A.6).
    """

    def __init__(
        self,
        keys: SessionKeys,
        now: float,
        config: MediaConfig | None = None,
        *,
        keygen: Callable[[], X25519PrivateKey] = X25519PrivateKey.generate,
        reveal_at_start: bool = False,
        coder: ErasureCoder | None = None,
    ) -> None:
        self.config = config or MediaConfig()
        window = TimeKeySchedule.window_intervals(self.config.max_skew_ms, keys.interval_ms)
        if window > MAX_WINDOW_INTERVALS:
            raise ValueError(
                f"max_skew_ms={self.config.max_skew_ms} spans {window} intervals of {keys.interval_ms} ms; "
                f"at most {MAX_WINDOW_INTERVALS} fit the header"
            )
        self._state = _RatchetState(keygen, self.config.max_own_keys, now)
        cfg = self.config
        if coder is not None and cfg.pq_interval_s > 0 and (keys.suite is Suite.X25519_MLKEM768 or cfg.pq_classical):
            first = cfg.pq_interval_s / 2 if keys.role is Role.OFFERER else cfg.pq_interval_s
            self._state.pq = PqRatchet(coder, self._state, now + first, cfg.pq_interval_s, cfg.pq_stall_s)
        self.sealer = FrameSealer(keys, self._state, self.config, now)
        self.opener = FrameOpener(keys, self._state, self.config, now)
        self.role = keys.role
        keys.wipe()
        if reveal_at_start:
            self.reveal_sas()

        # The hot paths, bound once: a MediaSession call costs exactly one Python call.
        self.seal = self.sealer.seal
        """``seal(payload, now, event=None)``: ``event`` (8 bytes, §B.11) rides in this frame as a TLV."""
        self.open = self.opener.open
        """``open(frame, now)``: the content only (control and padding stripped)."""

    def control_size(self, now: float, *, event: bool = False) -> int:
        """The exact ctl bytes (TLV headers included, PAD excluded) the next ``seal(..., now, event=...)`` at the
        same ``now`` carries: ask the codec for ``p - control_size(now)`` bytes and every frame is ``p``."""
        return self.sealer.control_size(now, event)

    def set_payload_size(self, p: int | None, *, bucket: int = 32) -> None:
        """Pad every frame sealed from now on to plaintext size ``1 + p`` (None: no padding). A frame whose control
        and content exceed ``p`` grows to ``p + k * bucket`` for the smallest k that fits (``oversize_frames``)."""
        self.sealer.set_payload_size(p, bucket)

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

    def send_notice(self, code: int) -> None:
        """Tell the peer ``code`` (``ratchet.events.Notice``) inside the encryption, repeated over the next 10 s of
        frames (PROTOCOL.md §B.2); the peer gets one ``PeerNotice`` per code."""
        self.sealer.send_notice(code)

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
        stats = RatchetStats(
            sealed=s.sealed,
            opened=o.opened,
            announcements_sent=s.announcements,
            overhead_bytes=s.overhead_bytes,
            refused=collections.Counter(o.refused),
            local_epoch=s.epoch,
            peer_epoch=o.peer_epoch,
            oversize_frames=s.oversize_frames,
            degraded=frozenset(self._state.degraded),
            local_steps=s.local_steps,
            peer_steps=o.peer_steps,
        )
        pq = self._state.pq
        if pq is not None:
            stats.pq_local_epochs = pq.local_epochs
            stats.pq_peer_epochs = pq.peer_epochs
            stats.pq_chunks_sent = pq.chunks_sent
            stats.pq_announcements_sent = s.pq_announcements
            stats.pq_refused = collections.Counter(pq.refused)
        return stats

    @property
    def pq(self) -> PqRatchet | None:
        """The in-call post-quantum ratchet (§B.12), or None when it is off."""
        return self._state.pq

    @property
    def pq_epochs(self) -> int:
        """Completed post-quantum epochs, both directions (our steps that mixed an ML-KEM secret, and the peer's)."""
        pq = self._state.pq
        return 0 if pq is None else pq.local_epochs + pq.peer_epochs

    def next_event(self) -> Event | None:
        return self._state.events.popleft() if self._state.events else None

    def close(self) -> None:
        self.sealer.close()
        self.opener.close()
        if self._state.pq is not None:
            self._state.pq.close()
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
]
