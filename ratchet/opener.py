"""The peer's direction of one call's media ratchet: ``FrameOpener`` opens each frame and changes nothing until
it authenticates (docs/PROTOCOL.md §B.5): epoch trials, the chain look-ahead, retained step keys, replay and
the interval window. Split from ``session``."""

from __future__ import annotations

import collections
import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from ratchet.chain import kdf_ck
from ratchet.errors import (
    ExpiredKey,
    ExtensionError,
    FrameError,
    FutureFrame,
    KeyDesync,
    MalformedFrame,
    ReplayedFrame,
    StaleFrame,
    TamperedFrame,
    TooFarAhead,
    UnknownEpoch,
    WrongContent,
    WrongSuite,
)
from ratchet.events import PeerRatchetStep, SasCommitmentFailed, SasReady
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
    SUITE_SHIFT,
    TAG_LEN,
    AeadCipher,
    Extensions,
    RatchetKeyAnnouncement,
    aead_factory,
    chain_id,
    frame_key,
    key_check_value,
    make_aead,
    nearest,
    nonce_prefix,
    parse_extensions,
    per_frame_hash,
    per_frame_key,
    split_frame,
)
from ratchet.kdf import kdf_rk
from ratchet.media_state import (
    MediaConfig,
    _RatchetState,
    _wipe,
)
from ratchet.params import FrameSuite, Role, SessionKeys
from ratchet.replay import ReplayWindow
from ratchet.sas import Sas, compute_sas, verify_sas_reveal
from ratchet.timekeys import INTERVAL_MOD, MAX_WINDOW_INTERVALS, TimeKeySchedule

START_LEARNING_S = 5.0
"""After the first frame opens, how long a frame ahead of the skew window may still move the interval reference
(if it authenticates): covers the early frames buffered before our keys existed and a slow call setup."""


class _StepKey:
    __slots__ = ("aeads", "created", "mk", "used")

    def __init__(self, mk: bytes, created: float) -> None:
        self.mk = bytearray(mk)
        self.created = created
        self.used = 0
        self.aeads: dict[int, AeadCipher] = {}

    def wipe(self) -> None:
        _wipe(self.mk)
        self.aeads.clear()


class _RecvChain:
    __slots__ = ("ahead", "ck", "cur", "epoch", "ident", "kcvs", "next_step", "prefix", "start", "superseded_at")

    def __init__(self, epoch: int, start: int, ck: bytes, suite: FrameSuite) -> None:
        self.epoch = epoch
        self.start = start
        self.ck = bytearray(ck)
        self.next_step = 0
        self.cur: _StepKey | None = None
        """Key of step next_step - 1, the newest: exempt from the age bound while the chain is live."""
        self.ident = chain_id(ck)
        self.prefix = nonce_prefix(suite, epoch)
        self.superseded_at: float | None = None
        self.kcvs: dict[int, int] = {}
        self.ahead: list[tuple[bytes, _StepKey]] = []
        """Look-ahead: ``ahead[i]`` is (the chain key after step ``next_step + i``, that step's key), derived for a
        frame that has not authenticated yet and kept so that no chain step is ever derived twice. Everything in it
        follows from ``ck`` alone, so keeping it exposes nothing ``ck`` does not; it is wiped with the chain."""

    def wipe(self) -> None:
        _wipe(self.ck)
        if self.cur is not None:
            self.cur.wipe()
        for _, key in self.ahead:
            key.wipe()
        self.ahead.clear()


class _Pending:
    """What one frame would change, applied only after it authenticates."""

    __slots__ = ("ahead_used", "new_ck", "new_root", "step_key", "trial_chain")

    def __init__(self) -> None:
        self.ahead_used = 0
        """How many look-ahead entries the frame's step consumes (steps next_step .. next_step + ahead_used - 1)."""
        self.new_ck: bytes | None = None
        self.step_key: _StepKey | None = None
        self.trial_chain: _RecvChain | None = None
        self.new_root: bytes | None = None


