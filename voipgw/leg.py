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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ratchet.aor import normalize_aor
from ratchet.events import SasCommitmentFailed, SasReady
from ratchet.fingerprint import safety_number
from ratchet.handshake import NonceCache, Offerer, encode_attribute
from ratchet.identity import IdentityKey
from ratchet.params import SUITE_NAMES, SessionKeys
from ratchet.session import MediaSession
from voipgw.audio.codecs import CodecInfo, get_codec
from voipgw.audio.sources import AudioSink, AudioSource
from voipgw.call import CallEvent, CallRecord, Security
from voipgw.config import PhoneConfig, Policy
from voipgw.media import MediaError, MediaStream, PlainProtector
from voipgw.negotiate import (
    Refusal,
    Rejected,
    TrustRefusal,
    decide_answer,
    decide_offer,
    telephone_event_pt,
    trust_outcome,
)
from voipgw.portrange import bind_media
from voipgw.rtp.dtmf import DEFAULT_DURATION_MS
from voipgw.sdp import (
    DEFAULT_TELEPHONE_EVENT_PT,
    PLAIN_CODECS,
    SECURE_CODECS,
    AudioDescription,
    Codec,
    build_sdp,
    offer_codecs,
)
from voipgw.sip import Answered, Ended, Failed, IncomingCall, OutgoingCall, RateLimitedLog, Ringing, SipCall, SipStack
from voipgw.trust import TrustState, TrustStore, TrustVerdict

log = logging.getLogger("voipgw.phone")  # the name operators filter on since the engine lived in phone.py
_refusals = RateLimitedLog(log)
"""Refused INVITEs: a flood must not flood the log (one line per kind per interval; the call records count each)."""

MAX_RECORDED_DTMF = 1000
ANSWER_REFUSED = "voipgw: answer refused: "
"""Starts the BYE Reason of an offerer that refused our answer (its key exchange, trust or policy): the answerer
then records the call as refused, not as a secure call that merely ended."""
FOLLOW_STOP_WAIT_S = 2.0

CodecFactory = Callable[[Codec, bool], CodecInfo]
"""The media codec for a negotiated SDP codec and whether the call is sealed (the gateway's pass-through codec)."""


def default_codec(codec: Codec, secure: bool) -> CodecInfo:
    """The registry's codec for the negotiated one (a softphone's media, sealed or not)."""
    return get_codec(codec.name)


class Spawner:
    """Background work of one owner (contact-store writes, the late safety number): spawned, and awaited
    (bounded) before the owner closes what that work uses."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, timeout_s: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)


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

    @property
    def rtp_host(self) -> str:
        return self.config.rtp_host or self.config.listen_host


class SecureProtector:
    """Adapts a ratchet MediaSession to voipgw.media's FrameProtector seam."""

    secure = True

    def __init__(self, session: MediaSession) -> None:
        self.session = session
        self.seal = session.seal
        self.open = session.open
        self.seal_event = session.seal_event
        self.open_event = session.open_event

    @property
    def last_index(self) -> int:
        return self.session.last_index


