"""Our direction of one call's media ratchet: ``FrameSealer`` seals each frame, steps the symmetric chain, decides
DH steps, announces the next ratchet key inside current-epoch frames and switches only once the peer acked it,
schedules the control TLVs (at most one 42-byte item per frame) and pads frames to the set size
(docs/PROTOCOL.md §B.4). Split from ``session``."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ratchet.chain import kdf_ck
from ratchet.errors import SealError
from ratchet.events import Degradation, LocalRatchetStep
from ratchet.frame import (
    COUNTER_MOD,
    COUNTER_SHIFT,
    HEADER_LEN,
    KEY_PREFIX_LEN,
    MAX_CTL,
    MAX_PAYLOAD,
    NO_PEER_EPOCH,
    TAG_LEN,
    TELEPHONE_EVENT_LEN,
    AeadCipher,
    RatchetKeyAnnouncement,
    chain_id,
    frame_key,
    header_word,
    key_check_value,
    make_aead,
    nonce_prefix,
    notice_tlv,
    padding,
    per_frame_key,
    sas_reveal_tlv,
    telephone_event_tlv,
)
from ratchet.kdf import kdf_rk, kdf_rk_pq
from ratchet.media_state import (
    ACK_TAIL_FRAMES,
    NOTICE_FRAMES,
    MediaConfig,
    _RatchetState,
    _wipe,
    next_repeat,
    next_reveal_repeat,
    repeats,
    reveal_repeats,
)
from ratchet.params import FrameSuite, Role, SessionKeys
from ratchet.timekeys import TimeKeySchedule

MAX_EPOCH = 0xFFFE
"""The last epoch a sender starts: RATCHET_KEY carries epochs as u16 and 0xFFFF is the ``peer_epoch`` of epoch 0
("no peer key used"). A sender that reaches it stops DH stepping and keeps its symmetric chain (91 hours of steps
at a 5 s interval); the epoch never overflows."""


SEND_TIME_KEYS = 2
"""Time keys a sealer keeps: its current interval's, and the previous one for a ``now`` a little behind the last
(it never needs older ones: every frame is sealed in the interval of its ``now``)."""


@dataclass
class _Announcement:
    """Our next epoch, announced but not switched to until the peer acks this very key."""

    epoch: int
    peer_epoch: int
    start: int
    public: bytes
    chain_key: bytearray
    new_root: bytearray
    armed_n: int
    """Our counter when this key was first announced (the repeat schedule counts from it)."""
    decided_at: float
    """When we decided to step (kept across re-announcements: the degraded deadline counts from it)."""
    pq: int | None = None
    """Our completed ML-KEM exchange this step mixes into the root (announced as RATCHET_KEY_PQ, §B.12)."""
    tlv: bytes = b""

    def __post_init__(self) -> None:
        self.tlv = RatchetKeyAnnouncement(self.epoch, self.peer_epoch, self.start, self.public, self.pq).encode()

    def wipe(self) -> None:
        _wipe(self.chain_key)
        _wipe(self.new_root)


@dataclass(frozen=True)
class _Plan:
    """The control block of the next frame and which scheduled items it carries."""

    ctl: bytes
    key: bool
    reveal: bool
    key_due: bool = False
    """The schedule wanted the ratchet key in this frame (if not sent, it is owed)."""
    reveal_due: bool = False
    ack: bool = False
    """The frame carries our KEY_ACK."""
    ack_due: bool = False
    """The ack schedule wanted it in this frame (if not sent, because a 42-byte item took the frame, it is owed)."""
    chunk: bool = False
    """The frame carries a PQ_CHUNK (§B.12)."""


_NO_CONTROL = _Plan(b"", key=False, reveal=False)


class _Fast:
    """The frames after the last one the general path sealed, up to the next that carries (or may carry) a control
    item or that a deadline may change (chain steps and interval ends it takes itself): their header word without
    the counter, the bound AEAD encrypt, the nonce as an integer, the plaintext prefix (``ctl_len ‖ PAD``) per
    payload length, and the counter, time and shared-state bounds within which the general path would build
    exactly these bytes."""

    __slots__ = (
        "ack",
        "encrypt",
        "end_n",
        "interval",
        "nonce_base",
        "nonce_len",
        "prefixes",
        "step_end",
        "t_dead",
        "t_hi",
        "t_lo",
        "version",
        "word",
    )

    def __init__(
        self,
        word: int,
        encrypt: Callable[[bytes, bytes, bytes | None], bytes],
        nonce_prefix: bytes,
        prefixes: dict[int, bytes],
        end_n: int,
        t_lo: float,
        t_hi: float,
        version: int,
        ack: bool,
        step_end: int,
        interval: int,
        t_dead: float,
    ) -> None:
        self.word = word
        self.encrypt = encrypt
        self.nonce_base = int.from_bytes(nonce_prefix, "big") << 64
        self.nonce_len = len(nonce_prefix) + 8
        self.prefixes = prefixes
        self.end_n = end_n
        self.t_lo = t_lo
        self.t_hi = t_hi
        self.version = version
        self.ack = ack
        """An ack is in its repeat tail: each frame counts towards it (``_RatchetState.ack_rel``)."""
        self.step_end = step_end
        """The first counter of the next chain step: the fast path steps the chain there itself (``_step``)."""
        self.interval = interval
        self.t_dead = t_dead
        """The first time ``_prepare`` could act (a DH step, a re-announcement, a degraded condition, the PQ
        ratchet): ``t_hi`` is this or the interval's end, whichever is first; ``_fast_interval`` moves past the
        latter."""


_HOT_LAYOUT = (COUNTER_MOD, COUNTER_SHIFT, HEADER_LEN)
if _HOT_LAYOUT != (0x4000, 14, 4):  # the fast path spells them as literals (a global lookup each costs)
    raise ImportError("ratchet.frame's header layout changed: update FrameSealer.seal's literals")


def _prefix(pad: int) -> bytes:
    """``ctl_len ‖ PAD`` of a frame without control padded by ``pad`` bytes (exactly what the general path builds)."""
    ctl = padding(pad)
    return bytes([len(ctl)]) + ctl


@functools.lru_cache(maxsize=16)
def _padded_prefixes(p: int) -> dict[int, bytes]:
    """The prefix of a frame without control for every content length up to payload size ``p`` (longer contents
    are oversize frames: general path). Shared by every sealer of that size and read only: a pass-through stream of
    a VBR phone's packets finds each length here, and no call pays memory for it."""
    by_pad: dict[int, bytes] = {}
    out: dict[int, bytes] = {}
    for length in range(min(p, MAX_PAYLOAD) + 1):
        pad = min(p - length, MAX_CTL)
        prefix = by_pad.get(pad)
        if prefix is None:
            prefix = by_pad[pad] = _prefix(pad)
        out[length] = prefix
    return out


