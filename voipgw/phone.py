"""The softphone role: one SIP stack and one identity; calls placed and received with the signed handshake in
the SDP, then Opus media sealed by the ratchet session (or, under ``opportunistic``, a plain Opus/G.711 call).

Policy is enforced here, before any media starts: under ``require`` a call without a verified key exchange is
refused (488 with a Warning header) or hung up, and no audio is ever sent or played in the clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from ratchet.aor import normalize_aor
from ratchet.errors import HandshakeError
from ratchet.events import SasCommitmentFailed, SasReady
from ratchet.fingerprint import safety_number
from ratchet.handshake import (
    HandshakeConfig,
    NonceCache,
    Offerer,
    answer_offer,
    decode_attribute,
    encode_attribute,
)
from ratchet.identity import IdentityKey
from ratchet.params import DEFAULT_INTERVAL_MS, SUITE_NAMES, SendParams, SessionKeys, Suite
from ratchet.session import MediaConfig, MediaSession
from voipgw.audio.codecs import get_codec
from voipgw.audio.sources import AudioSink, AudioSource
from voipgw.call import CallEvent, CallRecord, Security
from voipgw.media import MediaError, MediaStream, PlainProtector
from voipgw.rtp.dtmf import DEFAULT_DURATION_MS
from voipgw.sdp import (
    DEFAULT_TELEPHONE_EVENT_PT,
    PLAIN_CODECS,
    SECURE_CODECS,
    AudioDescription,
    Codec,
    SdpError,
    build_sdp,
    choose_codec,
    offer_codecs,
    parse_sdp,
)
from voipgw.sip import (
    Answered,
    Ended,
    Failed,
    IncomingCall,
    OutgoingCall,
    RateLimitedLog,
    Registration,
    Ringing,
    SipCall,
    SipStack,
    TcpOptions,
    TlsOptions,
)
from voipgw.trust import KeyChangePolicy, TrustState, TrustStore, TrustVerdict

log = logging.getLogger(__name__)
_refusals = RateLimitedLog(log)
"""Refused INVITEs: a flood must not flood the log (one line per kind per interval; the call records count each)."""

WARN_NO_KEY_EXCHANGE = (
    "voipgw: end-to-end encryption is required here and the offer carries no voipgw key exchange (a=voipgw)"
)
WARN_NO_COMMON_CODEC = "voipgw: no common codec (a secure call needs opus; a plain one opus, PCMU or PCMA)"


TRANSPORTS = ("auto", "udp", "tcp", "tls")
"""PhoneConfig.transport values: UDP+TCP with automatic choice, UDP only, TCP only, TLS only."""


class Policy(enum.Enum):
    REQUIRE = "require"
    OPPORTUNISTIC = "opportunistic"


@dataclass(frozen=True)
class PhoneConfig:
    """Every setting of a softphone (the TOML file and CLI flags map onto this)."""

    aor: str
    """Our address of record, e.g. ``alice@example.org`` (or ``sip:alice@127.0.0.1``)."""
    display_name: str | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = 5080
    rtp_host: str | None = None
    """Address for RTP sockets and the SDP (default: listen_host)."""
    policy: Policy = Policy.REQUIRE
    registrar: tuple[str, int] | None = None
    proxy: tuple[str, int] | None = None
    """Outbound proxy for INVITEs (default: the registrar, if any)."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    register_expires: int = 300
    no_answer_timeout_s: float = 30.0
    media_timeout_s: float = 60.0
    """Hang up an established call after this long without an authenticated frame from the peer (0: never), so a
    peer that died without a BYE does not leave us sealing audio into the void forever."""
    suites: frozenset[Suite] = frozenset({Suite.X25519})
    require_hybrid: bool = False
    """Refuse a call whose key exchange settles on x25519 alone (either role): the peer must speak the
    post-quantum hybrid. Needs the hybrid in ``suites`` and a stream-capable ``transport`` (not "udp")."""
    max_skew_s: float = 60.0
    interval_ms: int = DEFAULT_INTERVAL_MS
    frames_per_key: int = 50
    per_frame_keys: bool = False
    dh_interval_s: float = 30.0
    media_max_skew_ms: int = 2000
    bind_call_id: bool = True
    """Require the handshake's signed Call-ID to equal the SIP Call-ID (turn off behind Call-ID-rewriting B2BUAs)."""
    accept_any_callee: bool = False
    """Accept an answer signed by another AOR than the one called (call forwarding)."""
    key_change_policy: KeyChangePolicy = KeyChangePolicy.BLOCK_IF_VERIFIED
    """What a changed identity key does: block, warn, or block-if-verified (the contact had been verified)."""
    e2e: bool = True
    """Offer the voipgw key exchange. False only for baselines and tests (a plain SIP phone); needs opportunistic."""
    transport: str = "auto"
    """SIP transport: "auto" (UDP and TCP; over 1300 bytes or ``;transport=tcp`` goes TCP), "tcp", "tls" or "udp"."""
    tls_ca_file: str | None = None
    """CA bundle (PEM) that TLS servers must chain to (default: the system's); see voipgw.sip.TlsOptions."""
    tls_pinned_sha256: str | None = None
    """Hex SHA-256 of the TLS server's certificate; replaces CA verification."""
    tls_cert_file: str | None = None
    """Our TLS certificate chain (PEM): needed to listen for TLS; also our client certificate."""
    tls_key_file: str | None = field(default=None, repr=False)
    tls_port: int = 0
    """TLS listening port (0: any free port)."""

    @property
    def tls(self) -> TlsOptions | None:
        """TLS settings when TLS is used or configured, else None (no TLS transport at all)."""
        wanted = (self.tls_ca_file, self.tls_pinned_sha256, self.tls_cert_file)
        if self.transport != "tls" and all(v is None for v in wanted):
            return None
        return TlsOptions(
            ca_file=self.tls_ca_file,
            pinned_sha256=self.tls_pinned_sha256,
            cert_file=self.tls_cert_file,
            key_file=self.tls_key_file,
            port=self.tls_port,
        )

    @property
    def sip_transport(self) -> str | None:
        """The transport forced on our requests (None: per request, by size and target URI)."""
        return self.transport if self.transport in ("tcp", "tls") else None

    @property
    def offer_handshake(self) -> HandshakeConfig:
        """The handshake we offer: over UDP only, without the hybrid suite, whose ~2.7 KB INVITE a UDP path
        would IP-fragment (RFC 3261 18.1.1); the answering side still accepts every configured suite."""
        config = self.handshake
        if self.transport == "udp" and Suite.X25519_MLKEM768 in config.suites:
            return replace(config, suites=frozenset({Suite.X25519}))
        return config

    @property
    def handshake(self) -> HandshakeConfig:
        return HandshakeConfig(
            suites=self.suites,
            max_skew_s=self.max_skew_s,
            send_params=SendParams(frames_per_key=self.frames_per_key, per_frame_keys=self.per_frame_keys),
            interval_ms=self.interval_ms,
            accept_any_callee=self.accept_any_callee,
            require_hybrid=self.require_hybrid,
        )

    @property
    def media(self) -> MediaConfig:
        return MediaConfig(dh_interval_s=self.dh_interval_s, max_skew_ms=self.media_max_skew_ms)


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


