"""One call leg, from INVITE to BYE: places or answers one call, starts its media and follows it until it ends,
carrying out ``voipgw.negotiate``'s decisions through the call record. Everything it uses is handed to it (SIP
stack, identity, configuration, trust, replay cache, background tasks, codec): it owns no process resource.

Policy is enforced here, before any media starts: under ``require`` a call without a verified key exchange is
refused (488 with a Warning header) or hung up, and no audio is ever sent or played in the clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ratchet.aor import normalize_aor
from ratchet.events import Notice
from ratchet.handshake import NonceCache, Offerer, encode_attribute
from ratchet.identity import IdentityKey
from ratchet.inband import InbandKind
from ratchet.params import SUITE_NAMES, SessionKeys
from ratchet.session import MediaSession
from voipgw.active_call import ActiveCall, SecureProtector, Spawner, incoming_record, late_safety_number, tap_payloads
from voipgw.audio.codecs import CodecInfo, get_codec
from voipgw.audio.sources import AudioSink, AudioSource
from voipgw.call import CallEvent, CallRecord, CallState, KeyExchange, Security
from voipgw.config import PhoneConfig, Policy
from voipgw.erasure import ZfecCoder
from voipgw.inband_flow import InbandOffer, Keying, callee_wait, caller_exchange
from voipgw.media import PlainProtector
from voipgw.negotiate import (
    INBAND_EARLY,
    Accepted,
    Answer,
    AwaitInband,
    InbandNeeded,
    Refusal,
    Rejected,
    TrustRefusal,
    decide_answer,
    decide_offer,
    early_key_exchange,
    final_matches_early,
    forwarded,
    forwarded_security,
    inband_early,
    telephone_event_pt,
    trust_outcome,
)
from voipgw.portrange import bind_media
from voipgw.probes import EndedBefore, ProbeGuard, RevealPoint
from voipgw.sdp import (
    DEFAULT_TELEPHONE_EVENT_PT,
    PLAIN_CODECS,
    SECURE_CODECS,
    AudioDescription,
    Codec,
    build_sdp,
    offer_codecs,
)
from voipgw.sip import Answered, Ended, Failed, IncomingCall, OutgoingCall, RateLimitedLog, Ringing, SipStack
from voipgw.trust import TrustState, TrustStore, TrustVerdict

log = logging.getLogger("voipgw.phone")  # the name operators filter on since the engine lived in phone.py
_refusals = RateLimitedLog(log)
"""Refused INVITEs: a flood must not flood the log (one line per kind per interval; the call records count each)."""

ANSWER_REFUSED = "voipgw: answer refused: "
"""Starts the BYE Reason of an offerer that refused our answer (its key exchange, trust or policy): the answerer
then records the call as refused, not as a secure call that merely ended."""
FOLLOW_STOP_WAIT_S = 2.0
MAX_FORKS = 4
"""Early dialogs of one forked INVITE we keep: the first 183's is keyed at once, the others if they answer."""
SAS_WAIT_S = 3.0
"""How long a callee in its early dialog waits for the caller's SAS reveal (its first sealed frames, one media
round trip after the 183) before ringing without an SAS."""

CodecFactory = Callable[[Codec, bool], CodecInfo]
"""The media codec for a negotiated SDP codec and whether the call is sealed (the gateway's pass-through codec)."""


def default_codec(codec: Codec, secure: bool) -> CodecInfo:
    """The registry's codec for the negotiated one (a softphone's media, sealed or not)."""
    return get_codec(codec.name)


@dataclass(frozen=True)
class LegContext:
    """What one identity brings to each of its legs (a softphone's, or a gateway user's on the shared stack)."""

    stack: SipStack
    identity: IdentityKey
    aor: str
    """Our normalized AOR."""
    config: PhoneConfig
    nonces: NonceCache
    """The replay cache: one per identity, shared by all its legs."""
    trust: TrustStore | None = None
    """Contact store and key-continuity policy; None = no store (every call is secure, unverified)."""
    probes: ProbeGuard | None = None
    """Unanswered secure calls per peer (SAS probing); one per process. None: not tracked."""

    @property
    def rtp_host(self) -> str:
        return self.config.rtp_host or self.config.listen_host

    @property
    def keying(self) -> Keying:
        return Keying(self.rtp_host, self.config, self.identity, self.aor, self.nonces)


@dataclass
class _Offer:
    """Our side of an outgoing call's key exchange while it rings."""

    offerer: Offerer | None = None
    """None until the INVITE is built, and for a plain (``e2e = false``) offer."""
    cpu_s: float = 0.0
    """CPU spent in our handshake code so far (making the offer)."""

    def close(self) -> None:
        if self.offerer is not None:
            self.offerer.close()


