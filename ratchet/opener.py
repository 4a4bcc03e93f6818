"""The peer's direction of one call's media ratchet: ``FrameOpener`` opens each frame and changes nothing until
it authenticates (docs/PROTOCOL.md §B.5): counter reconstruction (with the time-estimate candidate after a long
outage), the pending next epoch derived only from an authenticated announcement, the time-bounded chain
look-ahead, retained step keys, replay and the interval window; then it applies the frame's control TLVs.
Split from ``session``."""

from __future__ import annotations

import collections
import math

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from ratchet.chain import kdf_ck
from ratchet.errors import (
    ExpiredKey,
    FrameError,
    FutureFrame,
    KeyDesync,
    MalformedFrame,
    PqChunkError,
    ReplayedFrame,
    StaleFrame,
    TamperedFrame,
    TooFarAhead,
    UnknownEpoch,
    UnknownPqExchange,
    WrongSuite,
)
from ratchet.events import (
    Degradation,
    PeerNotice,
    PeerRatchetStep,
    SasCommitmentFailed,
    SasReady,
    TelephoneEventReceived,
)
from ratchet.frame import (
    COUNTER_MOD,
    COUNTER_SHIFT,
    EMPTY_CONTROL,
    EPOCH_MOD,
    EPOCH_SHIFT,
    HEADER_LEN,
    INTERVAL_MASK,
    INTERVAL_SHIFT,
    KEY_PREFIX_LEN,
    NO_PEER_EPOCH,
    SUITE_SHIFT,
    TAG_LEN,
    AeadCipher,
    Control,
    KeyAck,
    RatchetKeyAnnouncement,
    chain_id,
    frame_key,
    key_check_value,
    make_aead,
    nearest,
    nonce_prefix,
    parse_control,
    per_frame_key,
    split_plaintext,
)
from ratchet.kdf import kdf_rk, kdf_rk_pq
from ratchet.media_state import MediaConfig, _RatchetState, _wipe
from ratchet.params import FrameSuite, Role, SessionKeys
from ratchet.replay import ReplayWindow
from ratchet.sas import Sas, compute_sas, verify_sas_reveal
from ratchet.timekeys import INTERVAL_MOD, MAX_CACHED_KEYS, TimeKeySchedule

START_LEARNING_S = 5.0
"""After the first frame opens, how long a frame ahead of the skew window may still move the interval reference
(if it authenticates): covers the early frames buffered before our keys existed and a slow call setup."""
ESTIMATE_AFTER_S = 150.0
"""After this long without an authenticated frame the counter may have moved more than half the 14-bit range:
the receiver then also tries the candidate nearest to ``last + elapsed / frame_s`` (§B.3)."""


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


class _PendingEpoch:
    """The peer's next epoch: derived from its authenticated announcement, acked, not yet seen in use."""

    __slots__ = ("chain", "new_root", "pq", "public")

    def __init__(self, public: bytes, chain: _RecvChain, new_root: bytes, pq: int | None = None) -> None:
        self.public = public
        self.chain = chain
        self.new_root = bytearray(new_root)
        self.pq = pq
        """The peer's ML-KEM exchange this epoch mixes (RATCHET_KEY_PQ, §B.12), or None."""

    def wipe(self) -> None:
        self.chain.wipe()
        _wipe(self.new_root)


class _Fast:
    """The next in-order frame of the current chain step and interval, as the general path left it: its expected
    header word (without the counter), the AEAD, and the counter and time bounds within which that holds. The frame
    after the step's last, or the first of the sender's next interval, goes to ``FrameOpener._open_next``."""

    __slots__ = (
        "aead",
        "chain",
        "end_n",
        "interval",
        "key",
        "n",
        "nonce_base",
        "nonce_len",
        "step",
        "t_hi",
        "t_lo",
        "word",
    )

    def __init__(
        self, chain: _RecvChain, key: _StepKey, step: int, n: int, end_n: int, word: int, aead: AeadCipher
    ) -> None:
        self.chain = chain
        self.key = key
        self.step = step
        self.n = n
        self.end_n = end_n
        self.word = word
        self.aead = aead
        self.nonce_base = int.from_bytes(chain.prefix, "big") << 64
        self.nonce_len = len(chain.prefix) + 8
        self.t_lo = 0.0
        self.t_hi = 0.0
        self.interval = 0