@dataclass
class ActiveCall:
    """A call in progress (or just finished): its record, its SIP dialog, its media."""

    record: CallRecord
    sip: SipCall | None = None
    media: MediaStream | None = None
    session: MediaSession | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    wire_tap: list[bytes] | None = None
    dtmf_received: list[str] = field(default_factory=list)
    """Every DTMF digit received in this call, in order (also on ``media.dtmf`` as they arrive)."""

    def poll_session_events(self) -> None:
        """Fold ratchet events (SAS ready, commitment failure) into the record."""
        if self.session is None:
            return
        while (ev := self.session.next_event()) is not None:
            if isinstance(ev, SasReady):
                self.record.sas = ev.sas.b32
                self.record.sas_words = ev.sas.words
                log.info("call %s: SAS %s (%s %s)", self.record.call_id, ev.sas.b32, *ev.sas.words)
            elif isinstance(ev, SasCommitmentFailed):
                log.error("call %s: the peer's SAS reveal contradicts its signed commitment", self.record.call_id)
                self.record.reason = "sas-commitment-mismatch: possible man in the middle"
                self.hangup("voipgw: the SAS reveal contradicts its commitment (possible man in the middle)")

    def note_dtmf(self, digit: str) -> None:
        if len(self.dtmf_received) < MAX_RECORDED_DTMF:  # a peer sending digits forever cannot grow this
            self.dtmf_received.append(digit)

    def send_dtmf(self, digits: str, duration_ms: int = DEFAULT_DURATION_MS) -> None:
        """Queue DTMF digits (0-9 * # A-D) as RFC 4733 events, sealed like the audio on a secure call.

        Raises voipgw.rtp.dtmf.DtmfError for a bad digit or duration, MediaError if the call has no media or
        the peer did not negotiate telephone-event. ``await call.media.dtmf_sent()`` waits until they left."""
        if self.media is None:
            raise MediaError("the call has no media")
        self.media.send_dtmf(digits, duration_ms)

    def hangup(self, why: str | None = None) -> None:
        """End the call; ``why`` travels to the peer in the BYE's Reason header."""
        if self.sip is not None and not self.record.finished:
            with contextlib.suppress(Exception):
                self.sip.hangup(why)

    def stats(self) -> dict[str, object]:
        media = self.media.stats if self.media is not None else None
        return {
            "frames_sent": media.frames_sent if media else 0,
            "frames_received": media.frames_received if media else 0,
            "frames_opened": media.frames_opened if media else 0,
            "frames_refused": media.frames_refused if media else 0,
            "refused_by_reason": dict(media.refused) if media else {},
            "frames_played": media.frames_played if media else 0,
            "frames_concealed": media.frames_concealed if media else 0,
            "frames_silent": media.frames_silent if media else 0,
            "decode_failures": media.decode_failures if media else 0,
            "ticks_skipped": media.ticks_skipped if media else 0,
            "dtmf_in": media.dtmf_in if media else 0,
            "dtmf_received": "".join(self.dtmf_received),
            "dtmf_out": media.dtmf_out if media else 0,
            "jitter_trimmed": self.media.jitter.stats.trimmed if self.media is not None else 0,
            "ratchet_local_epoch": self.session.stats.local_epoch if self.session else 0,
            "ratchet_peer_epoch": self.session.stats.peer_epoch if self.session else 0,
        }