_UNPADDED = dict.fromkeys(range(MAX_PAYLOAD + 1), b"\x00")
"""Without a payload size a frame without control starts with ``ctl_len = 0`` whatever its length; shared by all
sealers (read only). A length above MAX_PAYLOAD is absent, so the general path refuses it."""


def _deadline(base: float, span: float) -> float:
    """A time ``t`` with ``now - base < span`` for every ``now < t``, as the floats compute it (conservative by an
    ulp or two): the general path's ``now - base >= span`` tests can then never fire inside the fast path."""
    t = base + span
    while math.nextafter(t, -math.inf) - base >= span:
        t = math.nextafter(t, -math.inf)
    return t


class FrameSealer:
    """Seals our outgoing frames. ``seal(payload, now, event=None) -> bytes``."""

    __slots__ = (
        "_ack_owed",
        "_aead",
        "_bucket",
        "_chain_ident",
        "_ck",
        "_ck_step",
        "_config",
        "_epoch",
        "_epoch_start_n",
        "_epoch_started_at",
        "_fast",
        "_fpk",
        "_initial_acked",
        "_initial_tlv",
        "_interval",
        "_interval_ends",
        "_kcv",
        "_key_owed",
        "_last_big_was_key",
        "_mk",
        "_n",
        "_notices",
        "_overhead",
        "_payload_size",
        "_pending",
        "_per_frame",
        "_prefix",
        "_prefixes",
        "_reveal",
        "_reveal_n",
        "_reveal_owed",
        "_reveal_until",
        "_root",
        "_state",
        "_step",
        "_suite",
        "_tag_len",
        "_tks",
        "announcements",
        "closed",
        "local_steps",
        "oversize_frames",
        "pq_announcements",
        "reveal_started",
    )
    # Slots, not a __dict__: 1.2 KB less per object (a call has one of each per ratchet session).

    fast_path = True
    """False: every frame takes the general path (the equivalence tests seal one stream both ways, byte for byte)."""

    def __init__(self, keys: SessionKeys, state: _RatchetState, config: MediaConfig, now: float) -> None:
        params = keys.send_params
        self._suite: FrameSuite = params.frame_suite
        self._tag_len = TAG_LEN[self._suite]
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
            capacity=SEND_TIME_KEYS,
        )
        self._root = bytearray(keys.send_root)
        self._reveal = bytes(keys.sas_secret) if keys.sas_secret is not None else None
        # The offerer reveals r from its first frames; the answerer reveals s only once the call layer calls
        # start_reveal() (its user-visible commitment point, PROTOCOL.md §A.6), for reveal_period_s from the
        # first frame sealed after that call. None = the period has not started.
        self.reveal_started = keys.role is Role.OFFERER
        self._reveal_n = 0
        self._reveal_until: float | None = None
        self._n = 0
        self._pending: _Announcement | None = None
        self._initial_acked = False
        self._initial_tlv = RatchetKeyAnnouncement(0, NO_PEER_EPOCH, 0, state.own_public[0]).encode()
        self._key_owed = False
        self._reveal_owed = False
        self._ack_owed = False
        self._last_big_was_key = True  # the SAS reveal goes first: the answerer can show the SAS after one frame
        self._payload_size: int | None = None
        self._bucket = 32
        self._notices: list[tuple[bytes, int]] = []
        """NOTICE TLVs being repeated, with the counter of the frame that first carried (or will carry) each."""
        self.announcements = 0
        self.pq_announcements = 0
        """Frames that carried a RATCHET_KEY_PQ (one byte longer than a RATCHET_KEY)."""
        self.oversize_frames = 0
        self.local_steps = 0
        self._overhead = 0
        self._epoch_started_at = now
        self._fast: _Fast | None = None
        self._interval_ends: tuple[int | None, float] = (None, 0.0)
        self._prefixes: dict[int, bytes] = _UNPADDED
        """Plaintext prefix (``ctl_len ‖ PAD``) of a frame without control, by content length, for the fast path
        (shared, read only)."""
        self._start_epoch(0, 0, bytearray(keys.send_chain))
        self.closed = False

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def sealed(self) -> int:
        return self._n

    @property
    def overhead_bytes(self) -> int:
        """Bytes added by sealing so far: header, control length byte, control TLVs (padding included) and tag."""
        return self._overhead

    def _start_epoch(self, epoch: int, start_n: int, chain_key: bytearray) -> None:
        self._epoch = epoch
        self._epoch_start_n = start_n
        self._ck = chain_key
        self._ck_step = 0
        self._chain_ident = chain_id(chain_key)
        self._step = -1
        self._mk: bytearray | None = None
        self._interval: int | None = None
        self._aead: AeadCipher | None = None
        self._kcv = 0
        self._prefix = nonce_prefix(self._suite, epoch)

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
        self._step = step
        self._interval = None

    # --- public knobs ----------------------------------------------------------------------------------

    def start_reveal(self) -> None:
        """Start revealing our SAS contribution (the answerer's ``s``); idempotent. The next frame carries it (or
        the one after, when a ratchet key is due too), and the reveal period starts there."""
        if self.reveal_started:
            return
        self._fast = None
        self.reveal_started = True
        self._reveal_n = self._n

    def send_notice(self, code: int) -> None:
        """Tell the peer ``code`` (a ``ratchet.events.Notice``) inside the next frames: the first 3 and then every
        4th for ``NOTICE_FRAMES`` frames (3 bytes each). Idempotent per code."""
        tlv = notice_tlv(code)
        if all(t != tlv for t, _ in self._notices):
            self._fast = None
            self._notices.append((tlv, self._n))

    def set_payload_size(self, p: int | None, bucket: int = 32) -> None:
        if p is not None and not 0 <= p <= MAX_PAYLOAD + MAX_CTL:
            raise ValueError(f"payload size {p} out of range")
        if bucket < 1:
            raise ValueError("bucket must be >= 1")
        self._payload_size = p
        self._bucket = bucket
        self._fast = None
        self._prefixes = _UNPADDED if p is None else _padded_prefixes(p)

    # --- time-driven state -----------------------------------------------------------------------------

    def _prepare(self, now: float) -> None:
        """Apply what ``now`` and the acks received so far decide before the next frame: switch to an acked
        epoch, re-announce a key unacked for too long, decide a DH step, raise degraded conditions. Idempotent
        for the same counter and ``now``."""
        self._fast = None  # re-armed by the next seal if nothing here changed what it assumed
        state, cfg = self._state, self._config
        if self.reveal_started and self._reveal_until is None and self._reveal is not None:
            self._reveal_until = now + cfg.reveal_period_s
        if not self._initial_acked and state.peer_acks.get(0) == state.own_public.get(0, b"")[:KEY_PREFIX_LEN]:
            self._initial_acked = True
        pend = self._pending
        if pend is not None:
            acked = state.peer_acks.get(pend.epoch) == pend.public[:KEY_PREFIX_LEN]
            if acked and self._n >= pend.start:
                self._switch(pend, now)
            elif not acked and (self._n - pend.start) // self._fpk > cfg.max_skip_steps // 2:
                # the peer could no longer catch up: a new key (mixing the same PQ secret, if any)
                self._announce(pend.epoch, now, pend.decided_at, self._pq_secret(pend.pq))
        pq = state.pq
        if pq is not None:
            pq.tick(now)
            ready = pq.ready()
            # A completed ML-KEM exchange goes into our next DH step at once: a fresh step, or the unacked one we
            # are announcing, re-announced with a fresh key that mixes it (the peer replaces its pending chain).
            if ready is not None and state.peer_current is not None:
                pend = self._pending
                if pend is None and self._epoch < MAX_EPOCH:
                    self._announce(self._epoch + 1, now, now, ready)
                elif pend is not None and pend.pq != ready[0]:
                    self._announce(pend.epoch, now, pend.decided_at, ready)
        if (
            self._pending is None
            and cfg.dh_interval_s > 0
            and now - self._epoch_started_at >= cfg.dh_interval_s
            and state.peer_current is not None
            and self._epoch < MAX_EPOCH
        ):
            self._announce(self._epoch + 1, now, now)
        pend = self._pending
        degraded = state.degraded
        unacked = pend is not None and now - pend.decided_at > 2 * cfg.dh_interval_s
        if unacked and Degradation.OWN_STEP_UNACKED not in degraded:
            state.degrade(Degradation.OWN_STEP_UNACKED, now)
        silent = cfg.peer_dh_timeout_s > 0 and now - state.last_peer_step_at > cfg.peer_dh_timeout_s
        if silent and Degradation.NO_PEER_STEP not in degraded:
            state.degrade(Degradation.NO_PEER_STEP, now)

    def _pq_secret(self, exchange: int | None) -> tuple[int, bytes] | None:
        """The PQ exchange ``exchange`` with its secret, if it is the one the PQ ratchet holds ready."""
        pq = self._state.pq
        ready = pq.ready() if pq is not None and exchange is not None else None
        return ready if ready is not None and ready[0] == exchange else None

    def _announce(self, epoch: int, now: float, decided_at: float, pq: tuple[int, bytes] | None = None) -> None:
        """Draw the key of ``epoch`` (replacing an unacked one), derive its chain (mixing the completed ML-KEM
        exchange ``pq`` = (exchange, secret), if given), start announcing it."""
        state = self._state
        assert state.peer_current is not None
        peer_index, peer_public = state.peer_current
        private: X25519PrivateKey = state.keygen()
        dh = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        if pq is None:
            new_root, chain_key = kdf_rk(bytes(self._root), dh)
        else:
            new_root, chain_key = kdf_rk_pq(bytes(self._root), dh, pq[1])
        if self._pending is not None:
            self._pending.wipe()
        state.add_own_key(epoch, private)
        self._pending = _Announcement(
            epoch,
            peer_index,
            self._n,
            state.own_public[epoch],
            bytearray(chain_key),
            bytearray(new_root),
            self._n,
            decided_at,
            pq[0] if pq is not None else None,
        )
        self._key_owed = False

    def _switch(self, pend: _Announcement, now: float) -> None:
        _wipe(self._root)
        self._root = bytearray(pend.new_root)
        _wipe(pend.new_root)
        _wipe(self._ck)
        _wipe(self._mk)
        self._start_epoch(pend.epoch, pend.start, pend.chain_key)
        self._pending = None
        self._key_owed = False
        self._epoch_started_at = now
        self.local_steps += 1
        for old in [e for e in self._state.peer_acks if e < pend.epoch]:
            del self._state.peer_acks[old]
        self._state.events.append(LocalRatchetStep(pend.epoch, now))
        self._state.restore(Degradation.OWN_STEP_UNACKED, now)
        if pend.pq is not None and self._state.pq is not None:
            self._state.pq.local_switched(pend.pq, pend.epoch, now)

    # --- control schedule ------------------------------------------------------------------------------

    def _key_tlv(self) -> tuple[bool, bytes]:
        """(due this frame, the RATCHET_KEY TLV) of the key we are announcing, if any."""
        n = self._n
        if self._pending is not None:
            return repeats(n - self._pending.armed_n), self._pending.tlv
        if self._epoch == 0 and not self._initial_acked:
            return repeats(n), self._initial_tlv
        return False, b""

    def _revealing(self, now: float) -> bool:
        return self._reveal is not None and self._reveal_until is not None and now < self._reveal_until

    def _plan(self, now: float, event: bytes | None) -> _Plan:
        """The next frame's control TLVs (no PAD). Pure: ``seal`` commits the schedule afterwards."""
        key_due, key_tlv = self._key_tlv()
        revealing = self._revealing(now)
        pq = self._state.pq
        chunk = pq.next_tlv() if pq is not None else None
        if (
            not key_tlv
            and not revealing
            and self._state.ack is None
            and event is None
            and not self._notices
            and chunk is None
        ):
            return _NO_CONTROL  # the steady state of a call
        reveal_due = revealing and reveal_repeats(self._n - self._reveal_n)
        key_owed = bool(key_tlv) and (self._key_owed or key_due)
        reveal_owed = revealing and (self._reveal_owed or reveal_due)
        # At most one 42-byte item per frame; when both are owed they alternate, the other stays owed.
        send_key = key_owed and not (reveal_owed and self._last_big_was_key)
        send_reveal = reveal_owed and not send_key
        ctl = b""
        if send_key:
            ctl += key_tlv
        if send_reveal:
            assert self._reveal is not None
            ctl += sas_reveal_tlv(self._reveal)
        ack = self._state.ack
        ack_due = ack is not None and repeats(self._state.ack_rel)
        # Not beside a 42-byte item: the two would leave a 60-byte CBR frame 10 bytes of audio (media3 measured
        # frames with no audio at all at every DH step, when both ends step at once). The peer repeats its
        # announcement until acked, so an ack a frame late costs nothing.
        send_ack = ack is not None and (self._ack_owed or ack_due) and not (send_key or send_reveal)
        if send_ack:
            assert ack is not None
            ctl += ack.encode()
        if event is not None:
            ctl += telephone_event_tlv(event)
        for tlv, first in self._notices:
            if repeats(self._n - first):
                ctl += tlv
        # A PQ chunk (16 bytes) never rides beside a 42-byte item either: the erasure code makes a skipped chunk
        # cost nothing but one frame's time.
        send_chunk = chunk is not None and not (send_key or send_reveal)
        if send_chunk:
            assert chunk is not None
            ctl += chunk
        return _Plan(ctl, send_key, send_reveal, key_due and bool(key_tlv), reveal_due, send_ack, ack_due, send_chunk)

    def control_size(self, now: float, event: bool = False) -> int:
        """The ctl bytes (TLV headers included, PAD excluded) the next ``seal`` at this ``now`` carries."""
        f = self._fast
        if (
            f is not None
            and not event
            and f.t_lo <= now
            and self._n < f.end_n
            and f.version == self._state.version
            and (now < f.t_hi or self._fast_interval(f, now))
        ):
            return 0  # the fast path would seal the next frame at this ``now``: nothing is due
        if self.closed:
            return 0
        self._prepare(now)
        return len(self._plan(now, bytes(TELEPHONE_EVENT_LEN) if event else None).ctl)

    # --- sealing ---------------------------------------------------------------------------------------

    def seal(self, payload: bytes, now: float, event: bytes | None = None) -> bytes:
        f = self._fast
        # Fast path: a frame with nothing due (armed by the general path, stepping the chain and the interval itself,
        # which it mirrors byte for byte): one header word, one nonce, one AEAD call. Anything else (an event, a
        # content length without a cached prefix, a counter, time or shared-state bound passed) goes general.
        if (
            f is not None
            and event is None
            and f.t_lo <= now
            and f.version == self._state.version
            and (now < f.t_hi or self._fast_interval(f, now))
        ):
            n = self._n
            prefix = f.prefixes.get(len(payload))
            if n < f.end_n and prefix is not None:
                if n == f.step_end:
                    self._fast_step(f)
                hdr = (f.word | ((n & 0x3FFF) << 14)).to_bytes(4, "big")  # literals: see _HOT_LAYOUT
                sealed = hdr + f.encrypt((f.nonce_base | n).to_bytes(f.nonce_len, "big"), prefix + payload, hdr)
                self._n = n + 1
                self._overhead += len(sealed) - len(payload)
                if f.ack:
                    self._state.ack_rel += 1  # below ACK_TAIL_FRAMES: end_n stops before the frame that ends it
                return sealed
        return self._seal(payload, now, event)

    def _fast_step(self, f: _Fast) -> None:
        """The next chain step inside the fast path's bounds, as the general path takes it: advance the chain, the
        frame key of the same interval, a new AEAD. The header word is unchanged (the KCV depends on the epoch's
        chain and the interval only), and so are all other bounds (none depends on the step)."""
        step = self._step + 1
        self._advance(step)
        assert self._mk is not None
        interval = f.interval
        self._aead = make_aead(self._suite, frame_key(self._mk, self._tks.key(interval)))
        self._interval = interval
        f.encrypt = self._aead.encrypt
        f.step_end += self._fpk

    def _fast_interval(self, f: _Fast, now: float) -> bool:
        """Move the fast path into the interval of ``now`` once the last one ended, as the general path would arm
        it there: the time key, KCV and frame key of the new interval, its header word and end. Every other bound
        (counters, ``t_dead``, the shared version) holds across the boundary: only time passed, and nothing but the
        deadlines in ``t_dead`` makes ``_prepare`` act on time alone. False: the general path seals the frame."""
        if not (now < f.t_dead and self._n < f.end_n):
            return False
        interval = self._tks.interval_at(now)
        t_hi = min(self._interval_end(interval), f.t_dead)
        if not (interval > f.interval and now < t_hi):
            return False
        assert self._mk is not None
        tk = self._tks.key(interval)
        self._kcv = key_check_value(self._chain_ident, tk)
        self._aead = make_aead(self._suite, frame_key(self._mk, tk))
        self._interval = interval
        f.word = header_word(int(self._suite), self._epoch, 0, interval, self._kcv)
        f.encrypt = self._aead.encrypt
        f.interval = interval
        f.t_lo = now
        f.t_hi = t_hi
        return True

    def _seal(self, payload: bytes, now: float, event: bytes | None) -> bytes:
        """The general path: every check, the control plan and its commit, chain and key updates; it re-arms
        the fast path for the frames after this one."""
        self._fast = None
        if self.closed:
            raise SealError("session closed")
        if len(payload) > MAX_PAYLOAD:
            raise SealError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        if event is not None and len(event) != TELEPHONE_EVENT_LEN:
            raise SealError(f"a telephone event is {TELEPHONE_EVENT_LEN} bytes, not {len(event)}")
        self._prepare(now)
        plan = self._plan(now, event)
        ctl = plan.ctl
        p = self._payload_size
        if p is not None:
            body = len(ctl) + len(payload)
            target = p
            if body > p:
                target = p + -(-(body - p) // self._bucket) * self._bucket
                self.oversize_frames += 1
            # ctl_len is one byte: a content far below p cannot be padded up to it (a sizing bug of the caller).
            ctl += padding(min(target - body, MAX_CTL - len(ctl)))
        plaintext = bytes([len(ctl)]) + ctl + payload
        n = self._n
        step = (n - self._epoch_start_n) // self._fpk
        if step != self._step:
            self._advance(step)
        assert self._mk is not None
        interval = self._tks.interval_at(now)
        if interval != self._interval or self._aead is None or self._per_frame:
            tk = self._tks.key(interval)
            if interval != self._interval:
                self._kcv = key_check_value(self._chain_ident, tk)
            key = per_frame_key(self._mk, tk, n) if self._per_frame else frame_key(self._mk, tk)
            self._aead = make_aead(self._suite, key)
            self._interval = interval
        hdr = header_word(int(self._suite), self._epoch, n, interval, self._kcv).to_bytes(HEADER_LEN, "big")
        sealed = hdr + self._aead.encrypt(self._prefix + n.to_bytes(8, "big"), plaintext, hdr)
        # Commit the schedule.
        self._n = n + 1
        self._overhead += len(sealed) - len(payload)
        if plan.key:
            self.announcements += 1
            if self._pending is not None and self._pending.pq is not None:
                self.pq_announcements += 1
            self._key_owed = False
            self._last_big_was_key = True
        elif plan.key_due:
            self._key_owed = True
        if plan.reveal:
            self._reveal_owed = False
            self._last_big_was_key = False
        elif plan.reveal_due:
            self._reveal_owed = True
        if plan.ack:
            self._ack_owed = False
        elif plan.ack_due:
            self._ack_owed = True
        if plan.chunk:
            assert self._state.pq is not None
            self._state.pq.commit_sent()
        if self._notices:
            self._notices = [(t, first) for t, first in self._notices if self._n - first < NOTICE_FRAMES]
        state = self._state
        if state.ack is not None:
            state.ack_rel += 1
            if state.ack_rel >= ACK_TAIL_FRAMES:
                state.ack = None  # the announcer has gone quiet: it has its ack (a repeat re-arms us)
        if not self._per_frame and self.fast_path:
            self._arm(now, step, interval)
        return sealed

    def _arm(self, now: float, step: int, interval: int) -> None:
        """Arm the fast path for the frames after the one just sealed, up to the first that the general path might
        seal differently: the next counter at which a scheduled item (ratchet key, SAS reveal, ack, notice) repeats
        or expires, the next time ``_prepare`` could act; and only while the shared state keeps its version (the
        opener changes acks and peer keys). Chain steps (``_fast_step``) and interval ends (``_fast_interval``) it
        takes itself, as the general path would."""
        n, state, cfg, fpk = self._n, self._state, self._config, self._fpk
        if state.pq is not None and state.pq.sending():
            return  # every frame carries a chunk while an ML-KEM message goes out
        step_end = self._epoch_start_n + (step + 1) * fpk
        end = n + COUNTER_MOD  # no schedule bound yet (the fast path steps the chain itself at step_end)
        pend = self._pending
        if pend is not None:
            if self._key_owed or state.peer_acks.get(pend.epoch) == pend.public[:KEY_PREFIX_LEN]:
                return
            end = min(end, pend.armed_n + next_repeat(n - pend.armed_n))
            end = min(end, pend.start + (cfg.max_skip_steps // 2 + 1) * fpk)  # _prepare re-announces there
        elif self._epoch == 0 and not self._initial_acked:
            if self._key_owed or state.peer_acks.get(0) == state.own_public.get(0, b"")[:KEY_PREFIX_LEN]:
                return
            end = min(end, next_repeat(n))
        if self._revealing(now):  # it can only stop being true later: the fast path never runs before ``now``
            if self._reveal_owed:
                return
            rel = next_reveal_repeat(n - self._reveal_n)
            if rel is not None:
                end = min(end, self._reveal_n + rel)
        if state.ack is not None:
            if self._ack_owed:
                return
            rel = state.ack_rel
            end = min(end, n + next_repeat(rel) - rel, n + ACK_TAIL_FRAMES - 1 - rel)
        for _, first in self._notices:
            end = min(end, first + next_repeat(n - first), first + NOTICE_FRAMES - 1)
        if end <= n or self._aead is None:
            return
        t_dead = math.inf
        if pend is not None:
            if Degradation.OWN_STEP_UNACKED not in state.degraded:
                t_dead = _deadline(pend.decided_at, 2 * cfg.dh_interval_s)
        elif cfg.dh_interval_s > 0 and state.peer_current is not None and self._epoch < MAX_EPOCH:
            t_dead = _deadline(self._epoch_started_at, cfg.dh_interval_s)
        if cfg.peer_dh_timeout_s > 0 and Degradation.NO_PEER_STEP not in state.degraded:
            t_dead = min(t_dead, _deadline(state.last_peer_step_at, cfg.peer_dh_timeout_s))
        if state.pq is not None:
            t_dead = min(t_dead, state.pq.deadline())  # an exchange may start or stall there
        t_hi = min(self._interval_end(interval), t_dead)
        if not now < t_hi:
            return
        word = header_word(int(self._suite), self._epoch, 0, interval, self._kcv)
        self._fast = _Fast(
            word,
            self._aead.encrypt,
            self._prefix,
            self._prefixes,
            end,
            now,
            t_hi,
            state.version,
            state.ack is not None,
            step_end,
            interval,
            t_dead,
        )

    def _interval_end(self, interval: int) -> float:
        """A time ``t`` with ``interval_at(now) <= interval`` for every ``now < t`` (as the floats compute it)."""
        cached = self._interval_ends
        if cached[0] == interval:
            return cached[1]
        tks = self._tks
        t = tks.origin + (interval + 1) * tks.interval_ms / 1000.0
        while tks.interval_at(math.nextafter(t, -math.inf)) > interval:
            t = math.nextafter(t, -math.inf)
        self._interval_ends = (interval, t)
        return t

    def close(self) -> None:
        self.closed = True
        self._fast = None
        _wipe(self._root)
        _wipe(self._ck)
        _wipe(self._mk)
        if self._pending is not None:
            self._pending.wipe()
            self._pending = None
        self._aead = None