MAX_RECORDED_DTMF = 1000


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
    _pump: asyncio.Task[None] | None = None

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


class Phone:
    """A softphone on one SIP stack. ``await start()``, then ``place_call`` / ``accept``; ``await stop()``."""

    def __init__(self, config: PhoneConfig, identity: IdentityKey, trust: TrustStore | None = None) -> None:
        self.config = config
        self.identity = identity
        self.aor = normalize_aor(config.aor)
        self.stack: SipStack | None = None
        self.registration: Registration | None = None
        self.calls: list[ActiveCall] = []
        self.pending: ActiveCall | None = None
        self._nonces = NonceCache(max_skew_s=config.max_skew_s)
        self.trust = trust
        """Contact store and key-continuity policy; None = no store (every call is secure, unverified)."""
        self._background: set[asyncio.Task[None]] = set()

    @property
    def rtp_host(self) -> str:
        return self.config.rtp_host or self.config.listen_host

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
        for call in list(self.calls):
            call.hangup()
        for call in list(self.calls):
            if call._pump is not None:
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(call._pump), 2.0)
            await self._stop_media(call)
        if self._background:
            await asyncio.wait(set(self._background), timeout=5.0)
        if self.registration is not None:
            with contextlib.suppress(Exception):
                await self.registration.unregister()
        if self.stack is not None:
            await self.stack.stop()

    def _warm_up(self) -> None:
        """Run one throw-away handshake so the first real call does not pay OpenSSL's first-use costs (~3 ms)."""
        cfg = self.config.handshake
        now = time.time()
        offerer = Offerer(self.identity, self.aor, "warm-up@invalid", "warm-up", cfg, now)
        answer, _ = answer_offer(self.identity, "warm-up@invalid", offerer.offer_bytes, cfg, now, NonceCache(1.0))
        offerer.accept_answer(answer, now).wipe()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _verdict(self, keys: SessionKeys) -> TrustVerdict | None:
        """Key continuity for the peer (TOFU, known, changed); in a thread, since a first contact writes SQLite."""
        if self.trust is None:
            return None
        return await asyncio.to_thread(
            self.trust.evaluate,
            keys.local_aor,
            keys.remote_aor,
            keys.remote_identity,
            local_key=keys.local_identity,
            now=time.time(),
        )

    async def _late_safety_number(self, rec: CallRecord, local: bytes, remote: bytes) -> None:
        # 5200 SHA-512 rounds per side (~4 ms): computed after the answer is out, never on the setup path.
        rec.safety_number = await asyncio.to_thread(
            safety_number, local, rec.local_aor.encode(), remote, rec.remote_aor.encode()
        )

    async def _record_call(self, rec: CallRecord, local: bytes, remote: bytes) -> None:
        if self.trust is not None:
            try:
                await asyncio.to_thread(
                    self.trust.record_call, rec.local_aor, rec.remote_aor, remote, local_key=local, now=time.time()
                )
            except Exception as exc:  # a full disk or a read-only home must not end the call
                log.error("could not record the call with %s in the contact store: %s", rec.remote_aor, exc)

    # --- helpers -----------------------------------------------------------------------------------------

    def _finish_secure(self, call: ActiveCall, keys: SessionKeys, verdict: TrustVerdict | None) -> MediaSession:
        rec = call.record
        rec.remote_identity = keys.remote_identity
        rec.local_identity = keys.local_identity
        rec.suite = SUITE_NAMES[keys.suite]
        if verdict is None:
            rec.security = Security.SECURE_UNVERIFIED
            self._spawn(self._late_safety_number(rec, keys.local_identity, keys.remote_identity))
        else:
            rec.safety_number = verdict.safety_number
            rec.trust_state = verdict.state.value
            rec.trust_warning = verdict.warning
            if verdict.state is TrustState.KEY_CHANGED:
                rec.security = Security.KEY_CHANGED
                log.warning("call %s: %s", rec.call_id, verdict.warning or verdict.reason)
            else:
                rec.security = Security.SECURE_VERIFIED if verdict.verified else Security.SECURE_UNVERIFIED
        session = MediaSession(keys, time.monotonic(), self.config.media)
        call.session = session
        call.poll_session_events()
        log.info("call %s with %s: %s (%s)", rec.call_id, rec.remote_aor, rec.security.value, rec.suite)
        self._spawn(self._record_call(rec, rec.local_identity, rec.remote_identity))
        return session

    async def _start_media(
        self,
        call: ActiveCall,
        remote: AudioDescription,
        codec: Codec,
        source: AudioSource | None,
        sink: AudioSink | None,
    ) -> None:
        assert call.media is not None
        if call.session is not None:
            protector: SecureProtector | PlainProtector = SecureProtector(call.session)
            insecure = False
        else:
            protector = PlainProtector()
            insecure = True
        await call.media.start(
            protector,
            remote.rtp_address,
            source=source,
            sink=sink,
            allow_insecure=insecure,
            clock=time.monotonic,
            codec=get_codec(codec.name),
            payload_type=codec.payload_type,
        )

    async def _stop_media(self, call: ActiveCall) -> None:
        if call.media is not None:
            await call.media.stop()
        if call.session is not None:
            call.session.close()

    def _tap(self, call: ActiveCall, stream: MediaStream) -> None:
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
        assert self.stack is not None
        cfg = self.config
        remote_aor = normalize_aor(target_uri)
        rec = CallRecord(direction="outgoing", local_aor=self.aor, remote_aor=remote_aor)
        call = ActiveCall(rec)
        stream = await MediaStream.bind(self.rtp_host)
        # Accept our offered telephone-event PT before the answer arrives: the answerer's first digits may
        # come before its 200 OK (the answer then confirms or clears it).
        stream.set_telephone_event(DEFAULT_TELEPHONE_EVENT_PT)
        call.media = stream
        if tap_wire:
            self._tap(call, stream)
        offerer: list[Offerer] = []
        cpu = [0.0]
        # Only a policy that may end up NOT SECURE offers G.711: a secure call is Opus only.
        codecs = offer_codecs(SECURE_CODECS if cfg.policy is Policy.REQUIRE else PLAIN_CODECS)

        def offer_factory(call_id: str) -> str:
            rec.call_id = call_id
            if not cfg.e2e:
                return build_sdp(self.rtp_host, stream.local[1], codecs, telephone_event_pt=DEFAULT_TELEPHONE_EVENT_PT)
            t = time.perf_counter()
            o = Offerer(self.identity, self.aor, remote_aor, call_id, cfg.offer_handshake, time.time())
            cpu[0] += time.perf_counter() - t
            offerer.append(o)
            return build_sdp(
                self.rtp_host,
                stream.local[1],
                codecs,
                handshake=encode_attribute(o.offer_bytes),
                telephone_event_pt=DEFAULT_TELEPHONE_EVENT_PT,
            )

        rec.apply(CallEvent.SEND_INVITE)
        t_invite = time.monotonic()
        try:
            sip = await self.stack.place_call(
                f"sip:{remote_aor}" if not target_uri.startswith("sip") else target_uri,
                f"sip:{self.aor}",
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
        self.calls.append(call)
        self.pending = call
        try:
            await self._await_answer(call, sip, offerer, cpu, t_invite, source, sink)
        finally:
            self.pending = None
        if rec.finished:
            await self._stop_media(call)
            call.done.set()
            self.calls.remove(call)
        else:
            call._pump = asyncio.get_running_loop().create_task(self._pump(call))
        return call

    def cancel_pending(self) -> bool:
        """Hang up the outgoing call that is still ringing (CANCEL); True if there was one."""
        call = self.pending
        if call is None or not isinstance(call.sip, OutgoingCall) or call.record.finished:
            return False
        with contextlib.suppress(Exception):
            call.sip.cancel()
        call.record.reason = "cancelled"
        return True

    async def _await_answer(
        self,
        call: ActiveCall,
        sip: OutgoingCall,
        offerer: list[Offerer],
        cpu: list[float],
        t_invite: float,
        source: AudioSource | None,
        sink: AudioSink | None,
    ) -> None:
        """``offerer`` holds the handshake offer (empty for a plain ``e2e = false`` offer)."""
        rec = call.record
        while True:
            ev = await sip.next_event()
            if isinstance(ev, Ringing):
                rec.apply(CallEvent.RINGING)
            elif isinstance(ev, Failed):
                rec.apply(CallEvent.REFUSED)
                rec.security = Security.REFUSED
                reason = f"{ev.code} {ev.reason}" + (f" ({ev.warning})" if ev.warning else "")
                rec.reason = f"{rec.reason}: {reason}" if rec.reason == "cancelled" else reason
                _close_all(offerer)
                return
            elif isinstance(ev, Ended):
                rec.apply(CallEvent.HUNG_UP)
                rec.reason = rec.reason or ev.reason
                _close_all(offerer)
                return
            elif isinstance(ev, Answered):
                rec.setup_ms = (time.monotonic() - t_invite) * 1e3
                await self._on_answer(call, offerer[0] if offerer else None, ev.remote_sdp, cpu, source, sink)
                return

    async def _on_answer(
        self,
        call: ActiveCall,
        offerer: Offerer | None,
        answer_sdp: str,
        cpu: list[float],
        source: AudioSource | None,
        sink: AudioSink | None,
    ) -> None:
        rec = call.record
        try:
            remote = parse_sdp(answer_sdp)
        except SdpError as exc:
            self._refuse_established(call, f"unusable answer SDP: {exc.reason}")
            _close_all([offerer] if offerer else [])
            return
        if remote.handshake is None or offerer is None:
            _close_all([offerer] if offerer else [])
            if self.config.policy is Policy.REQUIRE:
                self._refuse_established(
                    call, "the peer answered without the voipgw key exchange; hung up (policy: require)"
                )
                return
            if remote.handshake is not None:
                self._refuse_established(call, "the answer carries a voipgw key exchange we did not offer")
                return
            codec = choose_codec(remote.codecs, PLAIN_CODECS)
            if codec is None:
                self._refuse_established(call, "no common codec in the answer")
                return
            rec.apply(CallEvent.ANSWERED)
            rec.security = Security.NOT_SECURE
            log.warning(
                "call %s with %s is NOT SECURE (opportunistic policy), codec %s",
                rec.call_id,
                rec.remote_aor,
                codec.name,
            )
        else:
            codec = choose_codec(remote.codecs, SECURE_CODECS)
            if codec is None:
                offerer.close()
                self._refuse_established(call, "no common codec in the answer (a secure call needs opus)")
                return
            try:
                t = time.perf_counter()
                keys = offerer.accept_answer(
                    decode_attribute(remote.handshake),
                    time.time(),
                    expected_remote_aor=None if self.config.accept_any_callee else rec.remote_aor,
                )
                cpu[0] += time.perf_counter() - t
            except HandshakeError as exc:
                self._refuse_established(call, f"key exchange failed: {exc.reason}")
                return
            rec.handshake_ms = cpu[0] * 1e3
            verdict = await self._verdict(keys)
            if verdict is not None and not verdict.allowed:
                keys.wipe()
                if verdict.warning:
                    log.error("%s", verdict.warning)
                call.record.trust_warning = verdict.warning
                self._refuse_established(call, verdict.reason)
                return
            rec.apply(CallEvent.ANSWERED)
            self._finish_secure(call, keys, verdict)
        rec.codec = codec.name
        rec.started_at = time.time()
        _wire_dtmf(call, remote, codec)
        await self._start_media(call, remote, codec, source, sink)

    def _refuse_established(self, call: ActiveCall, reason: str) -> None:
        """The dialog exists (200 OK arrived) but policy forbids media: BYE at once, no audio ever."""
        rec = call.record
        rec.apply(CallEvent.REFUSED)
        rec.security = Security.REFUSED
        rec.reason = reason
        log.error("call %s with %s refused: %s", rec.call_id, rec.remote_aor, reason)
        if call.sip is not None:  # the record is already terminal, so ActiveCall.hangup() would skip the BYE
            with contextlib.suppress(Exception):
                call.sip.hangup(f"voipgw: {reason}")

    async def _pump(self, call: ActiveCall) -> None:
        """Follow an established call's SIP events until it ends."""
        assert call.sip is not None
        rec = call.record
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
                    elif self.config.media_timeout_s and now - quiet_since >= self.config.media_timeout_s:
                        why = f"no media from the peer for {self.config.media_timeout_s:g} s"
                        log.warning("call %s: %s; hanging up", rec.call_id, why)
                        rec.reason = rec.reason or why
                        call.hangup(f"voipgw: {why}")
                        quiet_since = now
                    continue
                quiet_since = time.monotonic()  # a re-INVITE (hold) or any dialog event: the peer is alive
                if isinstance(ev, Ended | Failed):
                    rec.apply(CallEvent.HUNG_UP)
                    if not rec.reason:
                        rec.reason = ev.reason + (" (by peer)" if isinstance(ev, Ended) and ev.by_remote else "")
        finally:
            call.poll_session_events()
            rec.ended_at = time.time()
            await self._stop_media(call)
            if call in self.calls:
                self.calls.remove(call)
            call.done.set()

    # --- incoming ----------------------------------------------------------------------------------------

    async def next_incoming(self) -> IncomingCall:
        assert self.stack is not None
        return await self.stack.incoming.get()

    async def answer(
        self,
        incoming: IncomingCall,
        *,
        source: AudioSource | None,
        sink: AudioSink | None,
        tap_wire: bool = False,
    ) -> ActiveCall:
        """Verify the offer and answer (or refuse with 488 + Warning). Returns the call, established or failed."""
        cfg = self.config
        t_received = time.monotonic()
        rec = CallRecord(
            call_id=incoming.call_id,
            direction="incoming",
            local_aor=self.aor,
            remote_aor=normalize_aor(incoming.from_aor),
        )
        rec.apply(CallEvent.RECEIVE_INVITE)
        call = ActiveCall(rec, sip=incoming)
        try:
            remote = parse_sdp(incoming.remote_sdp or "")
        except SdpError as exc:
            return self._reject(call, incoming, 488, "Not Acceptable Here", f"voipgw: unusable offer: {exc.reason}")
        keys: SessionKeys | None = None
        verdict: TrustVerdict | None = None
        answer_attr: str | None = None
        secure = remote.handshake is not None and cfg.e2e
        # The policy verdict comes first: a plain offer under require is refused for its missing key exchange,
        # whatever codecs it lists.
        if not secure and cfg.policy is Policy.REQUIRE:
            return self._reject(call, incoming, 488, "Not Acceptable Here", WARN_NO_KEY_EXCHANGE)
        codec = choose_codec(remote.codecs, SECURE_CODECS if secure else PLAIN_CODECS)
        if codec is None:
            return self._reject(call, incoming, 488, "Not Acceptable Here", WARN_NO_COMMON_CODEC)
        if secure:
            assert remote.handshake is not None
            try:
                t = time.perf_counter()
                answer_bytes, keys = answer_offer(
                    self.identity,
                    self.aor,
                    decode_attribute(remote.handshake),
                    cfg.handshake,
                    time.time(),
                    self._nonces,
                    expected_remote_aor=rec.remote_aor,
                    call_id=incoming.call_id if cfg.bind_call_id else None,
                )
                rec.handshake_ms = (time.perf_counter() - t) * 1e3
            except HandshakeError as exc:
                return self._reject(
                    call, incoming, 488, "Not Acceptable Here", f"voipgw: key exchange refused: {exc.reason}"
                )
            answer_attr = encode_attribute(answer_bytes)
            verdict = await self._verdict(keys)
            if verdict is not None and not verdict.allowed:
                keys.wipe()
                if verdict.warning:
                    _refusals("identity", logging.ERROR, "%s", verdict.warning)
                rec.trust_warning = verdict.warning
                return self._reject(call, incoming, 488, "Not Acceptable Here", f"voipgw: {verdict.reason}")
        stream = await MediaStream.bind(self.rtp_host)
        call.media = stream
        if tap_wire:
            self._tap(call, stream)
        # RFC 3264: the answer echoes the offerer's telephone-event payload type (or leaves DTMF out).
        sdp = build_sdp(
            self.rtp_host, stream.local[1], [codec], handshake=answer_attr, telephone_event_pt=_dtmf_pt(remote, codec)
        )
        if keys is not None:
            self._finish_secure(call, keys, verdict)
        else:
            rec.security = Security.NOT_SECURE
            log.warning(
                "call %s from %s is NOT SECURE (opportunistic policy), codec %s",
                rec.call_id,
                rec.remote_aor,
                codec.name,
            )
        rec.codec = codec.name
        self.calls.append(call)
        # Media starts before the 200 OK leaves, so the first RTP packet in either direction is sealed.
        _wire_dtmf(call, remote, codec)
        await self._start_media(call, remote, codec, source, sink)
        incoming.answer(sdp)
        rec.apply(CallEvent.ANSWERED)
        rec.setup_ms = (time.monotonic() - t_received) * 1e3
        rec.started_at = time.time()
        call._pump = asyncio.get_running_loop().create_task(self._pump(call))
        return call

    def missed(self, incoming: IncomingCall, reason: str) -> ActiveCall:
        """Record an incoming call that ended before we answered it (the caller cancelled)."""
        rec = CallRecord(
            call_id=incoming.call_id,
            direction="incoming",
            local_aor=self.aor,
            remote_aor=normalize_aor(incoming.from_aor),
        )
        rec.apply(CallEvent.RECEIVE_INVITE)
        rec.apply(CallEvent.HUNG_UP)
        rec.reason = reason
        call = ActiveCall(rec, sip=incoming)
        call.done.set()
        return call

    def _reject(self, call: ActiveCall, incoming: IncomingCall, code: int, reason: str, warning: str) -> ActiveCall:
        rec = call.record
        rec.apply(CallEvent.REFUSED)
        rec.security = Security.REFUSED
        rec.reason = f"{code} {reason}: {warning}"
        _refusals(f"refuse-{code}", logging.WARNING, "refusing call %s from %s: %s", incoming.call_id, rec.remote_aor,
                  warning)  # fmt: skip
        incoming.reject(code, reason, warning)
        call.done.set()
        return call


def _wire_dtmf(call: ActiveCall, remote: AudioDescription, codec: Codec) -> None:
    """The negotiated telephone-event PT and the received-digit record, set before ``_start_media`` so that a
    subclass overriding it (the gateway's) gets DTMF too."""
    assert call.media is not None
    call.media.on_dtmf = call.note_dtmf
    call.media.set_telephone_event(_dtmf_pt(remote, codec))


def _dtmf_pt(remote: AudioDescription, codec: Codec) -> int | None:
    """The peer's telephone-event payload type if it is usable with ``codec`` (dynamic, not the audio's)."""
    te = remote.telephone_event
    if te is None or not 96 <= te.payload_type <= 127 or te.payload_type == codec.payload_type:
        return None
    return te.payload_type


def _close_all(offerers: list[Offerer]) -> None:
    for o in offerers:
        o.close()


__all__ = ["ActiveCall", "Phone", "PhoneConfig", "Policy", "SecureProtector"]
