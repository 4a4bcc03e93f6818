"""The in-call post-quantum ratchet of one call (docs/PROTOCOL.md §B.12): the ML-KEM-768 exchanges both sides run
during the call, as initiator (our fresh encapsulation key out, the peer's ciphertext in) and as responder (the
peer's key in, our ciphertext out), the chunk schedule, the stall bound, and the secrets handed to the DH ratchet.

Shared by the sealer and the opener like ``_RatchetState``. It never touches a frame: the sealer asks it for the
next PQ_CHUNK TLV and for a completed secret to mix into its next DH step; the opener hands it the chunks of
authenticated frames and asks it for the secret a peer's RATCHET_KEY_PQ names. Sans-I/O: time is an argument.

Theory of operation, for our exchange ``x`` (the peer runs its own the same way, mirrored):

1. ``tick`` starts ``x`` when due: a fresh ML-KEM-768 key pair; the encapsulation key goes out one share per frame.
2. The peer rebuilds the key from any 100 of its 256 shares, encapsulates, and sends the ciphertext the same way.
   Its first ciphertext share tells us it has our key: we stop sending it.
3. We rebuild the ciphertext (92 shares), check its digest, decapsulate: ``ready()`` now returns ``(x, secret)``.
4. The sealer announces its next DH step as RATCHET_KEY_PQ naming ``x`` and derives it with
   ``KDF_RK_PQ(root, dh, secret)``; the peer does the same from its copy of the secret and acks; the sealer switches
   (``local_switched``) exactly as for a classical step, so no frame is lost at the switch.
5. No switch within ``pq_stall_s`` of the start: ``PQ_STALLED`` degraded (restored by the next completed exchange).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey

from ratchet.errors import BadPqKey, PqChunkError, PqPartialEvicted, UnexpectedPqChunk
from ratchet.events import Degradation, Event, LocalPqStep, PeerPqStep
from ratchet.pq_chunks import EXCHANGE_MOD, SHARES, ErasureCoder, Kind, Partial, encode_message, parse_chunk


class SharedState(Protocol):
    """What the PQ ratchet uses of the session's shared state (``media_state._RatchetState``)."""

    version: int
    events: collections.deque[Event]

    def degrade(self, reason: Degradation, now: float) -> None: ...

    def restore(self, reason: Degradation, now: float) -> None: ...


def _wipe(buf: bytearray | None) -> None:
    if buf is not None:
        buf[:] = bytes(len(buf))


MAX_BACKOFF_DOUBLINGS = 3
"""After failed exchanges in a row the next waits ``pq_interval_s`` × 2, 4, then 8 (8 min at the default)."""


def _before(base: float, span: float) -> float:
    """A time ``t`` with ``now - base < span`` for every ``now < t``, as the floats compute it (conservative)."""
    t = base + span
    while math.nextafter(t, -math.inf) - base >= span:
        t = math.nextafter(t, -math.inf)
    return t


class _Outgoing:
    """One message going out: its 256 PQ_CHUNK TLVs, sent in index order and then round again."""

    __slots__ = ("sent", "tlvs")

    def __init__(self, tlvs: list[bytes]) -> None:
        self.tlvs = tlvs
        self.sent = 0

    def tlv(self) -> bytes:
        return self.tlvs[self.sent % SHARES]


class _Own:
    """Our exchange in progress."""

    __slots__ = ("exchange", "key", "out", "partial", "secret", "stalled", "started_at")

    def __init__(self, exchange: int, key: MLKEM768PrivateKey, out: _Outgoing, started_at: float) -> None:
        self.exchange = exchange
        self.key: MLKEM768PrivateKey | None = key
        self.out: _Outgoing | None = out
        """Our encapsulation key's chunks; None once the peer's first ciphertext chunk shows it has the key."""
        self.partial: Partial | None = None
        self.secret: bytearray | None = None
        """The ML-KEM shared secret, once the ciphertext decapsulated; wiped at the switch."""
        self.started_at = started_at
        self.stalled = False


class _Answer:
    """Our answer to the peer's newest exchange: the secret we encapsulated, and its ciphertext going out."""

    __slots__ = ("exchange", "out", "secret", "since")

    def __init__(self, exchange: int, secret: bytes, out: _Outgoing, since: float) -> None:
        self.exchange = exchange
        self.secret = bytearray(secret)
        self.out: _Outgoing | None = out
        """None once the peer's RATCHET_KEY_PQ naming this exchange authenticated (it has the ciphertext)."""
        self.since = since


