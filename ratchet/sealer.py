"""Our direction of one call's media ratchet: ``FrameSealer`` seals each frame, steps the symmetric chain and
the DH ratchet on schedule and announces its ratchet keys in-band (docs/PROTOCOL.md §B.4). Split from ``session``."""

from __future__ import annotations

import hashlib
import math

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from ratchet.chain import kdf_ck
from ratchet.errors import (
    SealError,
)
from ratchet.events import LocalRatchetStep
from ratchet.frame import (
    CONTENT_AUDIO,
    CONTENT_TELEPHONE_EVENT,
    COUNTER_MOD,
    COUNTER_SHIFT,
    EPOCH_MOD,
    EPOCH_SHIFT,
    HEADER_LEN,
    INTERVAL_MASK,
    INTERVAL_SHIFT,
    MAX_PAYLOAD,
    NO_PEER_EPOCH,
    SUITE_SHIFT,
    TAG_LEN,
    AeadCipher,
    Extensions,
    RatchetKeyAnnouncement,
    aead_factory,
    chain_id,
    encode_extensions,
    frame_key,
    key_check_value,
    make_aead,
    nonce_prefix,
    per_frame_hash,
    per_frame_key,
    with_content_type,
)
from ratchet.kdf import kdf_rk
from ratchet.media_state import (
    MediaConfig,
    _next_announce,
    _RatchetState,
    _wipe,
)
from ratchet.params import FrameSuite, Role, SessionKeys
from ratchet.timekeys import TimeKeySchedule

MAX_EPOCH = 0xFFFE
"""The last epoch a sender starts: the ratchet-key announcement carries epochs as u16 and 0xFFFF is the
``peer_epoch`` of epoch 0 ("no peer key used"). A sender that reaches it stops DH stepping and keeps its
symmetric chain (18 hours of steps at the shortest interval voipgw accepts); stepping past it overflowed the field
and stopped the media."""