def incoming_record(incoming: IncomingCall, local_aor: str) -> CallRecord:
    """The record of an INVITE we received (not yet answered)."""
    rec = CallRecord(
        call_id=incoming.call_id,
        direction="incoming",
        local_aor=local_aor,
        remote_aor=normalize_aor(incoming.from_aor),
    )
    rec.apply(CallEvent.RECEIVE_INVITE)
    return rec


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
            _tap(call, stream)
        offer = _Offer()
        # Only a policy that may end up NOT SECURE offers G.711: a secure call is Opus only.
        codecs = offer_codecs(SECURE_CODECS if cfg.policy is Policy.REQUIRE else PLAIN_CODECS)

        def offer_factory(call_id: str) -> str:
            rec.call_id = call_id
            if not cfg.e2e:
                return build_sdp(ctx.rtp_host, stream.local[1], codecs, telephone_event_pt=DEFAULT_TELEPHONE_EVENT_PT)
            t = time.perf_counter()
            offer.offerer = Offerer(ctx.identity, ctx.aor, remote_aor, call_id, cfg.offer_handshake, time.time())
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
        try:
            while True:
                ev = await sip.next_event()
                if isinstance(ev, Ringing):
                    rec.apply(CallEvent.RINGING)
                elif isinstance(ev, Failed):
                    rec.apply(CallEvent.REFUSED)
                    reason = f"{ev.code} {ev.reason}" + (f" ({ev.warning})" if ev.warning else "")
                    rec.reason = f"{rec.reason}: {reason}" if rec.reason == "cancelled" else reason
                    return
                elif isinstance(ev, Ended):
                    rec.apply(CallEvent.HUNG_UP)
                    rec.reason = rec.reason or ev.reason
                    return
                elif isinstance(ev, Answered):
                    rec.setup_ms = (time.monotonic() - t_invite) * 1e3
                    await self._on_answer(call, offer, ev.remote_sdp, source, sink)
                    return
        finally:
            offer.close()  # idempotent; a settled key exchange has dropped its secrets already

    async def _on_answer(
        self, call: ActiveCall, offer: _Offer, answer_sdp: str, source: AudioSource | None, sink: AudioSink | None
    ) -> None:
        rec = call.record
        t = time.perf_counter()
        pinned = await self._pinned(rec.remote_aor)
        decision = decide_answer(answer_sdp, self.context.config, offer.offerer, rec.remote_aor, time.time(), pinned)
        if isinstance(decision, Rejected):
            self._refuse_established(call, decision.reason)
            return
        keys = decision.keys
        if keys is None:
            rec.apply(CallEvent.ANSWERED, security=Security.NOT_SECURE)
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
            rec.apply(CallEvent.ANSWERED, security=outcome)
            self._note_keys(rec, keys, verdict)
            self._open_session(call, keys, outcome)
        rec.codec = decision.codec.name
        rec.started_at = time.time()
        await self._start_media(call, decision.remote, decision.codec, source, sink)

    def _refuse_established(self, call: ActiveCall, reason: str, *, public: str | None = None) -> None:
        """The dialog exists (200 OK arrived) but policy forbids media: BYE at once, no audio ever. The BYE's
        Reason carries ``public`` if given (``reason`` may hold detail that must stay here)."""
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
        """Verify the offer and answer (or refuse with 488 + Warning). Returns the call, established or failed."""
        ctx = self.context
        t_received = time.monotonic()
        rec = incoming_record(incoming, ctx.aor)
        call = self.call = ActiveCall(rec, sip=incoming)
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
        keys, verdict = decision.keys, None
        security = Security.NOT_SECURE
        if keys is not None:
            rec.handshake_ms = (time.perf_counter() - t) * 1e3
            verdict = await self._verdict(keys)
            outcome = trust_outcome(verdict)
            if isinstance(outcome, TrustRefusal):
                keys.wipe()
                if outcome.warning:
                    _refusals("identity", logging.ERROR, "%s", outcome.warning)
                rec.trust_warning = outcome.warning
                refusal = Refusal(488, "Not Acceptable Here", f"voipgw: {outcome.public}")
                return self._reject(call, incoming, refusal, detail=f"voipgw: {outcome.reason}")
            security = outcome
        stream = await bind_media(ctx.rtp_host, ctx.config.rtp_ports, rtcp=False)  # see RtpEndpoint.open
        call.media = stream
        if tap_wire:
            _tap(call, stream)
        codec = decision.codec
        sdp = build_sdp(
            ctx.rtp_host,
            stream.local[1],
            [codec],
            handshake=decision.answer_attribute,
            telephone_event_pt=decision.telephone_event_pt,
        )
        if keys is not None:
            self._note_keys(rec, keys, verdict)
            self._open_session(call, keys, security)
        else:
            log.warning(
                "call %s from %s is NOT SECURE (opportunistic policy), codec %s",
                rec.call_id,
                rec.remote_aor,
                codec.name,
            )
        rec.codec = codec.name
        self.live = True
        # Media starts before the 200 OK leaves, so the first RTP packet in either direction is sealed.
        await self._start_media(call, decision.remote, codec, source, sink)
        incoming.answer(sdp)
        rec.apply(CallEvent.ANSWERED, security=security)
        rec.setup_ms = (time.monotonic() - t_received) * 1e3
        rec.started_at = time.time()
        self._following = asyncio.get_running_loop().create_task(self._follow(call))
        return call

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
        """Follow an established call's SIP events until it ends (or its media has been silent too long)."""
        assert call.sip is not None
        rec = call.record
        timeout_s = self.context.config.media_timeout_s
        heard, quiet_since = -1, time.monotonic()
        try:
            while not rec.finished:
                try:
                    ev = await call.sip.next_event(timeout=0.2)
                except TimeoutError:
                    call.poll_session_events()
                    opened = call.media.stats.frames_opened if call.media is not None else 0
                    now = time.monotonic()
                    if opened != heard:
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
                    refused = _answer_refused(call, ev)
                    rec.apply(CallEvent.REFUSED if refused else CallEvent.HUNG_UP)
                    if refused:
                        log.warning("call %s with %s refused by the peer: %s", rec.call_id, rec.remote_aor, ev.reason)
                    if not rec.reason:
                        rec.reason = ev.reason + (" (by peer)" if isinstance(ev, Ended) and ev.by_remote else "")
        finally:
            call.poll_session_events()
            rec.ended_at = time.time()
            await self._stop_media(call)
            self.live = False
            call.done.set()

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

    def _note_keys(self, rec: CallRecord, keys: SessionKeys, verdict: TrustVerdict | None) -> None:
        rec.remote_identity = keys.remote_identity
        rec.local_identity = keys.local_identity
        rec.suite = SUITE_NAMES[keys.suite]
        if verdict is None:
            self.background.spawn(_late_safety_number(rec, keys.local_identity, keys.remote_identity))
            return
        rec.safety_number = verdict.safety_number
        rec.trust_state = verdict.state.value
        rec.trust_warning = verdict.warning
        if verdict.state is TrustState.KEY_CHANGED:
            log.warning("call %s: %s", rec.call_id, verdict.warning or verdict.reason)

    def _open_session(self, call: ActiveCall, keys: SessionKeys, security: Security) -> None:
        """The sealed media session of a call answered (or about to be answered) under ``security``."""
        rec = call.record
        session = MediaSession(keys, time.monotonic(), self.context.config.media)
        call.session = session
        call.poll_session_events()
        log.info("call %s with %s: %s (%s)", rec.call_id, rec.remote_aor, security.value, rec.suite)
        assert rec.local_identity is not None and rec.remote_identity is not None
        self.background.spawn(self._record_call(rec, rec.local_identity, rec.remote_identity))

    async def _record_call(self, rec: CallRecord, local: bytes, remote: bytes) -> None:
        trust = self.context.trust
        if trust is not None:
            try:
                await asyncio.to_thread(
                    trust.record_call, rec.local_aor, rec.remote_aor, remote, local_key=local, now=time.time()
                )
            except Exception as exc:  # a full disk or a read-only home must not end the call
                log.error("could not record the call with %s in the contact store: %s", rec.remote_aor, exc)

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


async def _late_safety_number(rec: CallRecord, local: bytes, remote: bytes) -> None:
    # 5200 SHA-512 rounds per side (~4 ms): computed after the answer is out, never on the setup path.
    rec.safety_number = await asyncio.to_thread(
        safety_number, local, rec.local_aor.encode(), remote, rec.remote_aor.encode()
    )


def _tap(call: ActiveCall, stream: MediaStream) -> None:
    """Keep a copy of every RTP payload as it arrived from the network (the demo's wire evidence)."""
    tap: list[bytes] = []
    call.wire_tap = tap
    inner = stream.endpoint.on_payload
    assert inner is not None

    def tapped(pkt, addr):  # type: ignore[no-untyped-def]
        if len(tap) < 10_000:
            tap.append(bytes(pkt.payload))
        return inner(pkt, addr)

    stream.endpoint.on_payload = tapped


__all__ = ["ActiveCall", "CodecFactory", "Leg", "LegContext", "SecureProtector", "Spawner", "incoming_record"]