_NEXT_MASK = 0xFFFFFFFF & ~((INTERVAL_MASK << INTERVAL_SHIFT) | 0xFF)
"""Header bits the next in-order frame shares with the current one even when it starts a new interval: suite,
epoch and counter (the interval index and the KCV may change)."""


class _Pending:
    """What one frame would change, applied only after it authenticates."""

    __slots__ = ("ahead_used", "new_ck")

    def __init__(self) -> None:
        self.ahead_used = 0
        """How many look-ahead entries the frame's step consumes (steps next_step .. next_step + ahead_used - 1)."""
        self.new_ck: bytes | None = None


class FrameOpener:
    """Opens the peer's frames. ``open(frame, now)`` returns the content or raises a FrameError subclass."""

    __slots__ = (
        "_chains",
        "_config",
        "_current",
        "_fast",
        "_fpk",
        "_frame_s",
        "_interval_s",
        "_keys",
        "_last_auth_at",
        "_learn_until",
        "_notices_seen",
        "_offset",
        "_own_sas_secret",
        "_peer_commitment",
        "_peer_role",
        "_pending",
        "_per_frame",
        "_replay",
        "_role",
        "_root",
        "_sas_seed",
        "_state",
        "_suite",
        "_tag_len",
        "_tks",
        "_window",
        "_window_keys",
        "bad_announcements",
        "closed",
        "derivations",
        "dh_computations",
        "last_control",
        "last_index",
        "opened",
        "peer_epoch",
        "peer_steps",
        "refused",
        "sas",
        "sas_failed",
    )
    # Slots, not a __dict__: 1.2 KB less per object (a call has one of each per ratchet session).

    fast_path = True
    """False: every frame takes the general path (the equivalence tests open one stream both ways)."""

    def __init__(self, keys: SessionKeys, state: _RatchetState, config: MediaConfig, now: float) -> None:
        params = keys.recv_params
        self._suite: FrameSuite = params.frame_suite
        self._tag_len = TAG_LEN[self._suite]
        self._fpk = params.frames_per_key
        self._per_frame = params.per_frame_keys
        self._config = config
        self._state = state
        self._window = TimeKeySchedule.window_intervals(config.max_skew_ms, keys.interval_ms)
        self._window_keys = TimeKeySchedule.window_capacity(self._window)
        """Time keys (and KCVs per chain) kept once start-offset learning is over; until then every index may be
        named, and the cache keeps one key per index so that a forged-frame flood derives each at most once (and
        never fewer than the window needs: a window wider than 16 intervals keeps its 4w + 1 throughout)."""
        self._tks = TimeKeySchedule(
            keys.recv_time_secret,
            keys.recv_stream_salt,
            keys.call_id,
            keys.recv_direction,
            keys.interval_ms,
            now,
            capacity=max(MAX_CACHED_KEYS, self._window_keys),
        )
        self._offset = 0
        """Sender's interval minus ours: 0, or learnt from authenticated frames in the call's first seconds when the
        two ends started their media sessions further apart than the window (PROTOCOL.md, "Start offset")."""
        self._learn_until: float | None = None
        """None until the first frame opens; then the end of the start-offset learning phase."""
        self._root = bytearray(keys.recv_root)
        self._chains: dict[int, _RecvChain] = {0: _RecvChain(0, 0, bytes(keys.recv_chain), self._suite)}
        self._current = 0
        self._pending: _PendingEpoch | None = None
        self._keys: collections.OrderedDict[tuple[int, int], _StepKey] = collections.OrderedDict()
        self._replay = ReplayWindow(config.replay_window)
        self._role = keys.role
        self._sas_seed = bytes(keys.sas_seed)
        self._peer_commitment = keys.peer_sas_commitment()
        self._peer_role = Role.ANSWERER if keys.role is Role.OFFERER else Role.OFFERER
        self._own_sas_secret = bytes(keys.sas_secret) if keys.sas_secret is not None else None
        self._frame_s = config.frame_ms / 1000.0
        self._interval_s = keys.interval_ms / 1000.0
        self._last_auth_at = now
        self.sas: Sas | None = None
        self.sas_failed = False
        self._notices_seen: set[int] = set()
        self.last_index = -1
        """Stream-wide counter of the last frame opened (monotonic per sender; for jitter buffers)."""
        self.peer_epoch = 0
        self.peer_steps = 0
        self.refused: collections.Counter[str] = collections.Counter()
        self.opened = 0
        self.last_control: Control = EMPTY_CONTROL
        """The control TLVs of the last frame that opened (what travelled inside it; for tests and diagnostics)."""
        self.bad_announcements = 0
        """Authenticated announcements whose key was unusable (a low-order point): a sender bug, never acked."""
        self.derivations = 0
        """KDF_CK computations so far (the work bound the tests check)."""
        self.dh_computations = 0
        """X25519 computations so far: one per distinct authenticated announcement, never for a refused frame."""
        self.closed = False
        self._fast: _Fast | None = None

    # --- chain bookkeeping -------------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        keys = self._keys
        cfg = self._config
        learn_until = self._learn_until
        if learn_until is not None and now >= learn_until and self._tks.capacity > self._window_keys:
            self._tks.shrink(self._window_keys)  # the window is fixed from now on (see _open)
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

    def _find_chain(self, epoch_mod: int) -> tuple[_RecvChain, bool]:
        """The chain a frame's E selects: the pending next epoch, else the newest retained epoch ≡ E (mod 8)."""
        pending = self._pending
        if pending is not None and pending.chain.epoch % EPOCH_MOD == epoch_mod:
            return pending.chain, True
        for epoch in sorted(self._chains, reverse=True):
            if epoch % EPOCH_MOD == epoch_mod:
                return self._chains[epoch], False
        raise UnknownEpoch(f"epoch {epoch_mod} (mod {EPOCH_MOD}) not known; awaiting its ratchet key")

    def _step_limit(self, now: float) -> int:
        """Forward chain steps one frame may cost: max_skip_steps, or more after a long silence (time-bounded)."""
        elapsed = max(0.0, now - self._last_auth_at)
        return max(self._config.max_skip_steps, math.ceil(elapsed / self._frame_s / self._fpk) + 2)

    def _step_key(self, chain: _RecvChain, step: int, now: float, pend: _Pending) -> _StepKey:
        if step == chain.next_step - 1 and chain.cur is not None:
            return chain.cur
        if step < chain.next_step:
            key = self._keys.get((chain.epoch, step))
            if key is None:
                raise ExpiredKey(f"message key for epoch {chain.epoch} step {step} already dropped")
            return key
        ahead = step - chain.next_step
        if ahead >= self._step_limit(now):
            raise TooFarAhead(f"{ahead} chain steps ahead")
        # Derive only the steps no earlier frame (forged or not) made us derive: a forged frame's worst case is
        # then one AEAD attempt plus the steps a genuine frame further ahead would cost anyway (issue 14, item 3).
        cache = chain.ahead
        ck = cache[-1][0] if cache else bytes(chain.ck)
        for _ in range(len(cache), ahead + 1):
            mk, ck = kdf_ck(ck)
            self.derivations += 1
            cache.append((ck, _StepKey(mk, now)))
        pend.ahead_used = ahead + 1
        pend.new_ck, key = cache[ahead]
        return key

    # --- the entry point ---------------------------------------------------------------------------------

    def open(self, frame: bytes, now: float) -> bytes:
        """The frame's content (control and padding stripped), or a FrameError; nothing changes unless the frame
        authenticates and its control block parses."""
        fast = self._fast
        # Fast path: the next in-order frame of the current step and interval (armed by the general path). The
        # expected header pins suite, epoch, counter, interval and KCV, so only the AEAD is left to do; anything
        # else (and any failure) takes the general path, which classifies it. The next in-order frame that starts
        # the next chain step or interval (its header differs only in the interval index and KCV, if at all) goes
        # to ``_open_next``, which takes that step or interval as the general path would.
        if fast is not None and fast.t_lo <= now < fast.t_hi:
            n = fast.n
            word = int.from_bytes(hdr := frame[:4], "big")
            expect = fast.word | ((n & 0x3FFF) << 14)
            if n < fast.end_n and word == expect:
                try:
                    plaintext = fast.aead.decrypt((fast.nonce_base | n).to_bytes(fast.nonce_len, "big"), frame[4:], hdr)
                except InvalidTag:
                    pass
                else:
                    ctl_len = plaintext[0] if plaintext else 255
                    control: Control | None = EMPTY_CONTROL
                    if ctl_len >= len(plaintext):
                        control = None  # malformed: the general path refuses it
                    elif ctl_len and not (plaintext[1] == 0 and (ctl_len == 1 or plaintext[2] + 2 == ctl_len)):
                        # Control other than one PAD TLV (what padding() writes): parsed here, applied after the
                        # commit exactly as the general path does, without a second AEAD.
                        try:
                            control = parse_control(plaintext[1 : 1 + ctl_len])
                        except MalformedFrame:
                            control = None
                    if control is not None:
                        # _commit for the next in-order frame of the newest step, inlined: the replay window
                        # moves by one (the fast path is armed at its highest), the step key counts one more use.
                        replay = self._replay
                        replay.bits = ((replay.bits << 1) | 1) & replay.mask
                        replay.highest = n
                        key = fast.key
                        key.used += 1
                        if key.used >= self._fpk:  # every frame of the step opened: the key has no further use
                            fast.chain.cur = None
                            key.wipe()
                        fast.n = n + 1
                        self._last_auth_at = now
                        self.last_control = control
                        if control is not EMPTY_CONTROL and control != EMPTY_CONTROL:
                            self._state.version += 1  # as in _open_at: the sealer's fast path re-checks
                            self._apply_control(control, fast.chain, now)
                        self.last_index = n
                        self.opened += 1
                        return plaintext[1 + ctl_len :]
            elif (word ^ expect) & _NEXT_MASK == 0:
                content = self._open_next(frame, now, fast, word)
                if content is not None:
                    return content
        try:
            return self._open(frame, now)
        except Exception as exc:
            reason = getattr(exc, "reason", "internal")
            self.refused[reason] += 1
            raise

    def _open_next(self, frame: bytes, now: float, fast: _Fast, word: int) -> bytes | None:
        """The next in-order frame when it starts the next chain step or the sender's next interval (or both),
        opened as the general path would open it (the same expiry, step key or derivation into the look-ahead,
        KCV and AEAD caches, commit, control and re-arming) without its header parsing and chain search. None,
        with nothing changed but those caches (which the general path then finds filled exactly as it would fill
        them): not such a frame, or it did not open; the general path takes it and classifies it."""
        n = fast.n
        if n > fast.end_n or len(frame) < HEADER_LEN + 1 + self._tag_len:
            return None  # the general path refuses a short frame before it derives anything
        interval = fast.interval
        if (word >> INTERVAL_SHIFT) & INTERVAL_MASK != interval & INTERVAL_MASK:
            interval += 1
            if (word >> INTERVAL_SHIFT) & INTERVAL_MASK != interval & INTERVAL_MASK:
                return None
            local_i = self._tks.interval_at(now) + self._offset
            if not local_i - self._window <= interval <= local_i + self._window:
                return None  # the general path refuses it, or learns an offset from it
        chain = fast.chain
        if chain.epoch != self._current or self._per_frame or self._replay.check(n) is not None:
            return None
        self._expire(now)
        step = (n - chain.start) // self._fpk
        pend = _Pending()
        try:
            key = self._step_key(chain, step, now, pend)
        except FrameError:
            return None
        tk = self._tks.key(interval)
        self._kcv(chain, interval, tk)
        aead = key.aeads.get(interval)
        if aead is None:
            aead = key.aeads[interval] = make_aead(self._suite, frame_key(key.mk, tk))
        try:
            plaintext = aead.decrypt((fast.nonce_base | n).to_bytes(fast.nonce_len, "big"), frame[4:], frame[:4])
            block, content = split_plaintext(plaintext)
            control = parse_control(block)
        except (InvalidTag, MalformedFrame):
            return None
        self._fast = None
        self._commit(chain, step, key, pend, n, now)
        if control != EMPTY_CONTROL:
            self._state.version += 1  # as in _open_at
        self._last_auth_at = now
        self.last_control = control
        self._apply_control(control, chain, now)
        self.last_index = n
        self.opened += 1
        if key.used < self._fpk:
            self._arm_fast(chain, key, step, n, interval, aead, word)
        return content

    def _kcv(self, chain: _RecvChain, interval: int, tk: bytes) -> int:
        """The KCV of ``chain`` in ``interval``, cached per chain for the intervals the time keys are cached for."""
        kcv = chain.kcvs.get(interval)
        if kcv is None:
            kcv = key_check_value(chain.ident, tk)
            if len(chain.kcvs) >= self._tks.capacity:  # first in, first out, as the time keys
                del chain.kcvs[next(iter(chain.kcvs))]
            chain.kcvs[interval] = kcv
        return kcv

    def _open(self, frame: bytes, now: float) -> bytes:
        self._fast = None  # re-armed by a frame that opens in order
        if self.closed:
            raise UnknownEpoch("session closed")
        if len(frame) < HEADER_LEN + 1 + self._tag_len:
            raise MalformedFrame("shorter than header, control length and tag")
        word = int.from_bytes(frame[:HEADER_LEN], "big")
        if word >> SUITE_SHIFT != self._suite:
            raise WrongSuite("frame suite differs from the negotiated one")
        epoch_mod = (word >> EPOCH_SHIFT) & (EPOCH_MOD - 1)
        counter = (word >> COUNTER_SHIFT) & (COUNTER_MOD - 1)
        raw_i = self._tks.interval_at(now)
        local_i = raw_i + self._offset
        interval = nearest((word >> INTERVAL_SHIFT) & INTERVAL_MASK, INTERVAL_MOD, local_i)
        skew: FrameError | None = None
        if interval < local_i - self._window:
            skew = StaleFrame(f"interval {interval} is {local_i - interval} behind ours")
        elif interval > local_i + self._window:
            skew = FutureFrame(f"interval {interval} is {interval - local_i} ahead of ours")
        if skew is None:
            return self._open_candidates(frame, now, word, counter, epoch_mod, interval)
        # The ends start their media sessions at different moments (the 200 OK's transit; seconds when it is
        # retransmitted), and the first frames opened may be old ones buffered before our keys existed. So until
        # START_LEARNING_S after the first open, a frame outside the window that authenticates moves the reference
        # to its interval. Then the window is strict around it.
        if self._learn_until is not None and now >= self._learn_until:
            raise skew
        before = self._offset
        self._offset = interval - raw_i
        try:
            return self._open_candidates(frame, now, word, counter, epoch_mod, interval)
        except FrameError:
            self._offset = before
            raise skew from None

    def _open_candidates(
        self, frame: bytes, now: float, word: int, counter: int, epoch_mod: int, interval: int
    ) -> bytes:
        highest = max(self._replay.highest, 0)
        n = nearest(counter, COUNTER_MOD, highest)
        if n < 0:
            n += COUNTER_MOD
        elapsed = now - self._last_auth_at
        if elapsed <= ESTIMATE_AFTER_S:
            return self._open_at(frame, now, word, n, epoch_mod, interval)
        # Long silence: the counter may have moved past half the range. Second candidate (and AEAD) from time.
        estimate = nearest(counter, COUNTER_MOD, highest + round(elapsed / self._frame_s))
        try:
            return self._open_at(frame, now, word, n, epoch_mod, interval)
        except FrameError:
            if estimate == n or estimate < 0:
                raise
            return self._open_at(frame, now, word, estimate, epoch_mod, interval)

    def _open_at(self, frame: bytes, now: float, word: int, n: int, epoch_mod: int, interval: int) -> bytes:
        """Open the frame as counter ``n``: keys, AEAD, control parse, then commit."""
        verdict = self._replay.check(n)
        if verdict is not None:
            raise ReplayedFrame(verdict)
        self._expire(now)
        chain, is_pending = self._find_chain(epoch_mod)
        rel = n - chain.start
        if rel < 0:
            raise MalformedFrame("frame counter precedes its epoch start")
        step = rel // self._fpk
        pend = _Pending()
        key = self._step_key(chain, step, now, pend)
        tk = self._tks.key(interval)
        kcv = self._kcv(chain, interval, tk)
        if self._per_frame:
            aead = make_aead(self._suite, per_frame_key(key.mk, tk, n))
        else:
            cached = key.aeads.get(interval)
            if cached is None:
                cached = make_aead(self._suite, frame_key(key.mk, tk))
                key.aeads[interval] = cached
            aead = cached
        hdr = frame[:HEADER_LEN]
        try:
            plaintext = aead.decrypt(chain.prefix + n.to_bytes(8, "big"), frame[HEADER_LEN:], hdr)
        except InvalidTag:
            if (word & 0xFF) != kcv:
                raise KeyDesync(f"key-check value mismatch in epoch {chain.epoch}") from None
            raise TamperedFrame("authentication tag mismatch") from None
        # Authenticated. A malformed control block is a sender bug: refuse the frame before anything commits.
        block, content = split_plaintext(plaintext)
        control = parse_control(block)
        self._commit(chain, step, key, pend, n, now)
        if is_pending or control != EMPTY_CONTROL:
            self._state.version += 1  # what the sealer's fast path assumed may change (acks, peer key, epoch)
        if is_pending:
            self._promote(now)
        if self._learn_until is None:
            self._learn_until = now + START_LEARNING_S
        self._last_auth_at = now
        self.last_control = control
        self._apply_control(control, chain, now)
        self.last_index = n
        self.opened += 1
        if not is_pending and not self._per_frame and chain.epoch == self._current and key.used < self._fpk:
            self._arm_fast(chain, key, step, n, interval, aead, word)
        return content

    def _arm_fast(
        self, chain: _RecvChain, key: _StepKey, step: int, n: int, interval: int, aead: AeadCipher, word: int
    ) -> None:
        if n != self._replay.highest or chain.cur is not key or not self.fast_path:
            return
        fast = _Fast(chain, key, step, n + 1, chain.start + (step + 1) * self._fpk, word & ~(0x3FFF << 14), aead)
        # The interval stays acceptable while our own interval is within the window of it.
        origin, size = self._tks.origin, self._interval_s
        fast.t_lo = origin + (interval - self._offset - self._window) * size
        fast.t_hi = origin + (interval - self._offset + self._window + 1) * size
        if self._tks.capacity > self._window_keys and self._learn_until is not None:
            fast.t_hi = min(fast.t_hi, self._learn_until)  # the frame after it shrinks the time keys (_expire)
        fast.interval = interval
        self._fast = fast

    def _commit(self, chain: _RecvChain, step: int, key: _StepKey, pend: _Pending, n: int, now: float) -> None:
        self._replay.update(n)
        if pend.new_ck is not None:
            if chain.cur is not None:  # the previous newest step becomes an ordinary retained key
                chain.cur.created = now
                self._keys[(chain.epoch, chain.next_step - 1)] = chain.cur
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

    def _promote(self, now: float) -> None:
        """The first authenticated frame of the pending epoch: it becomes current (the peer's DH step)."""
        pending = self._pending
        assert pending is not None
        chain = pending.chain
        old = self._chains.get(self._current)
        if old is not None:
            old.superseded_at = now
        _wipe(self._root)
        self._root = bytearray(pending.new_root)
        _wipe(pending.new_root)
        self._pending = None
        self._chains[chain.epoch] = chain
        self._current = chain.epoch
        # E is 3 bits: keep only epochs it still tells apart from the next one.
        limit = min(self._config.max_recv_chains, EPOCH_MOD - 2)
        while len(self._chains) > limit:
            self._drop_chain(min(self._chains))
        self.peer_epoch = chain.epoch
        self.peer_steps += 1
        state = self._state
        state.learn_peer_key(chain.epoch, pending.public)
        state.last_peer_step_at = now
        if state.ack is not None and state.ack.epoch <= chain.epoch:
            state.ack = None
        state.events.append(PeerRatchetStep(chain.epoch, now))
        state.restore(Degradation.NO_PEER_STEP, now)
        if pending.pq is not None and state.pq is not None:
            state.pq.peer_switched(pending.pq, chain.epoch, now)

    # --- control TLVs --------------------------------------------------------------------------------------

    def _apply_control(self, control: Control, chain: _RecvChain, now: float) -> None:
        if control.ratchet_key is not None:
            self._apply_announcement(control.ratchet_key, chain)
        if control.key_ack is not None:
            acks = self._state.peer_acks
            acks[control.key_ack.epoch] = control.key_ack.prefix
            if len(acks) > 8:  # an honest peer acks our newest one or two keys: bound what a hostile one can store
                del acks[min(acks)]
        if control.sas_reveal is not None and self.sas is None and not self.sas_failed:
            self._apply_sas_reveal(control.sas_reveal)
        if control.telephone_event is not None:
            self._state.events.append(TelephoneEventReceived(control.telephone_event))
        if control.notice is not None and control.notice not in self._notices_seen:
            self._notices_seen.add(control.notice)  # at most 255 codes
            self._state.events.append(PeerNotice(control.notice))
        pq = self._state.pq
        if control.pq_chunk is not None and pq is not None:
            try:
                pq.receive(control.pq_chunk, now)
            except PqChunkError as exc:  # the frame authenticated and its audio plays; the chunk is dropped
                pq.refused[exc.reason] += 1

    def _apply_announcement(self, ann: RatchetKeyAnnouncement, chain: _RecvChain) -> None:
        """An authenticated RATCHET_KEY: ack the initial key; derive (once per distinct key) and ack the next."""
        state = self._state
        ack = KeyAck(ann.epoch, ann.public_key[:KEY_PREFIX_LEN])
        if ann.epoch == 0:
            if chain.epoch == 0 and ann.peer_epoch == NO_PEER_EPOCH and ann.start_counter == 0:
                state.learn_peer_key(0, ann.public_key)
                state.arm_ack(ack)
            return
        if ann.epoch != self._current + 1 or chain.epoch != self._current:
            return  # a late repeat of an announcement already in use, or from a superseded epoch
        pending = self._pending
        if pending is not None and pending.chain.epoch == ann.epoch and pending.public == ann.public_key:
            if pending.chain.start == ann.start_counter:
                state.arm_ack(ack)  # a repeat: costs nothing, re-arms the ack
            return
        own = state.own_keys.get(ann.peer_epoch)
        if own is None or ann.start_counter < chain.start:
            return  # our key is gone (the peer re-announces with a newer one) or nonsense: no ack
        kem: bytes | None = None
        if ann.pq_exchange is not None:
            pq = state.pq
            if pq is None:
                return  # we run no PQ ratchet: we cannot follow it (never acked; the peer reports the stall)
            kem = pq.answer_secret(ann.pq_exchange)
            if kem is None:
                pq.refused[UnknownPqExchange.reason] += 1
                return
            pq.announcement_seen(ann.pq_exchange)
        try:
            dh = own.exchange(X25519PublicKey.from_public_bytes(ann.public_key))
        except ValueError:  # low-order point: all-zero shared secret
            self.bad_announcements += 1
            return
        self.dh_computations += 1
        if kem is None:
            new_root, chain_key = kdf_rk(bytes(self._root), dh)
        else:
            new_root, chain_key = kdf_rk_pq(bytes(self._root), dh, kem)
        if pending is not None:
            pending.wipe()
        self._pending = _PendingEpoch(
            ann.public_key,
            _RecvChain(ann.epoch, ann.start_counter, chain_key, self._suite),
            new_root,
            ann.pq_exchange,
        )
        state.arm_ack(ack)

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
        self.closed = True
        self._fast = None
        _wipe(self._root)
        if self._pending is not None:
            self._pending.wipe()
            self._pending = None
        for epoch in list(self._chains):
            self._drop_chain(epoch)
        for key in self._keys.values():
            key.wipe()
        self._keys.clear()