class FrameSealer:
    """Seals our outgoing frames. ``seal(payload, now) -> bytes``."""

    def __init__(self, keys: SessionKeys, state: _RatchetState, config: MediaConfig, now: float) -> None:
        params = keys.send_params
        self._suite: FrameSuite = params.frame_suite
        self._fpk = params.frames_per_key
        self._per_frame = params.per_frame_keys
        self._config = config
        self._state = state
        self._tks = TimeKeySchedule(
            keys.send_time_secret,
            keys.send_stream_salt,
            keys.call_id,
            keys.send_direction,
            keys.interval_ms,
            now,
        )
        self._root = bytearray(keys.send_root)
        self._reveal = bytes(keys.sas_secret) if keys.sas_secret is not None else None
        # The offerer reveals r from its first frames; the answerer reveals s only once the call layer calls
        # start_reveal() (its user-visible commitment point, PROTOCOL.md §A.6), for reveal_period_s from the
        # first frame sealed after that call. None = the period has not started.
        self.reveal_started = keys.role is Role.OFFERER
        self._reveal_until: float | None = now + config.reveal_period_s if self.reveal_started else None
        self._extension_bytes = 0
        self.announcements = 0
        self._n = 0
        self._interval_s = keys.interval_ms / 1000.0
        self._fast_until_n = 0
        self._fast_t_hi = -math.inf  # the fast path is off until the slow path arms it
        self._fast_word = 0
        self._fast_ext = b""
        self._fast_mk: bytearray | None = None
        self._fast_pf: hashlib._Hash | None = None
        self._new_aead = aead_factory(self._suite)
        self._fast_tk = b""
        self._announce_n = 0
        self._start_epoch(0, 0, now, bytearray(keys.send_chain), NO_PEER_EPOCH)
        self.closed = False

    @property
    def epoch(self) -> int:
        return self._epoch

    def _start_epoch(self, epoch: int, start_n: int, now: float, chain_key: bytearray, peer_epoch: int) -> None:
        self._epoch = epoch
        self._epoch_start_n = start_n
        self._epoch_started_at = now
        self._peer_epoch_used = peer_epoch
        self._ck = chain_key
        self._ck_step = 0
        self._chain_ident = chain_id(chain_key)
        self._step = -1
        self._mk: bytearray | None = None
        self._interval: int | None = None
        self._aead: AeadCipher | None = None
        self._kcv = 0
        self._kcv_interval: int | None = None
        self._prefix = nonce_prefix(self._suite, epoch)
        self._nonce_base = int.from_bytes(self._prefix, "big") << 64
        self._nonce_len = len(self._prefix) + 8
        self._ext_cache: tuple[bool, bytes] | None = None
        self._hdr_base = (int(self._suite) << SUITE_SHIFT) | ((epoch % EPOCH_MOD) << EPOCH_SHIFT)
        self._next_announce = 0

    def _dh_step(self, now: float) -> None:
        assert self._state.peer_latest is not None
        peer_index, peer_public = self._state.peer_latest
        private = self._state.keygen()
        dh = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        new_root, chain_key = kdf_rk(bytes(self._root), dh)
        _wipe(self._root)
        self._root = bytearray(new_root)
        _wipe(self._ck)
        _wipe(self._mk)
        epoch = self._epoch + 1
        self._state.add_own_key(epoch, private)
        self._start_epoch(epoch, self._n, now, bytearray(chain_key), peer_index)
        self._state.events.append(LocalRatchetStep(epoch, now))

    def _advance(self, step: int) -> None:
        """Move the chain to ``step`` (monotonic), dropping every earlier message and chain key."""
        mk = b""
        ck = self._ck
        while self._ck_step <= step:
            mk, nxt = kdf_ck(bytes(ck))
            _wipe(ck)
            ck = bytearray(nxt)
            self._ck_step += 1
        self._ck = ck
        _wipe(self._mk)
        self._mk = bytearray(mk)
        self._fast_mk = None
        self._fast_pf = None
        self._step = step
        self._interval = None

    def start_reveal(self) -> None:
        """Start revealing our SAS contribution (the answerer's ``s``); idempotent. The next frame announces, so
        the reveal leaves with the first frame sealed after this call, and the reveal period starts there."""
        if self.reveal_started:
            return
        self.reveal_started = True
        self._next_announce = self._n - self._epoch_start_n
        self._fast_t_hi = -math.inf  # the fast path's cached block lacks the reveal

    def _revealing(self, now: float) -> bool:
        if self._reveal is None or not self.reveal_started:
            return False
        if self._reveal_until is None:
            self._reveal_until = now + self._config.reveal_period_s
        return now < self._reveal_until

    def _extensions(self, now: float) -> bytes:
        """The epoch's extension block; constant within an epoch except when the SAS reveal starts or ends."""
        revealing = self._revealing(now)
        self.announcements += 1
        if self._ext_cache is not None and self._ext_cache[0] == revealing:
            return self._ext_cache[1]
        ratchet_key = RatchetKeyAnnouncement(
            self._epoch, self._peer_epoch_used, self._epoch_start_n, self._state.own_public[self._epoch]
        )
        block = encode_extensions(Extensions(ratchet_key, self._reveal if revealing else None))
        self._ext_cache = (revealing, block)
        return block

    def seal(self, payload: bytes, now: float) -> bytes:
        n = self._n
        # Fast path: same chain step and interval, no DH step due (armed by _arm_fast_path). ``now`` is
        # non-decreasing for a sealer, so only the upper time bound needs checking. Literals instead of
        # module constants: this runs 50 times a second per call.
        if n < self._fast_until_n and now < self._fast_t_hi and len(payload) <= 1400:
            word = self._fast_word | ((n & 0x1FFF) << 14)
            if n == self._announce_n:
                aad = (word | 0x40000000).to_bytes(4, "big") + self._fast_ext
                self._next_announce = _next_announce(n - self._epoch_start_n)
                self._announce_n = self._epoch_start_n + self._next_announce
                self.announcements += 1
                self._extension_bytes += len(self._fast_ext)
            else:
                aad = word.to_bytes(4, "big")
            self._n = n + 1
            nonce = (self._nonce_base | n).to_bytes(self._nonce_len, "big")
            if self._fast_pf is None:
                aead = self._aead
            else:  # per-frame keys: SHA-256(label ‖ mk ‖ tk ‖ u64 n) from a precomputed hash state
                h = self._fast_pf.copy()
                h.update(n.to_bytes(8, "big"))
                aead = self._new_aead(h.digest())
            return aad + aead.encrypt(nonce, payload, aad)  # type: ignore[union-attr]
        if n == self._fast_until_n and now < self._fast_t_hi:
            self._step_forward()  # in-order step boundary: one KDF_CK step, then the fast path again
            return self.seal(payload, now)
        return self._seal_slow(payload, now)

    def seal_event(self, payload: bytes, now: float) -> bytes:
        """Seal a telephone-event payload (§B.11): the next frame of the same counter sequence as the audio,
        with a CONTENT_TYPE extension in its authenticated block. Always the general path (events are rare)."""
        return self._seal_slow(payload, now, CONTENT_TELEPHONE_EVENT)

    def _step_forward(self) -> None:
        interval = self._interval
        assert interval is not None
        self._advance(self._step + 1)
        assert self._mk is not None
        if not self._per_frame:
            self._aead = make_aead(self._suite, frame_key(self._mk, self._fast_tk))
        self._interval = interval
        self._fast_until_n += self._fpk
        if self._per_frame:
            self._fast_mk = self._mk
            self._fast_pf = per_frame_hash(self._mk, self._fast_tk)

    def _seal_slow(self, payload: bytes, now: float, content: int = CONTENT_AUDIO) -> bytes:
        if self.closed:
            raise SealError("session closed")
        if len(payload) > MAX_PAYLOAD:
            raise SealError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        cfg = self._config
        if (
            cfg.dh_interval_s > 0
            and now - self._epoch_started_at >= cfg.dh_interval_s
            and self._state.peer_latest is not None
            and self._epoch < MAX_EPOCH
        ):
            self._dh_step(now)
        n = self._n
        rel = n - self._epoch_start_n
        step = rel // self._fpk
        if step != self._step:
            self._advance(step)
        interval = self._tks.interval_at(now)
        if self._per_frame:
            tk = self._tks.key(interval)
            assert self._mk is not None
            aead = make_aead(self._suite, per_frame_key(self._mk, tk, n))
            if interval != self._kcv_interval:
                self._kcv = key_check_value(self._chain_ident, tk)
                self._kcv_interval = interval
            self._interval = interval
        elif interval != self._interval or self._aead is None:
            tk = self._tks.key(interval)
            assert self._mk is not None
            self._aead = make_aead(self._suite, frame_key(self._mk, tk))
            self._kcv = key_check_value(self._chain_ident, tk)
            self._interval = interval
            aead = self._aead
        else:
            aead = self._aead
        word = (
            self._hdr_base
            | ((n % COUNTER_MOD) << COUNTER_SHIFT)
            | ((interval & INTERVAL_MASK) << INTERVAL_SHIFT)
            | self._kcv
        )
        announce = rel == self._next_announce
        if announce or content != CONTENT_AUDIO:
            ext = self._extensions(now) if announce else b""
            if content != CONTENT_AUDIO:
                ext = with_content_type(ext, content)
            aad = (word | (1 << 30)).to_bytes(HEADER_LEN, "big") + ext
            self._extension_bytes += len(ext)
            if announce:
                self._next_announce = _next_announce(rel)
        else:
            aad = word.to_bytes(HEADER_LEN, "big")
        sealed = aad + aead.encrypt(self._prefix + n.to_bytes(8, "big"), payload, aad)
        self._n = n + 1
        self._arm_fast_path(interval, now)
        return sealed

    def _arm_fast_path(self, interval: int, now: float) -> None:
        if self.closed:
            self._fast_t_hi = -math.inf
            return
        self._fast_until_n = self._epoch_start_n + (self._step + 1) * self._fpk
        self._announce_n = self._epoch_start_n + self._next_announce
        self._fast_ext = self._extensions(now)
        self.announcements -= 1  # _extensions counts a use; this was only a lookup
        origin = self._tks.origin
        self._fast_t_hi = origin + (interval + 1) * self._interval_s
        if self._config.dh_interval_s > 0 and self._state.peer_latest is not None and self._epoch < MAX_EPOCH:
            self._fast_t_hi = min(self._fast_t_hi, self._epoch_started_at + self._config.dh_interval_s)
        if self._reveal_until is not None and now < self._reveal_until:
            self._fast_t_hi = min(self._fast_t_hi, self._reveal_until)  # the cached block carries the reveal
        self._fast_word = self._hdr_base | ((interval & INTERVAL_MASK) << INTERVAL_SHIFT) | self._kcv
        self._fast_mk = self._mk if self._per_frame else None
        self._fast_tk = self._tks.key(interval)
        self._fast_pf = per_frame_hash(self._fast_mk, self._fast_tk) if self._fast_mk is not None else None

    @property
    def sealed(self) -> int:
        return self._n

    @property
    def overhead_bytes(self) -> int:
        """Bytes added by sealing so far: header and tag on every frame, plus the extension blocks."""
        return self._n * (HEADER_LEN + TAG_LEN[self._suite]) + self._extension_bytes

    def close(self) -> None:
        self.closed = True
        self._fast_t_hi = -math.inf
        _wipe(self._root)
        _wipe(self._ck)
        _wipe(self._mk)
        self._aead = None
        self._fast_mk = None