class Leg:
    """One call: ``await place(...)`` or ``await answer(...)`` (each once), then it follows itself until it ends.

    ``live`` is True from the INVITE (sent, or being answered) until the call is over and its media stopped;
    ``ringing`` while an outgoing call waits for its answer (``cancel()`` then sends a CANCEL)."""

    def __init__(self, context: LegContext, background: Spawner, codec_factory: CodecFactory = default_codec) -> None:
        self.context = context
        self.background = background
        self.codec_factory = codec_factory
        self.call: ActiveCall | None = None
        self.live = False
        self.ringing = False
        self._following: asyncio.Task[None] | None = None
        # A callee's answer, kept from progress() to accept():
        self._t_received = 0.0
        self._remote: AudioDescription | None = None
        self._codec: Codec | None = None
        self._source: AudioSource | None = None
        self._sink: AudioSink | None = None

    # --- outgoing ----------------------------------------------------------------------------------------

    async def place(
        self, target_uri: str, *, source: AudioSource | None, sink: AudioSink | None, tap_wire: bool = False
    ) -> ActiveCall:
        """Call ``target_uri``; returns once the call is established or has failed (see ``record.state``)."""
        ctx, cfg = self.context, self.context.config
        remote_aor = normalize_aor(target_uri)
        rec = CallRecord(direction="outgoing", local_aor=ctx.aor, remote_aor=remote_aor)
        call = self.call = ActiveCall(rec)
        stream = await bind_media(ctx.rtp_host, ctx.config.rtp_ports, rtcp=False)  # see RtpEndpoint.open
        # Accept our offered telephone-event PT before the answer arrives: the answerer's first digits may
        # come before its 200 OK (the answer then confirms or clears it).
        stream.set_telephone_event(DEFAULT_TELEPHONE_EVENT_PT)
        call.media = stream
        if tap_wire:
            tap_payloads(call, stream)
        offer = _Offer()
        # Only a policy that may end up NOT SECURE offers G.711: a secure call is Opus only.
        codecs = offer_codecs(SECURE_CODECS if cfg.policy is Policy.REQUIRE else PLAIN_CODECS)

        def offer_factory(call_id: str) -> str:
            rec.call_id = call_id
            if not cfg.e2e:
                return build_sdp(ctx.rtp_host, stream.local[1], codecs, telephone_event_pt=DEFAULT_TELEPHONE_EVENT_PT)
            t = time.perf_counter()
            offer.offerer = Offerer(
                ctx.identity, ctx.aor, remote_aor, call_id, cfg.offer_handshake, time.time(), forks=MAX_FORKS
            )
            offer.cpu_s += time.perf_counter() - t
            return build_sdp(
                ctx.rtp_host,
                stream.local[1],
                codecs,
                handshake=encode_attribute(offer.offerer.offer_bytes),
                telephone_event_pt=DEFAULT_TELEPHONE_EVENT_PT,
            )

        rec.apply(CallEvent.SEND_INVITE)
        t_invite = time.monotonic()
        try:
            sip = await ctx.stack.place_call(
                f"sip:{remote_aor}" if not target_uri.startswith("sip") else target_uri,
                f"sip:{ctx.aor}",
                offer_factory,
                display_name=cfg.display_name,
                proxy=cfg.proxy or cfg.registrar,
                username=cfg.username,
                password=cfg.password,
                timeout_s=cfg.no_answer_timeout_s,
                transport=cfg.sip_transport,
            )
        except Exception:
            await stream.stop()
            raise
        call.sip = sip
        self.live = self.ringing = True
        try:
            await self._await_answer(call, sip, offer, t_invite, source, sink)
        finally:
            self.ringing = False
        if rec.finished:
            call.poll_session_events()  # an early dialog may have revealed the SAS (the far phone rang)
            await self._stop_media(call)
            self.live = False
            call.done.set()
        else:
            self._following = asyncio.get_running_loop().create_task(self._follow(call))
        return call

    def cancel(self) -> bool:
        """Hang up the outgoing call that is still ringing (CANCEL); True if there was one."""
        call = self.call
        if not self.ringing or call is None or not isinstance(call.sip, OutgoingCall) or call.record.finished:
            return False
        with contextlib.suppress(Exception):
            call.sip.cancel()
        call.record.reason = "cancelled"
        return True

    async def _await_answer(
        self,
        call: ActiveCall,
        sip: OutgoingCall,
        offer: _Offer,
        t_invite: float,
        source: AudioSource | None,
        sink: AudioSink | None,
    ) -> None:
        rec = call.record
        forks: dict[str, str] = {}
        """Other early dialogs' 183 SDPs, by To-tag (a forked INVITE): keyed only if one of them answers."""
        try:
            while True:
                ev = await sip.next_event()
                if isinstance(ev, Ringing):
                    attribute = early_key_exchange(ev.remote_sdp) if offer.offerer is not None else None
                    if (
                        attribute is None
                        and offer.offerer is not None
                        and call.inband is None  # one attempt per early dialog; the answer gets its own
                        and rec.state is not CallState.EARLY
                        and inband_early(ev.remote_sdp, self.context.config)
                    ):
                        # A 183 without a=voipgw but with opus: the far end may be voipgw behind a PBX that rebuilt
                        # the SDP (and waits for our offer in the media path before its phone rings).
                        assert ev.remote_sdp is not None
                        await self._on_answer(call, offer, ev.remote_sdp, source, sink, early=True)
                        if rec.finished:
                            return
                        if call.session is not None:
                            call.early_attribute, call.early_dialog = INBAND_EARLY, ev.dialog
                        elif rec.state is not CallState.RINGING:
                            rec.apply(CallEvent.RINGING)
                    elif attribute is not None and call.early_attribute is None and rec.state is not CallState.EARLY:
                        # The key exchange in the early dialog: sealed early media (the callee's ringback) may
                        # play, our SAS reveal goes out, the call is still not answered.
                        assert ev.remote_sdp is not None
                        await self._on_answer(call, offer, ev.remote_sdp, source, sink, early=True)
                        if rec.finished:
                            return
                        call.early_attribute, call.early_dialog = attribute, ev.dialog
                    elif attribute is not None and ev.dialog != call.early_dialog:
                        if len(forks) < MAX_FORKS and ev.remote_sdp is not None:
                            forks.setdefault(ev.dialog, ev.remote_sdp)
                    elif rec.state is not CallState.EARLY:
                        rec.apply(CallEvent.RINGING)
                elif isinstance(ev, Failed):
                    # After the 183 a final error is the far phone's (busy, declined, no answer), not a refusal of
                    # the key exchange: the record keeps the early dialog's security.
                    rec.apply(CallEvent.HUNG_UP if rec.state is CallState.EARLY else CallEvent.REFUSED)
                    call.final_cause = (ev.code, ev.cause or ev.reason)
                    reason = f"{ev.code} {ev.reason}" + (f" ({ev.warning})" if ev.warning else "")
                    rec.reason = f"{rec.reason}: {reason}" if rec.reason == "cancelled" else reason
                    return
                elif isinstance(ev, Ended):
                    rec.apply(CallEvent.HUNG_UP)
                    rec.reason = rec.reason or ev.reason
                    return
                elif isinstance(ev, Answered):
                    rec.setup_ms = (time.monotonic() - t_invite) * 1e3
                    if call.early_attribute is None:
                        await self._on_answer(call, offer, ev.remote_sdp, source, sink)
                        return
                    if ev.dialog and ev.dialog != call.early_dialog:
                        # Another fork of our INVITE answered: its own key exchange, from its 200 or its 183.
                        await self._won_by_fork(call, offer, ev.remote_sdp or forks.get(ev.dialog, ""))
                        return
                    mismatch = final_matches_early(call.early_attribute, ev.remote_sdp)
                    if mismatch is not None:
                        self._refuse_established(call, mismatch.reason)
                        return
                    rec.apply(CallEvent.ANSWERED)
                    rec.started_at = time.time()
                    return
        finally:
            offer.close()  # idempotent; a settled key exchange has dropped its secrets already

    async def _on_answer(
        self,
        call: ActiveCall,
        offer: _Offer,
        answer_sdp: str,
        source: AudioSource | None,
        sink: AudioSink | None,
        *,
        early: bool = False,
    ) -> None:
        """Act on the callee's answer: in its 200 OK, or (``early``) in a 183, which settles the key exchange and
        starts sealed media without answering the call."""
        rec = call.record
        t = time.perf_counter()
        pinned = await self._pinned(rec.remote_aor)
        first = decide_answer(answer_sdp, self.context.config, offer.offerer, rec.remote_aor, time.time(), pinned)
        decision: Accepted | Rejected | None = first if not isinstance(first, InbandNeeded) else None
        if isinstance(first, InbandNeeded):
            assert offer.offerer is not None
            decision = await caller_exchange(call, offer.offerer, first, self.context.config, pinned, early=early)
            t = time.perf_counter()
        if isinstance(decision, Rejected):
            self._refuse_established(call, decision.reason)
            return
        if decision is None or (early and decision.keys is None):
            return  # nothing keyed in the early dialog: wait for the answer (its own attempt), play nothing
        event = CallEvent.EARLY_MEDIA if early else CallEvent.ANSWERED
        keys = decision.keys
        if keys is None:
            rec.apply(event, security=Security.NOT_SECURE)
            log.warning(
                "call %s with %s is NOT SECURE (opportunistic policy), codec %s",
                rec.call_id,
                rec.remote_aor,
                decision.codec.name,
            )
        else:
            rec.handshake_ms = (offer.cpu_s + time.perf_counter() - t) * 1e3
            verdict = await self._verdict(keys)
            outcome = trust_outcome(verdict)
            if isinstance(outcome, TrustRefusal):
                keys.wipe()
                if outcome.warning:
                    log.error("%s", outcome.warning)
                rec.trust_warning = outcome.warning
                self._refuse_established(call, outcome.reason, public=outcome.public)
                return
            outcome = self._note_forwarding(rec, keys, outcome)
            rec.apply(event, security=outcome)
            if rec.key_exchange is KeyExchange.NONE:
                rec.key_exchange, rec.call_id_bound = KeyExchange.SDP, None  # only the callee knows what it bound
            self._note_keys(rec, keys, verdict)
            self._open_session(call, keys, outcome)
        rec.codec = decision.codec.name
        if not early:
            rec.started_at = time.time()
        await self._start_media(call, decision.remote, decision.codec, source, sink)

    async def _won_by_fork(self, call: ActiveCall, offer: _Offer, answer_sdp: str) -> None:
        """A fork other than the one whose 183 we keyed answered (PROTOCOL.md §C.2 "Forking"): its answer is
        verified like any other (the offer accepts one answer per fork), the media switches to its keys and
        address, and the first fork's keys are dropped. A fork may not answer in the clear once one was sealed."""
        rec = call.record
        pinned = await self._pinned(rec.remote_aor)
        decision = decide_answer(answer_sdp, self.context.config, offer.offerer, rec.remote_aor, time.time(), pinned)
        if isinstance(decision, InbandNeeded):
            decision = Rejected("its answer has no a=voipgw")  # a second device must key like the first: in the SDP
        if isinstance(decision, Rejected) or decision.keys is None:
            why = decision.reason if isinstance(decision, Rejected) else "another device answered in the clear"
            self._refuse_established(call, f"forked call: {why}")
            return
        keys = decision.keys
        verdict = await self._verdict(keys)
        outcome = trust_outcome(verdict)
        if isinstance(outcome, TrustRefusal):
            keys.wipe()
            rec.trust_warning = outcome.warning
            self._refuse_established(call, outcome.reason, public=outcome.public)
            return
        old = call.session
        rec.sas, rec.sas_words = None, None  # the winner's SAS: from its own reveal
        outcome = self._note_forwarding(rec, keys, outcome)
        self._note_keys(rec, keys, verdict)
        self._open_session(call, keys, outcome)
        assert call.media is not None and call.session is not None
        call.media.switch(SecureProtector(call.session), decision.remote.rtp_address)
        if old is not None:
            old.close()
        log.info("call %s: answered by another fork of the INVITE; its keys replace the first early dialog's",
                 rec.call_id)  # fmt: skip
        rec.apply(CallEvent.ANSWERED, security=outcome)
        rec.started_at = time.time()

    def _refuse_established(self, call: ActiveCall, reason: str, *, public: str | None = None) -> None:
        """The dialog exists (a 200 OK, or a 183 with the key exchange) but policy forbids media: BYE (CANCEL in
        the early dialog) at once, no audio ever. Its Reason carries ``public`` if given (``reason`` may hold
        detail that must stay here)."""
        rec = call.record
        rec.apply(CallEvent.REFUSED)
        rec.reason = reason
        log.error("call %s with %s refused: %s", rec.call_id, rec.remote_aor, reason)
        if call.sip is not None:  # the record is already terminal, so ActiveCall.hangup() would skip the BYE
            with contextlib.suppress(Exception):
                call.sip.hangup(f"{ANSWER_REFUSED}{public or reason}")

    # --- incoming ----------------------------------------------------------------------------------------

    async def answer(
        self, incoming: IncomingCall, *, source: AudioSource | None, sink: AudioSink | None, tap_wire: bool = False
    ) -> ActiveCall:
        """Answer at once (``--auto-answer``, tests): the early dialog, the caller's SAS reveal (bounded wait),
        the 200 OK, and only then our own reveal, so every SAS guess at an auto-answering callee costs an answered
        call. Returns the call, established or failed (refused with 488 + Warning, or the caller gave up)."""
        call = await self.progress(incoming, source=source, sink=sink, tap_wire=tap_wire)
        if call.record.state is CallState.EARLY:
            await self.wait_sas(SAS_WAIT_S)
        if not call.record.finished:
            await self.accept()
            self.reveal()
        return call

    async def progress(
        self, incoming: IncomingCall, *, source: AudioSource | None, sink: AudioSink | None, tap_wire: bool = False
    ) -> ActiveCall:
        """Verify the offer; refuse it (488 + Warning), or send the answer and the key exchange in a 183 and start
        sealed early media (``source``/``sink`` are what flows meanwhile: a softphone sends silence and plays
        nothing until it answers). The call is then EARLY (a plain call too: NOT SECURE, a 180 and no media
        until the answer), or FAILED. Nothing is answered here: ``accept()`` does that."""
        ctx = self.context
        t_received = time.monotonic()
        rec = incoming_record(incoming, ctx.aor)
        call = self.call = ActiveCall(rec, sip=incoming)
        self._t_received = t_received
        pinned = await self._pinned(rec.remote_aor)
        t = time.perf_counter()
        decision = decide_offer(
            incoming.remote_sdp or "",
            ctx.config,
            ctx.identity,
            ctx.aor,
            rec.remote_aor,
            incoming.call_id,
            ctx.nonces,
            time.time(),
            pinned,
        )
        if isinstance(decision, Refusal):
            return self._reject(call, incoming, decision)
        inband: InbandOffer | None = None
        if isinstance(decision, AwaitInband):
            call.media = await bind_media(ctx.rtp_host, ctx.config.rtp_ports, rtcp=False)  # see RtpEndpoint.open
            if tap_wire:
                tap_payloads(call, call.media)
            waited = await callee_wait(call, incoming, decision, pinned, self.context.keying)
            if isinstance(waited, Refusal):
                return self._reject(call, incoming, waited)
            if waited is None:  # opportunistic, and no offer came: a plain call
                decision = Answer(decision.remote, decision.codec, None, None, decision.telephone_event_pt)
            else:
                inband, decision = waited, waited.answer
            t = time.perf_counter()
        keys, verdict = decision.keys, None
        security = Security.NOT_SECURE
        if keys is not None:
            if inband is not None and keys.remote_aor != rec.remote_aor:
                # A B2BUA presents the caller under its own From; the signed AOR is who is on the line.
                log.info("call %s: the PBX presented the caller as %s; the signed AOR is %s", rec.call_id,
                         rec.remote_aor, keys.remote_aor)  # fmt: skip
                rec.remote_aor = keys.remote_aor
            rec.handshake_ms = (time.perf_counter() - t) * 1e3
            verdict = await self._verdict(keys)
            outcome = trust_outcome(verdict)
            if isinstance(outcome, TrustRefusal):
                keys.wipe()
                if outcome.warning:
                    _refusals("identity", logging.WARNING, "%s", outcome.warning)
                rec.trust_warning = outcome.warning
                refusal = Refusal(488, "Not Acceptable Here", f"voipgw: {outcome.public}")
                return self._reject(call, incoming, refusal, detail=f"voipgw: {outcome.reason}")
            security = outcome
            if decision.called_as is not None:
                rec.called_as = decision.called_as
                security = forwarded_security(security)
                log.warning("call %s: %s (the caller believes it is talking to %s)", rec.call_id,
                            rec.forwarding, decision.called_as)  # fmt: skip
        if incoming.finished:  # the caller gave up while we verified
            if keys is not None:
                keys.wipe()
            rec.apply(CallEvent.HUNG_UP)
            rec.reason = "cancelled by the caller"
            call.done.set()
            return call
        stream = call.media or await bind_media(ctx.rtp_host, ctx.config.rtp_ports, rtcp=False)  # RtpEndpoint.open
        if call.media is None and tap_wire:
            tap_payloads(call, stream)
        call.media = stream
        codec = decision.codec
        call.answer_sdp = build_sdp(
            ctx.rtp_host,
            stream.local[1],
            [codec],
            handshake=decision.answer_attribute,
            telephone_event_pt=decision.telephone_event_pt,
        )
        rec.codec = codec.name
        self.live = True
        self._remote, self._codec = decision.remote, codec
        self._source, self._sink = source, sink
        if keys is None:
            # A plain call (opportunistic): no early media in the clear; its media starts with the answer.
            log.warning("call %s from %s is NOT SECURE (opportunistic policy), codec %s", rec.call_id,
                        rec.remote_aor, codec.name)  # fmt: skip
            if call.inband is not None:
                call.inband.finish()
            incoming.ring()
            rec.apply(CallEvent.EARLY_MEDIA, security=security)
        else:
            rec.key_exchange = KeyExchange.MEDIA if inband is not None else KeyExchange.SDP
            rec.call_id_bound = inband is None and ctx.config.bind_call_id
            self._note_keys(rec, keys, verdict)
            self._open_session(call, keys, security)
            # Media starts before the 183 leaves, so the first RTP packet either way is sealed (in-band: the answer's
            # first burst goes out now, before the media task's first frame, and the caller keys on it).
            await self._start_media(call, decision.remote, codec, source, sink)
            if inband is not None and call.inband is not None:
                link = call.inband
                link.answered(inband.offer_bytes)
                # Repeated until the caller's first sealed frame opens here: that shows the answer arrived.
                link.send(InbandKind.ANSWER, inband.answer_bytes, ctx.config.inband_wait_s,
                          until=lambda: stream.stats.frames_opened > 0)  # fmt: skip
            else:
                incoming.progress(call.answer_sdp)
            rec.apply(CallEvent.EARLY_MEDIA, security=security)
        self._following = asyncio.get_running_loop().create_task(self._follow(call))
        return call

    async def wait_sas(self, timeout_s: float) -> bool:
        """Wait (bounded) for the caller's SAS reveal in the early dialog; True when the SAS is known here."""
        call = self.call
        if call is None or call.session is None:
            return False
        deadline = time.monotonic() + timeout_s
        while call.record.sas is None and not call.record.finished and time.monotonic() < deadline:
            call.poll_session_events()
            await asyncio.sleep(0.005)
        return call.record.sas is not None

    def reveal_point(self) -> RevealPoint:
        """When this callee may reveal its SAS contribution to this caller (``ProbeGuard``)."""
        call, probes = self.call, self.context.probes
        if call is None or probes is None:
            return RevealPoint.RING
        return probes.reveal_point(call.record.remote_aor, call.record.remote_identity, time.time())

    def reveal(self) -> None:
        """Our ring point: reveal our SAS contribution (the caller can compute the SAS from now on). Call it only
        once the phone rings with the SAS on its display, or once the call is answered (docs/PROTOCOL.md §A.6)."""
        call = self.call
        if call is not None and call.session is not None and not call.record.finished:
            call.session.reveal_sas()

    async def accept(self, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Answer (200 OK with the 183's SDP, unchanged, and ``headers``): a person (or auto-answer) picked up."""
        call = self.call
        if call is None or call.record.finished or not isinstance(call.sip, IncomingCall):
            return
        rec = call.record
        assert call.answer_sdp is not None
        if call.session is None and call.media is not None and not call.media.running:
            assert self._remote is not None and self._codec is not None
            await self._start_media(call, self._remote, self._codec, self._source, self._sink)
        if call.record.finished:  # the caller gave up meanwhile
            return
        call.sip.answer(call.answer_sdp, headers)
        rec.apply(CallEvent.ANSWERED)
        rec.setup_ms = (time.monotonic() - self._t_received) * 1e3
        rec.started_at = time.time()

    def decline(self, code: int, phrase: str, cause: tuple[int, str] | None = None, warning: str | None = None) -> None:
        """A final error before the answer (the phone was busy, declined, did not answer): the caller gets this
        status as itself, with ``cause`` as its RFC 3326 Reason. Keys and media go with the call."""
        call = self.call
        if call is None or call.record.finished or not isinstance(call.sip, IncomingCall):
            return
        call.record.reason = call.record.reason or f"{code} {phrase}"
        call.sip.reject(code, phrase, warning, cause=cause)

    def _reject(
        self, call: ActiveCall, incoming: IncomingCall, refusal: Refusal, *, detail: str | None = None
    ) -> ActiveCall:
        """Refuse the INVITE with ``refusal``; the record and the log say ``detail`` instead of its Warning if
        given (what the caller and the PBX must not learn)."""
        rec = call.record
        rec.apply(CallEvent.REFUSED)
        rec.reason = f"{refusal.code} {refusal.phrase}: {detail or refusal.warning}"
        _refusals(f"refuse-{refusal.code}", logging.WARNING, "refusing call %s from %s: %s", incoming.call_id,
                  rec.remote_aor, detail or refusal.warning)  # fmt: skip
        incoming.reject(refusal.code, refusal.phrase, refusal.warning)
        call.done.set()
        return call

    # --- established -------------------------------------------------------------------------------------

    async def _follow(self, call: ActiveCall) -> None:
        """Follow a call's SIP events until it ends (or its media has been silent too long): an answered call, or
        a callee's early dialog, whose 183 stops being repeated once the caller's first sealed frame opened."""
        assert call.sip is not None
        rec = call.record
        timeout_s = self.context.config.media_timeout_s
        heard, quiet_since = -1, time.monotonic()
        acknowledged = False
        try:
            while not rec.finished:
                try:
                    ev = await call.sip.next_event(timeout=0.2)
                except TimeoutError:
                    call.poll_session_events()
                    if rec.state is CallState.ESTABLISHED:
                        call.check_sas_reveal(time.time())
                    opened = call.media.stats.frames_opened if call.media is not None else 0
                    if opened and not acknowledged and isinstance(call.sip, IncomingCall):
                        acknowledged = True  # the caller accepted our 183: it sealed a frame with those keys
                        call.sip.progress_acknowledged()
                    now = time.monotonic()
                    if opened != heard or rec.state is not CallState.ESTABLISHED:
                        heard, quiet_since = opened, now
                    elif timeout_s and now - quiet_since >= timeout_s:
                        why = f"no media from the peer for {timeout_s:g} s"
                        log.warning("call %s: %s; hanging up", rec.call_id, why)
                        rec.reason = rec.reason or why
                        call.hangup(f"voipgw: {why}")
                        quiet_since = now
                    continue
                quiet_since = time.monotonic()  # a re-INVITE (hold) or any dialog event: the peer is alive
                if isinstance(ev, Ended | Failed):
                    early = rec.state is not CallState.ESTABLISHED
                    refused = _answer_refused(call, ev)
                    rec.apply(CallEvent.REFUSED if refused else CallEvent.HUNG_UP)
                    if refused:
                        log.warning("call %s with %s refused by the peer: %s", rec.call_id, rec.remote_aor, ev.reason)
                    if not rec.reason:
                        rec.reason = ev.reason + (" (by peer)" if isinstance(ev, Ended) and ev.by_remote else "")
                    if early and not refused and isinstance(ev, Ended) and ev.by_remote:
                        self._note_unanswered(call)
        finally:
            call.poll_session_events()
            rec.ended_at = time.time()
            await self._stop_media(call)
            self.live = False
            call.done.set()

    def _note_unanswered(self, call: ActiveCall) -> None:
        """A secure call whose caller gave up before anyone answered: what SAS probing looks like (ProbeGuard)."""
        probes, rec = self.context.probes, call.record
        if probes is None or call.session is None:
            return
        stage = EndedBefore.ANSWER if call.revealed else EndedBefore.REVEAL
        if probes.note_unanswered(rec.remote_aor, rec.remote_identity, stage, time.time()):
            _refusals("sas-probe", logging.WARNING,
                      "possible SAS probing: %s (key %s) hung up %d secure calls unanswered within %g s; its next "
                      "calls reveal the SAS only once answered", rec.remote_aor,
                      (rec.remote_identity or b"").hex()[:16], probes.limit + 1, probes.window_s)  # fmt: skip

    async def close(self) -> None:
        """After a hang-up: wait (bounded) for the call to follow itself to its end, and stop its media."""
        if self._following is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._following), FOLLOW_STOP_WAIT_S)
        if self.call is not None:
            await self._stop_media(self.call)

    # --- keys, trust and media ---------------------------------------------------------------------------

    async def _pinned(self, remote_aor: str) -> bool:
        """The contact store holds a key for ``remote_aor`` (it must encrypt, whatever the policy). Asked only
        where the answer can matter: under ``require`` every plain call is refused anyway."""
        ctx = self.context
        if ctx.trust is None or not ctx.config.e2e or ctx.config.policy is Policy.REQUIRE:
            return False
        try:
            return await asyncio.to_thread(ctx.trust.pinned, remote_aor)
        except Exception as exc:  # an unreadable store must not let a known contact downgrade: assume it is pinned
            _refusals("pin-lookup", logging.ERROR, "could not read the contact store for %s (%s); treating it as a "
                      "known contact", remote_aor, exc)  # fmt: skip
            return True

    async def _verdict(self, keys: SessionKeys) -> TrustVerdict | None:
        """Key continuity for the peer (TOFU, known, changed); in a thread, since a first contact writes SQLite."""
        trust = self.context.trust
        if trust is None:
            return None
        return await asyncio.to_thread(
            trust.evaluate,
            keys.local_aor,
            keys.remote_aor,
            keys.remote_identity,
            local_key=keys.local_identity,
            now=time.time(),
        )

    def _note_forwarding(self, rec: CallRecord, keys: SessionKeys, security: Security) -> Security:
        """A caller's answer signed by another AOR than the one dialled (``accept_any_callee``): the record names
        the party that answered, and its verdict is never "verified" for the party the user meant (issue 15)."""
        if not forwarded(rec.remote_aor, keys.remote_aor):
            return security
        rec.answered_by = keys.remote_aor
        log.warning("call %s: %s; compare the SAS with %s", rec.call_id, rec.forwarding, keys.remote_aor)
        return forwarded_security(security)

    def _note_keys(self, rec: CallRecord, keys: SessionKeys, verdict: TrustVerdict | None) -> None:
        rec.remote_identity = keys.remote_identity
        rec.local_identity = keys.local_identity
        rec.suite = SUITE_NAMES[keys.suite]
        if verdict is None:
            self.background.spawn(late_safety_number(rec, keys.local_identity, keys.remote_identity))
            return
        rec.safety_number = verdict.safety_number
        rec.trust_state = verdict.state.value
        rec.trust_warning = verdict.warning
        if verdict.state is TrustState.KEY_CHANGED or verdict.warning:  # a key change, or a look-alike AOR
            log.warning("call %s: %s", rec.call_id, verdict.warning or verdict.reason)

    def _open_session(self, call: ActiveCall, keys: SessionKeys, security: Security) -> None:
        """The sealed media session of a call answered (or about to be answered) under ``security``."""
        rec = call.record
        session = MediaSession(keys, time.monotonic(), self.context.config.media, coder=ZfecCoder())
        call.session = session
        if security is Security.KEY_CHANGED:
            # Tell the side whose key changed, inside the encryption and at once (it may hang up first; a BYE
            # Reason would reach it only if we hung up, and the PBX can strip or forge that).
            session.send_notice(Notice.KEY_CHANGE_SEEN)
        call.poll_session_events()
        note = rec.key_exchange_note
        log.info("call %s with %s: %s (%s%s)", rec.call_id, rec.remote_aor, security.value, rec.suite,
                 f", {note}" if note else "")  # fmt: skip
        assert rec.local_identity is not None and rec.remote_identity is not None
        # Under the AOR that signed, not the one dialled: a forwarded call must not file its key under the dialled
        # contact (the next call to that contact would then look like a key change, or worse, like it).
        self.background.spawn(self._record_call(rec, keys.remote_aor, rec.local_identity, rec.remote_identity))

    async def _record_call(self, rec: CallRecord, remote_aor: str, local: bytes, remote: bytes) -> None:
        trust = self.context.trust
        if trust is not None:
            try:
                await asyncio.to_thread(
                    trust.record_call, rec.local_aor, remote_aor, remote, local_key=local, now=time.time()
                )
            except Exception as exc:  # a full disk or a read-only home must not end the call
                log.error("could not record the call with %s in the contact store: %s", remote_aor, exc)

    async def _start_media(
        self,
        call: ActiveCall,
        remote: AudioDescription,
        codec: Codec,
        source: AudioSource | None,
        sink: AudioSink | None,
    ) -> None:
        assert call.media is not None
        call.media.on_dtmf = call.note_dtmf
        call.media.set_telephone_event(telephone_event_pt(remote, codec))
        secure = call.session is not None
        protector: SecureProtector | PlainProtector = (
            SecureProtector(call.session) if call.session is not None else PlainProtector()
        )
        await call.media.start(
            protector,
            remote.rtp_address,
            source=source,
            sink=sink,
            allow_insecure=not secure,
            clock=time.monotonic,
            codec=self.codec_factory(codec, secure),
            payload_type=codec.payload_type,
        )

    async def _stop_media(self, call: ActiveCall) -> None:
        if call.media is not None:
            await call.media.stop()
        if call.session is not None:
            call.session.close()


def _answer_refused(call: ActiveCall, ev: Ended | Failed) -> bool:
    """The peer hung up because it refused our answer (tampered on the way, a key it blocks): it says so in the
    BYE, and no frame of it ever opened here. A forged BYE can only end the call, which any BYE can."""
    opened = call.media.stats.frames_opened if call.media is not None else 0
    return isinstance(ev, Ended) and ev.by_remote and ANSWER_REFUSED in ev.reason and opened == 0


__all__ = ["ActiveCall", "CodecFactory", "Leg", "LegContext", "SecureProtector", "Spawner", "incoming_record"]