class PqRatchet:
    """Both roles of the in-call ML-KEM-768 exchanges of one session (see the module docstring)."""

    def __init__(
        self,
        coder: ErasureCoder,
        state: SharedState,
        first_at: float,
        interval_s: float,
        stall_s: float,
        keygen: Callable[[], MLKEM768PrivateKey] = MLKEM768PrivateKey.generate,
    ) -> None:
        self._coder = coder
        self._interval = interval_s
        self._stall = stall_s
        self._state = state
        self._keygen = keygen
        self._next_start = first_at
        self._failures = 0
        self._next_id = 0
        self._own: _Own | None = None
        self._prev_own: int | None = None
        """Our last finished or abandoned exchange: its straggling ciphertext chunks are ignored, not refused."""
        self._answer: _Answer | None = None
        self._peer_partial: Partial | None = None
        self._refused_peer: int | None = None
        """The peer's exchange whose chunks we refused: its further chunks are refused without storing them."""
        self._turn = 0
        self.local_epochs = 0
        """Our DH steps that mixed a completed exchange of ours (and switched)."""
        self.peer_epochs = 0
        """The peer's DH steps that mixed an exchange we answered (and authenticated)."""
        self.chunks_sent = 0
        self.refused: collections.Counter[str] = collections.Counter()
        """Refused chunks and exchanges by ``PqChunkError`` reason (the frames carrying them opened)."""

    # --- time --------------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Start our next exchange when due; raise ``PQ_STALLED`` when ours has not completed in ``pq_stall_s``
        (abandoning it if the peer never answered; a held secret stays for the DH step announcing it); stop
        sending a ciphertext the peer has not used in ``pq_stall_s``."""
        own = self._own
        if own is None:
            if now >= self._next_start:
                self._start(now)
        elif not own.stalled and now - own.started_at > self._stall:
            own.stalled = True
            self._state.degrade(Degradation.PQ_STALLED, now)
            if own.secret is None:
                self._abandon(now)
        ans = self._answer
        if ans is not None and ans.out is not None and now - ans.since > self._stall:
            ans.out = None
            self._state.version += 1

    def deadline(self) -> float:
        """The earliest ``now`` at which ``tick`` may change something (the sealer's fast path stops there)."""
        own = self._own
        if own is None:
            return self._next_start
        t = math.inf if own.stalled else _before(own.started_at, self._stall)
        ans = self._answer
        if ans is not None and ans.out is not None:
            t = min(t, _before(ans.since, self._stall))
        return t

    def _start(self, now: float) -> None:
        key = self._keygen()
        exchange = self._next_id
        self._next_id = (exchange + 1) % EXCHANGE_MOD
        tlvs = encode_message(self._coder, Kind.ENCAPS_KEY, exchange, key.public_key().public_bytes_raw())
        self._own = _Own(exchange, key, _Outgoing(tlvs), now)
        self._state.version += 1

    def _finish(self, now: float, completed: bool) -> None:
        """Our exchange is over (switched to, or abandoned): erase it and schedule the next. After each failure in
        a row the pause doubles (at most ``MAX_BACKOFF`` times), so a peer that never answers (it runs no PQ
        ratchet) costs a shrinking share of frames; a completed exchange resets it."""
        own = self._own
        if own is not None:
            _wipe(own.secret)
            self._prev_own = own.exchange
        self._own = None
        self._failures = 0 if completed else min(self._failures + 1, MAX_BACKOFF_DOUBLINGS)
        self._next_start = now + self._interval * (1 << self._failures)
        self._state.version += 1

    def _abandon(self, now: float) -> None:
        self._finish(now, completed=False)

    # --- sending -----------------------------------------------------------------------------------------

    def _outgoing(self) -> _Outgoing | None:
        """The message whose chunk the next frame carries: ours and an answer alternate when both are going."""
        own = self._own.out if self._own is not None else None
        ans = self._answer.out if self._answer is not None else None
        if own is not None and ans is not None:
            return own if self._turn % 2 == 0 else ans
        return own or ans

    def sending(self) -> bool:
        return self._outgoing() is not None

    def next_tlv(self) -> bytes | None:
        """The PQ_CHUNK TLV the next frame carries (pure: ``commit_sent`` once it went out)."""
        out = self._outgoing()
        return out.tlv() if out is not None else None

    def commit_sent(self) -> None:
        out = self._outgoing()
        if out is not None:
            out.sent += 1
            self._turn += 1
            self.chunks_sent += 1

    # --- receiving ---------------------------------------------------------------------------------------

    def receive(self, value: bytes, now: float) -> None:
        """An authenticated PQ_CHUNK value. Raises a ``PqChunkError`` (counted by the caller) for what it refuses;
        nothing it refuses is kept. Memory: at most one partial message per kind (the peer's newest key, the
        ciphertext of our exchange), each of fewer than 100 shares."""
        kind, exchange, index, share = parse_chunk(value)
        if kind is Kind.CIPHERTEXT:
            self._receive_ciphertext(exchange, index, share, now)
        else:
            self._receive_key(exchange, index, share, now)

    def _receive_ciphertext(self, exchange: int, index: int, share: bytes, now: float) -> None:
        own = self._own
        if own is None or own.exchange != exchange:
            if exchange == self._prev_own:
                return  # the peer is still sending the ciphertext of an exchange we finished
            raise UnexpectedPqChunk(f"ciphertext for exchange {exchange}, which we are not running")
        if own.secret is not None:
            return  # already decapsulated: the peer has not seen our announcement yet
        if own.out is not None:
            own.out = None  # the peer has our key
            self._state.version += 1
        if own.partial is None:
            own.partial = Partial(Kind.CIPHERTEXT, exchange)
        try:
            ct = own.partial.add(self._coder, index, share)
        except PqChunkError:
            self._abandon(now)
            self._state.degrade(Degradation.PQ_STALLED, now)
            raise
        if ct is None:
            return
        assert own.key is not None
        own.secret = bytearray(own.key.decapsulate(ct))
        own.key = None
        own.partial = None
        self._state.version += 1

    def _receive_key(self, exchange: int, index: int, share: bytes, now: float) -> None:
        ans = self._answer
        if ans is not None and ans.exchange == exchange:
            return  # answered: the peer keeps sending its key until our first ciphertext chunk arrives
        if exchange == self._refused_peer:
            raise UnexpectedPqChunk(f"key of exchange {exchange}, refused earlier")
        part = self._peer_partial
        if part is None or part.exchange != exchange:
            if part is not None:
                self.refused[PqPartialEvicted.reason] += 1
            part = self._peer_partial = Partial(Kind.ENCAPS_KEY, exchange)
        try:
            ek = part.add(self._coder, index, share)
        except PqChunkError:
            self._peer_partial = None
            self._refused_peer = exchange
            raise
        if ek is None:
            return
        self._peer_partial = None
        try:
            public = MLKEM768PublicKey.from_public_bytes(ek)
        except ValueError:
            self._refused_peer = exchange
            raise BadPqKey(f"exchange {exchange}: not an ML-KEM-768 encapsulation key") from None
        secret, ct = public.encapsulate()
        if ans is not None:
            _wipe(ans.secret)
        tlvs = encode_message(self._coder, Kind.CIPHERTEXT, exchange, ct)
        self._answer = _Answer(exchange, secret, _Outgoing(tlvs), now)
        self._state.version += 1

    # --- the DH ratchet's side ---------------------------------------------------------------------------

    def ready(self) -> tuple[int, bytes] | None:
        """(exchange, secret) of our completed exchange, for the sealer's next DH step; None if none is ready."""
        own = self._own
        if own is None or own.secret is None:
            return None
        return own.exchange, bytes(own.secret)

    def local_switched(self, exchange: int, epoch: int, now: float) -> None:
        """Our DH step ``epoch`` mixing ``exchange`` was acked and we switched: the exchange is complete."""
        own = self._own
        if own is None or own.exchange != exchange:
            return
        started = own.started_at
        self._finish(now, completed=True)
        self.local_epochs += 1
        self._state.restore(Degradation.PQ_STALLED, now)
        self._state.events.append(LocalPqStep(exchange, epoch, started, now))

    def answer_secret(self, exchange: int) -> bytes | None:
        """The secret we encapsulated for the peer's ``exchange`` (a RATCHET_KEY_PQ names it), else None."""
        ans = self._answer
        return bytes(ans.secret) if ans is not None and ans.exchange == exchange else None

    def announcement_seen(self, exchange: int) -> None:
        """The peer announced a step mixing ``exchange``: it has our ciphertext, stop sending it."""
        ans = self._answer
        if ans is not None and ans.exchange == exchange and ans.out is not None:
            ans.out = None
            self._state.version += 1

    def peer_switched(self, exchange: int, epoch: int, now: float) -> None:
        """The peer's epoch ``epoch`` mixing ``exchange`` authenticated: our copy of the secret has served."""
        ans = self._answer
        if ans is not None and ans.exchange == exchange:
            _wipe(ans.secret)
            self._answer = None
        self.peer_epochs += 1
        self._state.events.append(PeerPqStep(exchange, epoch, now))

    # --- inspection (tests, stats) -------------------------------------------------------------------------

    @property
    def partial_shares(self) -> int:
        """Shares held for messages not yet rebuilt (the memory a hostile peer can make us hold)."""
        own = self._own
        held = len(own.partial.shares) if own is not None and own.partial is not None else 0
        return held + (len(self._peer_partial.shares) if self._peer_partial is not None else 0)

    @property
    def exchange_running(self) -> bool:
        return self._own is not None

    def close(self) -> None:
        if self._own is not None:
            _wipe(self._own.secret)
            self._own = None
        if self._answer is not None:
            _wipe(self._answer.secret)
            self._answer = None
        self._peer_partial = None