class FrameOpener:
    """Opens the peer's frames. ``open(frame, now)`` returns the payload or raises a FrameError subclass."""

    def __init__(self, keys: SessionKeys, state: _RatchetState, config: MediaConfig, now: float) -> None:
        params = keys.recv_params
        self._suite: FrameSuite = params.frame_suite
        self._tag_len = TAG_LEN[self._suite]
        self._fpk = params.frames_per_key
        self._per_frame = params.per_frame_keys
        self._config = config
        self._state = state
        self._tks = TimeKeySchedule(
            keys.recv_time_secret,
            keys.recv_stream_salt,
            keys.call_id,
            keys.recv_direction,
            keys.interval_ms,
            now,
        )
        self._window = TimeKeySchedule.window_intervals(config.max_skew_ms, keys.interval_ms)
        self._offset = 0
        """Sender's interval minus ours: 0, or learnt from authenticated frames in the call's first seconds when the
        two ends started their media sessions further apart than the window (PROTOCOL.md, "Start offset")."""
        self._learn_until: float | None = None
        """None until the first frame opens; then the end of the start-offset learning phase."""
        self._root = bytearray(keys.recv_root)
        self._chains: dict[int, _RecvChain] = {0: _RecvChain(0, 0, bytes(keys.recv_chain), self._suite)}
        self._current = 0
        self._keys: collections.OrderedDict[tuple[int, int], _StepKey] = collections.OrderedDict()
        self._replay = ReplayWindow(config.replay_window)
        self._trial_tokens = config.max_epoch_trials_per_s
        self._trial_last = now
        self._trial_cache: tuple[bytes, _RecvChain, bytes] | None = None
        self._role = keys.role
        self._sas_seed = bytes(keys.sas_seed)
        self._peer_commitment = keys.peer_sas_commitment()
        self._peer_role = Role.ANSWERER if keys.role is Role.OFFERER else Role.OFFERER
        self._own_sas_secret = bytes(keys.sas_secret) if keys.sas_secret is not None else None
        self.sas: Sas | None = None
        self.sas_failed = False
        self.last_index = -1
        """Stream-wide counter of the last frame opened (monotonic per sender; for jitter buffers)."""
        self.peer_epoch = 0
        self.refused: collections.Counter[str] = collections.Counter()
        self.closed = False
        self._interval_s = keys.interval_ms / 1000.0
        self._opened = 0
        self._fast_n = 0
        self._fast_first_n = 0
        self._fast_end_n = 0  # fast path disarmed
        self._fast_step_end = False
        self._fast_interval = 0
        self._fast_word = 0
        self._fast_t_lo = 0.0
        self._fast_t_hi = 0.0
        self._fast_nonce = 0
        self._fast_nonce_len = 0
        self._fast_mk: bytearray | None = None
        self._fast_pf: hashlib._Hash | None = None
        self._new_aead = aead_factory(self._suite)
        self._fast_tk = b""
        self._fast_ext = b"\x00"  # never matches a real block (length 0 is invalid)
        self._fast_ext_end = HEADER_LEN + 1
        self._fast_key: _StepKey | None = None
        self._fast_chain: _RecvChain | None = None
        self._fast_aead: AeadCipher | None = None

    # --- chain bookkeeping -------------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        keys = self._keys
        cfg = self._config
        while keys:
            first = next(iter(keys.values()))
            if len(keys) <= cfg.max_stored_keys and now - first.created <= cfg.max_key_age_s:
                break
            keys.popitem(last=False)
            first.wipe()
        for epoch, chain in list(self._chains.items()):
            if chain.superseded_at is not None and now - chain.superseded_at > cfg.prev_chain_ttl_s:
                self._drop_chain(epoch)

    def _drop_chain(self, epoch: int) -> None:
        self._chains.pop(epoch).wipe()
        for key_id in [k for k in self._keys if k[0] == epoch]:
            self._keys.pop(key_id).wipe()

    def _trial_epoch(self, ann: RatchetKeyAnnouncement, now: float) -> tuple[_RecvChain, bytes]:
        """Derive (without committing) the chain the announcement claims for our next peer epoch."""
        cache_id = ann.public_key + ann.peer_epoch.to_bytes(2, "big") + ann.start_counter.to_bytes(4, "big")
        if self._trial_cache is not None and hmac.compare_digest(self._trial_cache[0], cache_id):
            return self._trial_cache[1], self._trial_cache[2]
        rate = self._config.max_epoch_trials_per_s
        self._trial_tokens = min(rate, self._trial_tokens + (now - self._trial_last) * rate)
        self._trial_last = now
        if self._trial_tokens < 1.0:
            raise UnknownEpoch("new-epoch trials rate-limited")
        self._trial_tokens -= 1.0
        own = self._state.own_keys.get(ann.peer_epoch)
        if own is None:
            raise UnknownEpoch(f"our ratchet key {ann.peer_epoch} is gone or was never announced")
        try:
            dh = own.exchange(X25519PublicKey.from_public_bytes(ann.public_key))
        except ValueError as exc:  # low-order point: all-zero shared secret
            raise ExtensionError("invalid ratchet public key") from exc
        new_root, chain_key = kdf_rk(bytes(self._root), dh)
        chain = _RecvChain(ann.epoch, ann.start_counter, chain_key, self._suite)
        if self._trial_cache is not None:  # an uncommitted trial (committing one clears the cache)
            self._trial_cache[1].wipe()
        self._trial_cache = (cache_id, chain, new_root)
        return chain, new_root

    def _find_chain(self, epoch_mod: int, ext: Extensions | None, n: int, now: float, pend: _Pending) -> _RecvChain:
        for epoch in sorted(self._chains, reverse=True):
            if epoch % EPOCH_MOD == epoch_mod:
                return self._chains[epoch]
        ann = ext.ratchet_key if ext is not None else None
        if ann is None or ann.epoch != self._current + 1:
            raise UnknownEpoch(f"epoch {epoch_mod} (mod {EPOCH_MOD}) not known; awaiting its ratchet key")
        current = self._chains.get(self._current)
        if current is not None and ann.start_counter <= current.start:
            raise MalformedFrame("new epoch starts before the current one")
        if ann.start_counter > n:
            raise MalformedFrame("frame counter precedes its epoch start")
        chain, new_root = self._trial_epoch(ann, now)
        pend.trial_chain = chain
        pend.new_root = new_root
        return chain

    def _step_key(self, chain: _RecvChain, step: int, now: float, pend: _Pending) -> _StepKey:
        if step == chain.next_step - 1 and chain.cur is not None:
            return chain.cur
        if step < chain.next_step:
            key = self._keys.get((chain.epoch, step))
            if key is None:
                raise ExpiredKey(f"message key for epoch {chain.epoch} step {step} already dropped")
            return key
        ahead = step - chain.next_step
        if ahead >= self._config.max_skip_steps:
            raise TooFarAhead(f"{ahead} chain steps ahead")
        # Derive only the steps no earlier frame (forged or not) made us derive: a forged frame's worst case is
        # then one AEAD attempt plus the steps a genuine frame further ahead would cost anyway (issue 14, item 3).
        cache = chain.ahead
        ck = cache[-1][0] if cache else bytes(chain.ck)
        for _ in range(len(cache), ahead + 1):
            mk, ck = kdf_ck(ck)
            cache.append((ck, _StepKey(mk, now)))
        pend.ahead_used = ahead + 1
        pend.new_ck, pend.step_key = cache[ahead]
        return pend.step_key

    # --- the entry point ---------------------------------------------------------------------------------

    def open(self, frame: bytes, now: float) -> bytes:
        n = self._fast_n
        # Fast path: the next in-order frame of the current step and interval, armed by _arm_fast_path.
        # Replay-window and key-usage bookkeeping for these frames is deferred to _fold (they are simply
        # "every counter from _fast_first_n to _fast_n - 1"), so this costs one compare and the AEAD.
        if n < self._fast_end_n and self._fast_t_lo <= now < self._fast_t_hi:
            word = self._fast_word | ((n & 0x1FFF) << 14)
            hdr = word.to_bytes(4, "big")
            if frame.startswith(hdr):
                aad_len = 4
            elif (
                frame[:4] == (word | 0x40000000).to_bytes(4, "big") and frame[4 : self._fast_ext_end] == self._fast_ext
            ):
                aad_len = self._fast_ext_end  # a repeat of an announcement we already applied
                hdr = frame[:aad_len]
            else:
                return self._open_counted(frame, now)
            if self._fast_pf is None:
                aead = self._fast_aead
            else:
                h = self._fast_pf.copy()
                h.update(n.to_bytes(8, "big"))
                aead = self._new_aead(h.digest())
            try:
                payload: bytes = aead.decrypt(  # type: ignore[union-attr]
                    (self._fast_nonce | n).to_bytes(self._fast_nonce_len, "big"), frame[aad_len:], hdr
                )
            except InvalidTag:
                return self._open_counted(frame, now)  # the slow path classifies the failure
            self._fast_n = n + 1
            self.last_index = n
            return payload
        if n == self._fast_end_n and self._fast_step_end and self._fast_t_lo <= now < self._fast_t_hi:
            return self._open_next_step(frame, n, now)
        return self._open_counted(frame, now)

    def _open_next_step(self, frame: bytes, n: int, now: float) -> bytes:
        """The in-order frame that opens the next chain step: derive it, authenticate, then commit."""
        word = self._fast_word | ((n & 0x1FFF) << 14)
        hdr = word.to_bytes(4, "big")
        if frame.startswith(hdr):
            aad_len = 4
        elif frame[:4] == (word | 0x40000000).to_bytes(4, "big") and frame[4 : self._fast_ext_end] == self._fast_ext:
            aad_len = self._fast_ext_end
            hdr = frame[:aad_len]
        else:
            return self._open_counted(frame, now)
        chain = self._fast_chain
        assert chain is not None
        cached = chain.ahead[0][1] if chain.ahead else None  # a forged frame may have derived this step already
        if cached is not None:
            mk, next_ck = bytes(cached.mk), chain.ahead[0][0]
        else:
            mk, next_ck = kdf_ck(bytes(chain.ck))
        tk = self._fast_tk
        aead = make_aead(self._suite, per_frame_key(mk, tk, n) if self._per_frame else frame_key(mk, tk))
        try:
            payload: bytes = aead.decrypt(
                (self._fast_nonce | n).to_bytes(self._fast_nonce_len, "big"), frame[aad_len:], hdr
            )
        except InvalidTag:
            return self._open_counted(frame, now)
        interval = self._fast_interval
        self._fold()
        key = cached if cached is not None else _StepKey(mk, now)
        key.created = now
        key.aeads[interval] = aead
        pend = _Pending()
        pend.new_ck = next_ck
        pend.ahead_used = 1 if cached is not None else 0
        step = chain.next_step
        self._commit(chain, step, key, pend, n, now)
        self.last_index = n
        self._opened += 1
        if key.used < self._fpk:
            self._arm_fast_path(chain, key, n, interval, aead, None)
        return payload

    def _fold(self) -> None:
        """Apply the bookkeeping of the frames the fast path opened, then disarm it."""
        run = self._fast_n - self._fast_first_n
        self._fast_end_n = 0
        self._fast_step_end = False
        if run <= 0:
            return
        replay = self._replay
        replay.bits = ((replay.bits << run) | ((1 << run) - 1)) & replay.mask
        replay.highest = self._fast_n - 1
        self._opened += run
        self._fast_first_n = self._fast_n
        key = self._fast_key
        if key is not None:
            key.used += run
            if key.used >= self._fpk:
                chain = self._fast_chain
                if chain is not None and chain.cur is key:
                    chain.cur = None
                key.wipe()

    @property
    def opened(self) -> int:
        return self._opened + (self._fast_n - self._fast_first_n if self._fast_end_n else 0)

    def _arm_fast_path(
        self,
        chain: _RecvChain,
        key: _StepKey,
        n: int,
        interval: int,
        aead: AeadCipher,
        ext_block: bytes | None,
        *,
        carries_reveal: bool = False,
    ) -> None:
        if n != self._replay.highest or chain.epoch != self._current or chain.cur is not key:
            return
        step = (n - chain.start) // self._fpk
        step_end = chain.start + (step + 1) * self._fpk
        wrap = n - (n % COUNTER_MOD) + COUNTER_MOD  # the truncated counter wraps: let the slow path reconstruct
        self._fast_n = self._fast_first_n = n + 1
        self._fast_end_n = min(step_end, wrap)
        self._fast_step_end = step_end <= wrap
        self._fast_interval = interval
        self._fast_word = (
            (int(self._suite) << SUITE_SHIFT)
            | ((chain.epoch % EPOCH_MOD) << EPOCH_SHIFT)
            | ((interval & INTERVAL_MASK) << INTERVAL_SHIFT)
            | chain.kcvs[interval]
        )
        origin = self._tks.origin
        self._fast_t_lo = origin + (interval - self._offset - self._window) * self._interval_s
        self._fast_t_hi = origin + (interval - self._offset + self._window + 1) * self._interval_s
        self._fast_nonce = int.from_bytes(chain.prefix, "big") << 64
        self._fast_nonce_len = len(chain.prefix) + 8
        # A repeated block skips _apply_extensions: cache one with a SAS reveal only once the reveal is settled.
        if ext_block is not None and (not carries_reveal or self.sas is not None or self.sas_failed):
            self._fast_ext = bytes([len(ext_block)]) + ext_block
            self._fast_ext_end = HEADER_LEN + len(self._fast_ext)
        self._fast_key = key
        self._fast_chain = chain
        self._fast_aead = aead
        self._fast_mk = key.mk if self._per_frame else None
        self._fast_tk = self._tks.key(interval)
        self._fast_pf = per_frame_hash(key.mk, self._fast_tk) if self._per_frame else None

    def open_event(self, frame: bytes, now: float) -> bytes:
        """Open a frame that arrived as a telephone event: only a frame sealed by ``seal_event`` opens here
        (an audio frame is WrongContent), and ``open`` refuses event frames the same way."""
        return self._open_counted(frame, now, CONTENT_TELEPHONE_EVENT)

    def _open_counted(self, frame: bytes, now: float, content: int = CONTENT_AUDIO) -> bytes:
        try:
            return self._open(frame, now, content)
        except Exception as exc:
            reason = getattr(exc, "reason", "internal")
            self.refused[reason] += 1
            raise

    def _open(self, frame: bytes, now: float, content: int = CONTENT_AUDIO) -> bytes:
        self._fold()
        if self.closed:
            raise UnknownEpoch("session closed")
        word, ext_block, aad_len = split_frame(frame)
        if word >> SUITE_SHIFT != self._suite:
            raise WrongSuite("frame suite differs from the negotiated one")
        if len(frame) - aad_len < self._tag_len:
            raise MalformedFrame("shorter than its authentication tag")
        ext = parse_extensions(ext_block) if ext_block is not None else None
        # The content type is authenticated (it is in the AAD), so checking it before decryption is sound: a
        # forged or stripped type fails the tag anyway, and a relabelled frame costs no AEAD call.
        got = ext.content_type if ext is not None and ext.content_type is not None else CONTENT_AUDIO
        if got != content:
            raise WrongContent(f"content type {got} where {content} was expected")
        epoch_mod = (word >> EPOCH_SHIFT) & (EPOCH_MOD - 1)
        if ext is not None and ext.ratchet_key is not None and ext.ratchet_key.epoch % EPOCH_MOD != epoch_mod:
            raise MalformedFrame("ratchet-key extension names another epoch")
        n = nearest((word >> COUNTER_SHIFT) & (COUNTER_MOD - 1), COUNTER_MOD, max(self._replay.highest, 0))
        if n < 0:
            n += COUNTER_MOD
        verdict = self._replay.check(n)
        if verdict is not None:
            raise ReplayedFrame(verdict)
        raw_i = self._tks.interval_at(now)
        local_i = raw_i + self._offset
        interval = nearest((word >> INTERVAL_SHIFT) & INTERVAL_MASK, INTERVAL_MOD, local_i)
        skew: FrameError | None = None
        if interval < local_i - self._window:
            skew = StaleFrame(f"interval {interval} is {local_i - interval} behind ours")
        elif interval > local_i + self._window:
            skew = FutureFrame(f"interval {interval} is {interval - local_i} ahead of ours")
        args = (frame, now, word, ext, ext_block, aad_len, n, epoch_mod, interval, got)
        if skew is None:
            return self._open_in_window(*args)
        # The ends start their media sessions at different moments (the 200 OK's transit; seconds when it is
        # retransmitted), and the first frames opened may be old ones buffered before our keys existed. So until
        # START_LEARNING_S after the first open, a frame outside the window that authenticates moves the reference
        # to its interval. Then the window is strict around it.
        if self._learn_until is not None and now >= self._learn_until:
            raise skew
        before = self._offset
        self._offset = interval - raw_i  # set first: the fast path armed on success is placed with it
        try:
            return self._open_in_window(*args)
        except FrameError:
            self._offset = before
            raise skew from None

    def _open_in_window(
        self,
        frame: bytes,
        now: float,
        word: int,
        ext: Extensions | None,
        ext_block: bytes | None,
        aad_len: int,
        n: int,
        epoch_mod: int,
        interval: int,
        got: int,
    ) -> bytes:
        """The rest of ``_open`` once the frame's interval is accepted: keys, AEAD, then commit."""
        self._expire(now)
        pend = _Pending()
        chain = self._find_chain(epoch_mod, ext, n, now, pend)
        rel = n - chain.start
        if rel < 0:
            raise MalformedFrame("frame counter precedes its epoch start")
        step = rel // self._fpk
        key = self._step_key(chain, step, now, pend)
        tk = self._tks.key(interval)
        kcv = chain.kcvs.get(interval)
        if kcv is None:
            kcv = key_check_value(chain.ident, tk)
            if len(chain.kcvs) > 2 * MAX_WINDOW_INTERVALS:
                chain.kcvs.clear()
            chain.kcvs[interval] = kcv
        if self._per_frame:
            aead = make_aead(self._suite, per_frame_key(key.mk, tk, n))
        else:
            cached = key.aeads.get(interval)
            if cached is None:
                cached = make_aead(self._suite, frame_key(key.mk, tk))
                key.aeads[interval] = cached
            aead = cached
        try:
            payload = aead.decrypt(chain.prefix + n.to_bytes(8, "big"), frame[aad_len:], frame[:aad_len])
        except InvalidTag:
            if (word & 0xFF) != kcv:
                raise KeyDesync(f"key-check value mismatch in epoch {chain.epoch}") from None
            raise TamperedFrame("authentication tag mismatch") from None
        self._commit(chain, step, key, pend, n, now)
        if self._learn_until is None:
            self._learn_until = now + START_LEARNING_S
        if ext is not None:
            self._apply_extensions(ext, chain, now)
        self.last_index = n
        self._opened += 1
        if key.used < self._fpk:
            # Only audio blocks are cached as repeatable: a cached event block would let the audio fast path
            # open an event frame.
            block = ext_block if got == CONTENT_AUDIO else None
            reveal = ext is not None and ext.sas_reveal is not None
            self._arm_fast_path(chain, key, n, interval, aead, block, carries_reveal=reveal)
        return payload

    def _commit(self, chain: _RecvChain, step: int, key: _StepKey, pend: _Pending, n: int, now: float) -> None:
        self._replay.update(n)
        if pend.trial_chain is not None:
            assert pend.new_root is not None
            old = self._chains.get(self._current)
            if old is not None:
                old.superseded_at = now
            _wipe(self._root)
            self._root = bytearray(pend.new_root)
            self._chains[chain.epoch] = chain
            self._current = chain.epoch
            self._trial_cache = None
            while len(self._chains) > self._config.max_recv_chains:
                self._drop_chain(min(self._chains))
            self.peer_epoch = chain.epoch
            self._state.events.append(PeerRatchetStep(chain.epoch, now))
        if pend.new_ck is not None:
            if chain.cur is not None:  # the previous newest step becomes an ordinary retained key
                chain.cur.created = now
                self._keys[(chain.epoch, chain.next_step - 1)] = chain.cur
            if pend.ahead_used == 0:  # derived outside the look-ahead: it no longer starts at the next step
                for _, stale in chain.ahead:
                    stale.wipe()
                chain.ahead.clear()
            used = chain.ahead[: pend.ahead_used]
            del chain.ahead[: pend.ahead_used]
            for s, (_, skipped) in enumerate(used[:-1], start=chain.next_step):
                skipped.created = now  # the age bound runs from when the step became a skipped key
                self._keys[(chain.epoch, s)] = skipped
            _wipe(chain.ck)
            chain.ck = bytearray(pend.new_ck)
            chain.next_step = step + 1
            chain.cur = key
            while len(self._keys) > self._config.max_stored_keys:
                self._keys.popitem(last=False)[1].wipe()
        key.used += 1
        if key.used >= self._fpk:  # every frame of this step has opened: the key has no further use
            if chain.cur is key:
                chain.cur = None
            else:
                self._keys.pop((chain.epoch, step), None)
            key.wipe()

    def _apply_extensions(self, ext: Extensions, chain: _RecvChain, now: float) -> None:
        if ext.ratchet_key is not None:
            self._state.learn_peer_key(ext.ratchet_key.epoch, ext.ratchet_key.public_key)
        if ext.sas_reveal is not None and self.sas is None and not self.sas_failed:
            self._apply_sas_reveal(ext.sas_reveal)

    def _apply_sas_reveal(self, peer_secret: bytes) -> None:
        """The peer's authenticated reveal (the direction says whose: ``r`` at the answerer, ``s`` at the
        offerer): check it against the peer's signed commitment, then derive the SAS from both contributions."""
        own = self._own_sas_secret
        if own is None or not verify_sas_reveal(self._peer_commitment, peer_secret, self._peer_role):
            self.sas_failed = True
            self._state.events.append(SasCommitmentFailed())
            return
        r, s = (own, peer_secret) if self._role is Role.OFFERER else (peer_secret, own)
        self.sas = compute_sas(self._sas_seed, r, s)
        self._state.events.append(SasReady(self.sas))

    def close(self) -> None:
        self._fold()
        self.closed = True
        self._fast_key = self._fast_aead = None
        _wipe(self._root)
        if self._trial_cache is not None:
            self._trial_cache[1].wipe()
            self._trial_cache = None
        for epoch in list(self._chains):
            self._drop_chain(epoch)
        for key in self._keys.values():
            key.wipe()
        self._keys.clear()
