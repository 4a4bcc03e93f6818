"""The softphone role: one SIP stack, one identity, one replay cache, and a ``voipgw.leg.Leg`` per call (signed
handshake in the SDP, then Opus media sealed by the ratchet session; or, under ``opportunistic``, a plain
Opus/G.711 call). It also owns the role's call control: one call at a time, others answered 486 Busy Here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ratchet.aor import normalize_aor
from ratchet.handshake import NonceCache, Offerer, answer_offer
from ratchet.identity import IdentityKey
from voipgw.audio.sources import AudioSink, AudioSource, SilenceSource
from voipgw.call import CallEvent, CallState, Security
from voipgw.config import PhoneConfig
from voipgw.leg import SAS_WAIT_S, ActiveCall, Leg, LegContext, Spawner, incoming_record
from voipgw.probes import ProbeGuard, RevealPoint
from voipgw.sip import (
    IncomingCall,
    RateLimitedLog,
    Registration,
    RegistrationFailed,
    SipStack,
    TcpOptions,
)
from voipgw.store.replay import PersistentNonceCache
from voipgw.trust import TrustStore

log = logging.getLogger(__name__)
_busy_log = RateLimitedLog(logging.getLogger("voipgw.cli"))
"""INVITEs refused while busy: one line per interval, however many arrive (the logger the CLI has always used)."""

BUSY_WARNING = "voipgw: busy in another call"


class Phone:
    """A softphone on one SIP stack. ``await start()``, then ``place_call`` / ``answer``; ``await stop()``."""

    def __init__(
        self,
        config: PhoneConfig,
        identity: IdentityKey,
        trust: TrustStore | None = None,
        nonces: NonceCache | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.aor = normalize_aor(config.aor)
        self.stack: SipStack | None = None
        self.registration: Registration | None = None
        self.trust = trust
        """Contact store and key-continuity policy; None = no store (every call is secure, unverified)."""
        self.nonces = nonces if nonces is not None else NonceCache(max_skew_s=config.max_skew_s)
        """The replay cache of this identity's answers, shared by all its calls (the CLI passes the home's
        persistent one, ``voipgw.store.replay``)."""
        self.background = Spawner()
        """Contact-store writes and late safety numbers, awaited (bounded) by ``stop``."""
        self._legs: list[Leg] = []
        self._early: dict[str, Leg] = {}
        """Incoming calls ringing (``ring``) until ``answer`` picks them up, by Call-ID."""
        self.probes = ProbeGuard()
        """Unanswered secure calls per caller (SAS probing): its alerts go to the log."""

    @property
    def rtp_host(self) -> str:
        return self.config.rtp_host or self.config.listen_host

    @property
    def calls(self) -> list[ActiveCall]:
        """Calls in progress: placed (ringing or up) or being answered, until their media has stopped."""
        self._prune()
        return [leg.call for leg in self._legs if leg.live and leg.call is not None]

    @property
    def pending(self) -> ActiveCall | None:
        """The outgoing call still waiting for its answer, if any."""
        return next((leg.call for leg in self._legs if leg.ringing), None)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        tcp = TcpOptions() if cfg.transport in ("auto", "tcp") else None
        self.stack = SipStack(cfg.listen_host, cfg.listen_port, loop, tcp=tcp, tls=cfg.tls)
        await self.stack.start()
        await asyncio.to_thread(self._warm_up)
        if self.config.registrar is not None:
            self.registration = await self.stack.register(
                self.config.registrar,
                self.aor,
                self.config.username or self.aor.split("@")[0],
                self.config.password or "",
                expires=self.config.register_expires,
                transport=self.config.sip_transport or "udp",
            )

    async def stop(self) -> None:
        legs = [leg for leg in self._legs if leg.live and leg.call is not None]
        for leg in legs:
            assert leg.call is not None
            leg.call.hangup()
        for leg in legs:
            await leg.close()
        await self.background.settle()
        if self.registration is not None:
            with contextlib.suppress(Exception):
                await self.registration.unregister()
        if self.stack is not None:
            await self.stack.stop()
        if isinstance(self.nonces, PersistentNonceCache):
            self.nonces.close()

    def _warm_up(self) -> None:
        """Run one throw-away handshake so the first real call does not pay OpenSSL's first-use costs (~3 ms)."""
        cfg = self.config.handshake
        now = time.time()
        offerer = Offerer(self.identity, self.aor, "warm-up@invalid", "warm-up", cfg, now)
        answer, _ = answer_offer(self.identity, "warm-up@invalid", offerer.offer_bytes, cfg, now, NonceCache(1.0))
        offerer.accept_answer(answer, now).wipe()

    def _prune(self) -> None:
        """Forget the legs whose call is over (a long-running listener must not keep every call it took)."""
        self._legs = [leg for leg in self._legs if leg.call is None or not leg.call.done.is_set() or leg.live]

    def _leg(self) -> Leg:
        assert self.stack is not None
        self._prune()
        context = LegContext(self.stack, self.identity, self.aor, self.config, self.nonces, self.trust, self.probes)
        leg = Leg(context, self.background)
        self._legs.append(leg)
        return leg

    # --- outgoing ----------------------------------------------------------------------------------------

    async def place_call(
        self,
        target_uri: str,
        *,
        source: AudioSource | None,
        sink: AudioSink | None,
        tap_wire: bool = False,
    ) -> ActiveCall:
        """Call ``target_uri``; returns once the call is established or has failed (see ``record.state``)."""
        return await self._leg().place(target_uri, source=source, sink=sink, tap_wire=tap_wire)

    def cancel_pending(self) -> bool:
        """Hang up the outgoing call that is still ringing (CANCEL); True if there was one."""
        return any(leg.cancel() for leg in self._legs if leg.ringing)

    # --- incoming ----------------------------------------------------------------------------------------

    async def next_incoming(self) -> IncomingCall:
        assert self.stack is not None
        return await self.stack.incoming.get()

    async def ring(self, incoming: IncomingCall, seconds: float) -> str | None:
        """Ring for up to ``seconds`` without answering: the key exchange in a 183 (sealed early media: we send
        silence, play nothing), the caller's SAS reveal, then our ring point (180, and our own reveal, so the
        caller sees the SAS only for a call that rang here). Returns the caller's reason if it gave up meanwhile,
        else None; ``answer`` then picks up (or reports the refusal, if the offer was refused)."""
        leg = self._leg()
        self._early[incoming.call_id] = leg
        call = await leg.progress(incoming, source=SilenceSource(), sink=None)
        if not call.record.finished:
            await leg.wait_sas(SAS_WAIT_S)
        if leg.reveal_point() is RevealPoint.RING:
            leg.reveal()
        if call.record.state is CallState.EARLY:
            incoming.ring()  # 180 in the same early dialog: the phone rings now
        if not call.record.finished:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(call.done.wait(), seconds)
        if call.record.finished and call.record.security is not Security.REFUSED:
            return call.record.reason or "cancelled"  # ``missed`` reports it
        return None

    async def answer(
        self,
        incoming: IncomingCall,
        *,
        source: AudioSource | None,
        sink: AudioSink | None,
        tap_wire: bool = False,
    ) -> ActiveCall:
        """Answer: pick up a call that ``ring`` keeps ringing, or verify the offer and answer at once (an
        auto-answering callee reveals its SAS contribution only after its 200 OK). Returns the call,
        established or failed (refused with 488 + Warning, or given up)."""
        leg = self._early.pop(incoming.call_id, None)
        if leg is None:
            return await self._leg().answer(incoming, source=source, sink=sink, tap_wire=tap_wire)
        call = leg.call
        assert call is not None
        if not call.record.finished:
            if call.media is not None and call.media.running:
                call.media.attach(source, sink)
            await leg.accept()
            leg.reveal()
        return call

    def ringing_call(self, incoming: IncomingCall) -> ActiveCall | None:
        """The call ``ring`` keeps ringing (its record: the signed AOR, trust state and SAS once known), if any."""
        leg = self._early.get(incoming.call_id)
        return None if leg is None else leg.call

    async def decline(
        self, incoming: IncomingCall, code: int, phrase: str, cause: tuple[int, str] | None = None
    ) -> ActiveCall:
        """Refuse a call that ``ring`` keeps ringing, by hand (603 Decline, 486 Busy Here...): the caller gets
        ``code`` as itself. Returns the call once its early dialog has ended (keys and media gone)."""
        leg = self._early.pop(incoming.call_id, None)
        if leg is None or leg.call is None:
            incoming.reject(code, phrase, None)
            return self.missed(incoming, f"{code} {phrase}")
        leg.decline(code, phrase, cause)
        await leg.close()
        call = leg.call
        if not call.record.finished:  # the stack sent the final status; the early dialog is over for us too
            call.record.apply(CallEvent.HUNG_UP)
        call.done.set()
        return call

    def missed(self, incoming: IncomingCall, reason: str) -> ActiveCall:
        """Record an incoming call that ended before we answered it (the caller cancelled): the record of its early
        dialog if it rang here (its security, its SAS), with ``reason``."""
        leg = self._early.pop(incoming.call_id, None)
        if leg is not None and leg.call is not None and leg.call.record.finished:
            leg.call.record.reason = reason
            return leg.call
        rec = incoming_record(incoming, self.aor)
        rec.apply(CallEvent.HUNG_UP)
        rec.reason = reason
        call = ActiveCall(rec, sip=incoming)
        call.done.set()
        return call

    # --- one call at a time --------------------------------------------------------------------------------

    def refuse_busy(self, incoming: IncomingCall) -> None:
        """486 Busy Here (RFC 3261 21.4.24): we are in another call."""
        _busy_log("busy", logging.INFO, "call %s from %s refused: 486 Busy Here (in a call)", incoming.call_id,
                  incoming.from_aor)  # fmt: skip
        incoming.reject(486, "Busy Here", BUSY_WARNING)

    async def refuse_while_busy(
        self, current: IncomingCall | None = None, next_calls: list[IncomingCall] | None = None
    ) -> None:
        """Answer 486 Busy Here to every new INVITE until cancelled (while in a call). With ``next_calls``, an
        INVITE that arrives after ``current`` has ended goes there instead, and refusing stops: the phone is free
        again, only still cleaning up."""
        while True:
            incoming = await self.next_incoming()
            if next_calls is not None and current is not None and current.finished:
                next_calls.append(incoming)
                return
            self.refuse_busy(incoming)

    def refuse_queued(self) -> None:
        """At exit: the INVITEs still queued get 486 too (the stack would end them with 487 as it stops)."""
        if self.stack is None:
            return
        queue = self.stack.incoming
        while not queue.empty():
            self.refuse_busy(queue.get_nowait())


__all__ = ["BUSY_WARNING", "ActiveCall", "IncomingCall", "Phone", "RegistrationFailed"]
