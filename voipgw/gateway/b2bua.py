"""The gateway's B2BUA: routes each INVITE to an outbound or inbound bridge, drives both legs from setup to
BYE, and never lets inside audio out unless the outside leg is a sealed voipgw call (policy ``require``)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from ratchet.aor import normalize_aor
from ratchet.handshake import NonceCache
from ratchet.identity import IdentityKey
from ratchet.params import Suite
from voipgw.audio.codecs import OPUS as OPUS_CODEC
from voipgw.audio.codecs import CodecInfo, get_codec
from voipgw.call import BridgeState, CallEvent, CallRecord, CallState, Security
from voipgw.config import PhoneConfig, Policy
from voipgw.gateway.hooks import B2buaHooks
from voipgw.gateway.model import B2buaSettings, Bridge, InsideUser, security_label
from voipgw.gateway.pipes import switch_codec
from voipgw.gateway.routing import Inbound, Outbound, Refuse, RoutePlan, route
from voipgw.gateway.statuses import SIP_PHRASES, code_of
from voipgw.gateway.tones import NOT_SECURE_CUE, SECURE_CUE, play_cue, play_ringback
from voipgw.leg import Leg, LegContext, incoming_record
from voipgw.media import MediaError, MediaStream, PlainProtector
from voipgw.negotiate import telephone_event_pt
from voipgw.rtp.dtmf import DtmfError
from voipgw.sdp import (
    INACTIVE,
    PCMA,
    PCMU,
    RECVONLY,
    SENDONLY,
    SENDRECV,
    AudioDescription,
    Codec,
    SdpError,
    build_sdp,
    hold_direction,
    opus_codec,
    parse_sdp,
)
from voipgw.sip import (
    Answered,
    Ended,
    Failed,
    IncomingCall,
    OutgoingCall,
    RateLimitedLog,
    Ringing,
    SipCall,
    SipStack,
    TcpOptions,
    TlsOptions,
)
from voipgw.sip.uri import user_part
from voipgw.store.contacts import ContactStoreError
from voipgw.trust import TrustStore

log = logging.getLogger(__name__)
_refusals = RateLimitedLog(log)
"""Refused INVITEs are logged through this (one line per kind per interval) and counted in ``refused_invites``:
a flood of INVITEs to an unknown user, or refused by policy, must not flood the log."""

G722 = "g722"
INSIDE_CODECS = (PCMU, PCMA, G722, "opus")
"""Codecs the inside leg accepts; the inside phone's own order decides among them."""
INSIDE_OFFER = [opus_codec(), Codec(G722, 9, 8000), Codec(PCMU, 0, 8000), Codec(PCMA, 8, 8000)]
"""What the gateway offers an inside phone it rings: Opus first (passed through untouched), then the best
transcoded one."""
INSIDE_EVENT_PT = 101
"""The telephone-event payload type the gateway offers an inside phone it rings (DTMF is bridged both ways)."""
FINISHED_KEPT = 100
MEDIA_POLL_S = 1.0


class Gateway:
    """``await start()``; incoming INVITEs are routed by who sent them; ``snapshot()``; ``await stop()``.

    Routing (``voipgw.gateway.routing.route``): an INVITE from an inside phone's address (and From user) is
    outbound; any other INVITE is inbound, for the inside user named in its To.

    Policy: ``config.policy_for(user, far AOR)``. Under ``require`` a far end without the key exchange is refused
    with the reason; under ``opportunistic`` the call goes through in the clear, marked NOT SECURE everywhere.

    Outbound (inside phone -> outside): 180 to the phone at once (it plays its own ringback; outside early media
    is never relayed), then the outside INVITE; the phone's 200 OK follows the outside 200 OK (and its SAS, which
    the offerer knows at once), and the phone then hears a short cue: two rising beeps when sealed, three low ones
    when NOT SECURE (it cannot show a display name change). An outside failure, or an answer without the key
    exchange under ``require``, becomes the phone's final response (488 + Warning with the reason).

    Inbound (outside -> inside phone): the outside leg is verified and ANSWERED FIRST, then the gateway waits
    (up to ``sas_wait_s``) for the caller's SAS reveal, which only travels in the caller's first media frames,
    and only then rings the inside phone with ``From: "Name [E2E sas]"``. Unmodified phones show the From display
    name while ringing and cannot update it later, so this is the only order that puts the SAS on their screen.
    The price: the outside caller sees the call answered while the inside phone rings (it hears a ringback we
    generate and seal, and what it says meanwhile is dropped); a decline or no-answer inside then ends the
    outside call with a BYE whose Reason says so.

    Up: hold/resume re-INVITEs are answered per leg and passed to the other (no new handshake outside), RFC 4733
    digits cross both ways, and a leg without RTP for ``media_timeout_s`` (nobody holding) ends the call.
    """

    hooks: B2buaHooks | None = None
    """Operations hooks (voipgw.gateway.hooks): metrics, PBX credentials, registered inside phones."""

    def __init__(
        self,
        config: B2buaSettings,
        identities: dict[str, IdentityKey],
        trust: dict[str, TrustStore] | None = None,
    ) -> None:
        missing = [u.name for u in config.users if u.name not in identities]
        if missing:
            raise ValueError(f"no identity for inside user(s) {', '.join(missing)}")
        self.config = config
        self.identities = identities
        self.trust = trust or {}
        self.users = {u.name: u for u in config.users}
        self.stack: SipStack | None = None
        self.bridges: list[Bridge] = []
        self.finished: collections.deque[Bridge] = collections.deque(maxlen=FINISHED_KEPT)
        self._nonces: dict[str, NonceCache] = {}
        """One replay cache per identity, shared by all that user's outside legs."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._accept: asyncio.Task[None] | None = None
        self._rtp_malformed_done: collections.Counter[str] = collections.Counter()
        """RTP malformed-by-reason of every finished call (its media sockets are closed; the counts stay)."""
        self._routing: RoutePlan | None = None
        self.refused_invites: collections.Counter[int] = collections.Counter()
        """Every INVITE the gateway (or its outside leg's key exchange or policy) refused, by status code."""

    @property
    def port(self) -> int:
        assert self.stack is not None
        return self.stack.local_port

    async def start(self) -> None:
        registrar = self.hooks.inside_registrar() if self.hooks is not None else None
        transport = self.config.outside_transport
        self.stack = SipStack(
            self.config.listen_host,
            self.config.listen_port,
            asyncio.get_running_loop(),
            registrar=registrar,
            tcp=TcpOptions() if transport in ("auto", "tcp") else None,
            tls=(self.config.outside_tls or TlsOptions()) if transport == "tls" else None,
        )
        await self.stack.start()
        if self.hooks is not None:
            self.hooks.stack_started(self.stack)
        for user in self.config.users:
            self._nonces[user.name] = NonceCache(max_skew_s=self._phone_config(user, Policy.REQUIRE).max_skew_s)
        cfg, inside = self.config, self.hooks.inside_routing() if self.hooks is not None else None
        self._routing = RoutePlan(self.users, (cfg.listen_host, self.port), cfg.routes, cfg.outside_proxy, inside)
        self._accept = asyncio.get_running_loop().create_task(self._accept_loop())
        log.info(
            "gateway listening on udp:%s:%d for %d user(s); outside SIP over %s",
            self.config.listen_host, self.port, len(self.users), self.config.outside_transport,
        )  # fmt: skip

    async def stop(self) -> None:
        """BYE (or CANCEL) every call on both legs, then close the SIP stack."""
        if self._accept is not None:
            self._accept.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept
        for bridge in list(self.bridges):
            self._end(bridge, "gateway shutdown")
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        if self.stack is not None:
            await self.stack.stop()

    def snapshot(self) -> dict[str, Any]:
        """Active and recently finished calls with security state, SAS, codecs and frame counters (JSON-ready)."""
        return {
            "listen": f"{self.config.listen_host}:{self.stack.local_port if self.stack else self.config.listen_port}",
            "users": [
                {"name": u.name, "outside_aor": u.outside_aor, "contact": u.contact} for u in self.users.values()
            ],
            "calls": [b.snapshot() for b in self.bridges],
            "finished": [b.snapshot() for b in self.finished],
            "refused_invites": {str(code): n for code, n in sorted(self.refused_invites.items())},
            "malformed_by_reason": self.malformed_by_reason(),
        }

    def malformed_by_reason(self) -> dict[str, dict[str, int]]:
        """What was refused before it reached a call: malformed SIP at the SIP socket (the guard's kinds) and
        datagrams that are not RTP at all at each call's media sockets (active and recently finished calls, both
        legs), by reason; kinds never seen are left out."""
        sip = self.stack.stats.malformed_by_reason() if self.stack is not None else {}
        rtp: collections.Counter[str] = collections.Counter(self._rtp_malformed_done)
        for bridge in self.bridges:
            rtp.update(bridge.rtp_malformed())
        return {"sip": sip, "rtp": dict(sorted(rtp.items()))}

    # --- plumbing ----------------------------------------------------------------------------------------

    def _phone_config(self, user: InsideUser, policy: Policy) -> PhoneConfig:
        cfg = PhoneConfig(
            aor=user.outside_aor,
            display_name=user.display_name or user.name,
            listen_host=self.config.listen_host,
            listen_port=self.port,
            policy=policy,
            proxy=self.config.outside_proxy,
            no_answer_timeout_s=self.config.no_answer_timeout_s,
            bind_call_id=self.config.bind_call_id,
            **_outside_transport(self.config),
        )
        if self.hooks is not None:
            cfg = self.hooks.phone_config(user, cfg)
        return cfg

    def _leg(self, bridge: Bridge, user: InsideUser, policy: Policy) -> Leg:
        """The outside leg of ``bridge``: ``user``'s identity and replay cache on the gateway's shared stack, its
        sealed media through the bridge's switchable Opus codec (for pass-through)."""
        assert self.stack is not None
        cfg = self._phone_config(user, policy)
        context = LegContext(
            self.stack,
            self.identities[user.name],
            normalize_aor(cfg.aor),
            cfg,
            self._nonces[user.name],
            self.trust.get(user.name),
        )
        bridged = bridge.to_outside.outside_codec

        def outside_codec(codec: Codec, secure: bool) -> CodecInfo:
            return bridged if secure and bridged is not None else get_codec(codec.name)

        return Leg(context, bridge.background, outside_codec)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept_loop(self) -> None:
        assert self.stack is not None
        while True:
            incoming = await self.stack.incoming.get()
            try:
                self._route(incoming)
            except Exception as exc:  # one bad INVITE must never stop the gateway
                log.error("cannot route call %s: %s", incoming.call_id, exc, exc_info=True)
                with contextlib.suppress(Exception):
                    incoming.reject(500, "Server Internal Error", f"voipgw gateway: {type(exc).__name__}")

    def _route(self, incoming: IncomingCall) -> None:
        assert self._routing is not None
        decision = route(incoming, self._routing)
        if isinstance(decision, Outbound):
            incoming.to_aor = decision.dialled  # the bridge and the outside INVITE go where the dial plan says
            self._spawn(self._outbound(decision.user, incoming, decision.target))
        elif isinstance(decision, Inbound):
            self._spawn(self._inbound(decision.user, incoming))
        else:
            self.refused_invites[decision.code] += 1
            _refusals(str(decision.code), logging.WARNING, "call %s %s (%d)", incoming.call_id, decision.detail,
                      decision.code)  # fmt: skip
            incoming.reject(decision.code, decision.phrase, f"voipgw gateway: {decision.why}")

    def _begin(self, bridge: Bridge) -> None:
        self.bridges.append(bridge)

    def _finish(self, bridge: Bridge, reason: str) -> None:
        if bridge.ended_at is None:
            inside = bridge.inside
            if inside.state is not None and not inside.finished:
                inside.apply(CallEvent.HUNG_UP)  # by us or by it: the inside dialog is over with the bridge
            bridge.reason = bridge.reason or reason
            bridge.ended_at = time.time()  # the bridge is now ENDED, or FAILED if it or a leg failed
        counted = bridge in self.bridges
        if counted:
            self.bridges.remove(bridge)
            self.finished.append(bridge)
        bridge.done.set()
        if counted:
            self._rtp_malformed_done.update(bridge.rtp_malformed())
        # A refused INVITE was logged (rate-limited) where it was refused: its end is no news.
        log.log(
            logging.DEBUG if bridge.refused else logging.INFO,
            "gateway call %s (%s, %s) over: %s", bridge.call_id, bridge.user.name, bridge.direction, bridge.reason,
        )  # fmt: skip
        if counted and self.hooks is not None:
            self.hooks.call_finished(bridge)

    def _end(self, bridge: Bridge, why: str) -> None:
        """Hang up both legs (BYE, or CANCEL/487 while ringing)."""
        bridge.reason = bridge.reason or why
        text = None if why == "gateway shutdown" else f"voipgw gateway: {why}"
        if bridge.outside is not None:
            bridge.outside.hangup(text)
        if bridge.inside_sip is not None:
            with contextlib.suppress(Exception):
                bridge.inside_sip.hangup(text)  # the inside phone learns why too (BYE Reason)

    async def _start_inside_media(
        self, bridge: Bridge, stream: MediaStream, remote: AudioDescription, codec: Codec
    ) -> None:
        # An Opus inside phone: frames cross untouched in both directions (no transcoding, no added codec delay),
        # when the outside leg is a sealed Opus call (a NOT SECURE one may speak G.711: it is transcoded).
        sealed = bridge.outside is not None and bridge.outside.session is not None
        bridge.passthrough.on = codec.name == OPUS_CODEC.name and sealed
        info = switch_codec(bridge.relay_out, bridge.relay_in, bridge.passthrough) if bridge.passthrough.on else None
        # The inside leg is plain by design (the LAN side); only the outside leg must be sealed.
        await stream.start(
            PlainProtector(),
            remote.rtp_address,
            source=bridge.to_inside,
            sink=bridge.to_outside,
            allow_insecure=True,
            clock=time.monotonic,
            codec=info or get_codec(codec.name),
            payload_type=codec.payload_type,
            telephone_event_pt=telephone_event_pt(remote, codec),
        )
        bridge.inside_codec = codec.name
        bridge.inside_payload = codec
        self._bridge_dtmf(bridge, stream)
        bridge.to_inside.open = bridge.to_outside.open = True

    def _bridge_dtmf(self, bridge: Bridge, inside: MediaStream) -> None:
        """Each RFC 4733 digit one leg receives is sent on the other (sealed like audio on the outside leg)."""
        outside = bridge.outside.media if bridge.outside is not None else None
        if outside is None:
            return
        noted = outside.on_dtmf

        def to_inside(digit: str) -> None:
            if noted is not None:
                noted(digit)
            if _send_dtmf(bridge, inside, digit, "inside"):
                bridge.dtmf_to_inside += 1

        def to_outside(digit: str) -> None:
            if _send_dtmf(bridge, outside, digit, "outside"):
                bridge.dtmf_to_outside += 1

        outside.on_dtmf = to_inside
        inside.on_dtmf = to_outside

    async def _follow(self, bridge: Bridge) -> None:
        """Both legs are up: pass hold/resume re-INVITEs across, end a call whose media died, and wait until
        either leg ends, then end the other."""
        assert bridge.inside_sip is not None and bridge.outside is not None
        self._bridge_reoffers(bridge)
        inside_gone = asyncio.ensure_future(_wait_terminal(bridge.inside_sip))
        outside_gone = asyncio.ensure_future(bridge.outside.done.wait())
        media_dead = asyncio.ensure_future(self._watch_media(bridge))
        try:
            await asyncio.wait({inside_gone, outside_gone, media_dead}, return_when=asyncio.FIRST_COMPLETED)
            # A reason set already is ours (e.g. the shutdown): the legs then end because we hung them up.
            if bridge.reason:
                pass
            elif media_dead.done() and not (inside_gone.done() or outside_gone.done()):
                bridge.reason = media_dead.result()
                log.warning("gateway call %s (%s): %s", bridge.call_id, bridge.user.name, bridge.reason)
            elif inside_gone.done():
                ev = inside_gone.result()
                bridge.reason = f"inside: {ev.reason}" if ev is not None else "inside: ended"
            else:
                bridge.reason = f"outside: {bridge.outside.record.reason or 'ended'}"
            self._end(bridge, bridge.reason)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(bridge.outside.done.wait(), 5.0)
        finally:
            inside_gone.cancel()
            outside_gone.cancel()
            media_dead.cancel()

    async def _watch_media(self, bridge: Bridge) -> str:
        """Return (with the reason) once a leg has received no RTP for ``media_timeout_s`` while nobody holds:
        a call whose media path is gone must end with a reason, never stay up silent."""
        legs = {"inside": bridge.inside_media, "outside": bridge.outside.media if bridge.outside else None}
        last = {name: -1 for name in legs}
        quiet_since = {name: time.monotonic() for name in legs}
        while True:
            await asyncio.sleep(MEDIA_POLL_S)
            now = time.monotonic()
            for name, media in legs.items():
                got = media.stats.frames_received if media is not None else 0
                if got != last[name] or bridge.inside_hold or bridge.outside_hold:
                    last[name], quiet_since[name] = got, now
                elif now - quiet_since[name] >= self.config.media_timeout_s:
                    return f"no media from the {name} leg for {self.config.media_timeout_s:g} s"

    # --- hold and resume ------------------------------------------------------------------------------------

    def _bridge_reoffers(self, bridge: Bridge) -> None:
        """Answer each leg's re-INVITE ourselves and pass its hold state to the other leg as our own re-INVITE.
        The outside leg's re-offers carry no handshake: the sealed session and its keys stay as they are."""
        assert bridge.inside_sip is not None and bridge.outside is not None and bridge.outside.sip is not None
        inside_sip, outside_sip = bridge.inside_sip, bridge.outside.sip

        def on_inside(sdp: str) -> str | None:
            return self._on_reoffer(bridge, "inside", sdp)

        def on_outside(sdp: str) -> str | None:
            return self._on_reoffer(bridge, "outside", sdp)

        inside_sip.reoffer_handler = on_inside
        outside_sip.reoffer_handler = on_outside

    def _on_reoffer(self, bridge: Bridge, leg: str, sdp: str) -> str | None:
        try:
            remote = parse_sdp(sdp)
        except SdpError as exc:
            log.warning("gateway call %s: unusable %s re-offer (%s): 488", bridge.call_id, leg, exc.reason)
            return None
        codec = self._leg_codec(bridge, leg)
        if codec is None or not any(c.name == codec.name for c in remote.codecs):
            log.warning("gateway call %s: the %s re-offer drops our codec: 488", bridge.call_id, leg)
            return None
        codec = next(c for c in remote.codecs if c.name == codec.name)
        holds = remote.direction in (SENDONLY, INACTIVE)
        other_holds = bridge.outside_hold if leg == "inside" else bridge.inside_hold
        if holds != (bridge.inside_hold if leg == "inside" else bridge.outside_hold):
            if leg == "inside":
                bridge.inside_hold = holds
            else:
                bridge.outside_hold = holds
            bridge.holds += 1
            other = "outside" if leg == "inside" else "inside"
            log.info(
                "gateway call %s: the %s side %s; passing it to the %s leg",
                bridge.call_id, leg, "holds" if holds else "resumes", other,
            )  # fmt: skip
            self._reoffer(bridge, other, hold_direction(local_hold=holds, remote_hold=other_holds))
        # We send what the other side says whenever this peer listens; we listen to this peer only while the other
        # side does (a held party hears nobody, so its media need not cross).
        send = remote.direction in (SENDRECV, RECVONLY)
        recv = remote.direction in (SENDRECV, SENDONLY) and not other_holds
        direction = {(True, True): SENDRECV, (True, False): SENDONLY, (False, True): RECVONLY}.get(
            (send, recv), INACTIVE
        )
        return self._leg_sdp(bridge, leg, codec, direction)

    def _leg_codec(self, bridge: Bridge, leg: str) -> Codec | None:
        if leg == "inside":
            return bridge.inside_payload
        name = bridge.outside.record.codec if bridge.outside is not None else None
        return {OPUS_CODEC.name: opus_codec(), PCMU: Codec(PCMU, 0, 8000), PCMA: Codec(PCMA, 8, 8000)}.get(name or "")

    def _leg_sdp(self, bridge: Bridge, leg: str, codec: Codec, direction: str) -> str:
        media = bridge.inside_media if leg == "inside" else bridge.outside.media if bridge.outside else None
        assert media is not None
        ids = bridge.inside_sdp if leg == "inside" else bridge.outside_sdp
        ids[1] += 1
        return build_sdp(
            self.config.listen_host,
            media.local[1],
            [codec],
            direction=direction,
            session_id=ids[0],
            version=ids[1],
            telephone_event_pt=media.telephone_event_pt,
        )

    def _reoffer(self, bridge: Bridge, leg: str, direction: str) -> None:
        codec = self._leg_codec(bridge, leg)
        sip = bridge.inside_sip if leg == "inside" else bridge.outside.sip if bridge.outside else None
        if codec is None or sip is None:
            return
        sip.reoffer(self._leg_sdp(bridge, leg, codec, direction))

    async def _close(self, bridge: Bridge, reason: str) -> None:
        if bridge.inside_media is not None:
            await bridge.inside_media.stop()
        self._finish(bridge, reason)
        # The outside leg records the call in the contact store in the background: done before the store may close.
        await bridge.background.settle()

    # --- inside phone -> outside ---------------------------------------------------------------------------

    async def _supervise(
        self, bridge: Bridge, setup: Coroutine[Any, Any, None], pending: IncomingCall | None = None
    ) -> None:
        """Run one bridge from setup to the end; any failure ends this call only, never the gateway. ``pending``
        (an inbound INVITE) gets a final response if setup fails before it was answered, so the caller never
        rings on until its own timeout."""
        self._begin(bridge)
        try:
            await setup
            if bridge.state is BridgeState.BRIDGED:
                await self._follow(bridge)
        except Exception as exc:
            # A store the file system refuses is an operations problem with a clear message, not a code bug.
            known = isinstance(exc, ContactStoreError)
            log.error("gateway %s call of %s failed: %s", bridge.direction, bridge.user.name, exc, exc_info=not known)
            bridge.fail()
            why = f"contact store: {exc.reason}" if isinstance(exc, ContactStoreError) else type(exc).__name__
            if pending is not None and bridge.outside is None:
                with contextlib.suppress(Exception):
                    pending.reject(503 if known else 500, SIP_PHRASES[503 if known else 500], f"voipgw gateway: {why}")
            self._end(bridge, f"internal error: {why}")
        finally:
            await self._close(bridge, "ended")

    async def _outbound(self, user: InsideUser, incoming: IncomingCall, target: str | Refuse) -> None:
        local_aor = normalize_aor(incoming.to_aor)
        bridge = Bridge(user, "outbound", local_aor, inside=incoming_record(incoming, local_aor), inside_sip=incoming)
        await self._supervise(bridge, self._outbound_setup(bridge, user, incoming, target))

    async def _outbound_setup(
        self, bridge: Bridge, user: InsideUser, incoming: IncomingCall, target: str | Refuse
    ) -> None:
        try:
            remote = parse_sdp(incoming.remote_sdp or "")
        except SdpError as exc:
            return self._reject(bridge, incoming, 488, f"voipgw gateway: unusable offer: {exc.reason}")
        codec = _pick_inside_codec(remote.codecs)
        if codec is None:
            return self._reject(bridge, incoming, 488, "voipgw gateway: no common codec (PCMU, PCMA, G.722, opus)")
        if isinstance(target, Refuse):
            return self._reject(bridge, incoming, target.code, f"voipgw gateway: {target.why}")
        policy = self.config.policy_for(user.name, normalize_aor(target))
        bridge.policy = policy.value
        stream = await MediaStream.bind(self.config.listen_host)
        bridge.inside_media = stream
        # 180 without SDP: the inside phone plays its own ringback. Early media from the outside (a 183's audio)
        # is never relayed: it would be clear audio from a party nobody has verified yet.
        incoming.ring()
        bridge.inside.apply(CallEvent.RINGING)
        leg = self._leg(bridge, user, policy)
        placing = asyncio.ensure_future(leg.place(target, source=bridge.to_outside, sink=bridge.to_inside))
        cancelled = asyncio.ensure_future(_wait_terminal(incoming))
        await asyncio.wait({placing, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        if cancelled.done() and not placing.done():
            bridge.reason = "cancelled by the inside phone"
            # place_call may still be sending the INVITE: retry the CANCEL until its call is pending.
            while not placing.done():
                if leg.cancel():
                    break
                await asyncio.sleep(0.02)
        out = await placing
        inside_gone = cancelled.done()
        cancelled.cancel()
        bridge.outside = out
        rec = out.record
        if inside_gone:
            bridge.inside.apply(CallEvent.HUNG_UP)
        if rec.state is not CallState.ESTABLISHED:
            bridge.fail()
            if inside_gone:
                bridge.reason = bridge.reason or "cancelled by the inside phone"
                return
            code = code_of(rec.reason)
            return self._reject(bridge, incoming, code, f"voipgw gateway: outside leg: {rec.reason}")
        if inside_gone:
            # The inside phone gave up just as the outside answered.
            bridge.fail()
            self._end(bridge, "cancelled by the inside phone")
            return
        log.log(
            logging.WARNING if rec.security is Security.NOT_SECURE else logging.INFO,
            "gateway call %s: %s -> %s %s%s, outside %s codec %s SAS %s",
            rec.call_id, user.name, rec.remote_aor, rec.security.value,
            " [NOT SECURE] (policy opportunistic: the far end has no voipgw gateway)"
            if rec.security is Security.NOT_SECURE else "",
            rec.suite, rec.codec, rec.sas,
        )  # fmt: skip
        await self._start_inside_media(bridge, stream, remote, codec)
        # The caller's phone cannot show the state (it keeps the display it dialled): it hears it instead.
        secure = rec.security is not Security.NOT_SECURE
        bridge.cue = "secure" if secure else "not secure"
        bridge.to_inside.open = False
        self._spawn(play_cue(bridge.to_inside, SECURE_CUE if secure else NOT_SECURE_CUE))
        incoming.answer(
            build_sdp(
                self.config.listen_host,
                stream.local[1],
                [codec],
                session_id=bridge.inside_sdp[0],
                telephone_event_pt=telephone_event_pt(remote, codec),
            )
        )
        bridge.inside.apply(CallEvent.ANSWERED, security=Security.NOT_SECURE)

    def _reject(self, bridge: Bridge, incoming: IncomingCall, code: int, warning: str) -> None:
        bridge.fail(f"{code} {warning}")
        bridge.inside.apply(CallEvent.REFUSED)
        bridge.refused = True
        self.refused_invites[code] += 1
        _refusals(f"refuse-{code}", logging.WARNING, "gateway refuses call %s from %s: %d %s", incoming.call_id,
                  bridge.user.name, code, warning)  # fmt: skip
        incoming.reject(code, SIP_PHRASES.get(code, "Call Failed"), warning)

    # --- outside -> inside phone ---------------------------------------------------------------------------

    async def _inbound(self, user: InsideUser, incoming: IncomingCall) -> None:
        bridge = Bridge(user, "inbound", normalize_aor(incoming.from_aor))
        await self._supervise(bridge, self._inbound_setup(bridge, user, incoming), pending=incoming)

    async def _inbound_setup(self, bridge: Bridge, user: InsideUser, incoming: IncomingCall) -> None:
        assert self.stack is not None
        incoming.ring()
        policy = self.config.policy_for(user.name, normalize_aor(incoming.from_aor))
        bridge.policy = policy.value
        leg = self._leg(bridge, user, policy)
        # The outside leg is answered first: the SAS exists for the answerer only after the caller's reveal,
        # which travels in its first media frames, and the inside phone must see the SAS in the INVITE's From.
        out = await leg.answer(incoming, source=bridge.to_outside, sink=bridge.to_inside)
        bridge.outside = out
        rec = out.record
        if rec.state is not CallState.ESTABLISHED:
            bridge.fail(f"outside leg: {rec.reason}")
            if rec.security is Security.REFUSED:  # the leg refused the INVITE (and logged it, rate-limited)
                bridge.refused = True
                self.refused_invites[code_of(rec.reason)] += 1
            return
        t_answered = time.monotonic()
        deadline = t_answered + self.config.sas_wait_s
        secure = rec.security is not Security.NOT_SECURE
        while secure and rec.sas is None and not rec.finished and time.monotonic() < deadline:
            out.poll_session_events()
            await asyncio.sleep(0.005)
        bridge.sas_wait_ms = (time.monotonic() - t_answered) * 1e3
        if rec.finished:
            bridge.fail(f"outside leg: {rec.reason}")
            return
        name = incoming.from_display or user_part(rec.remote_aor) or rec.remote_aor
        bridge.display = f"{name} {security_label(rec.sas, rec.security)}"
        # Its payload type is the inside phone's pick among those we offer: unknown until the answer, and the phone
        # sends its first packet as it answers (before we have read the 200 OK). Held until then, not refused.
        stream = await MediaStream.bind(self.config.listen_host, payload_type=None)
        bridge.inside_media = stream
        port = stream.local[1]
        sid = bridge.inside_sdp[0]
        # The outside caller hears a ringback we make (sealed like any audio) while the inside phone rings:
        # its call is answered already, and silence would sound like a dead line.
        ringing = asyncio.Event()
        ringback = asyncio.ensure_future(play_ringback(bridge, ringing))
        inside_rec = bridge.inside
        inside_rec.local_aor, inside_rec.remote_aor = rec.remote_aor, user.contact

        def offer(call_id: str) -> str:
            inside_rec.call_id = call_id
            return build_sdp(
                self.config.listen_host, port, INSIDE_OFFER, session_id=sid, telephone_event_pt=INSIDE_EVENT_PT
            )

        inside_rec.apply(CallEvent.SEND_INVITE)
        try:
            inside = await self.stack.place_call(
                user.contact,
                f"sip:{rec.remote_aor}",
                offer,
                display_name=bridge.display,
                timeout_s=self.config.no_answer_timeout_s,
            )
            bridge.inside_sip = inside
            log.log(
                logging.WARNING if not secure else logging.INFO,
                "gateway call %s: %s -> %s shown as %r", rec.call_id, rec.remote_aor, user.name, bridge.display,
            )  # fmt: skip
            answered = asyncio.ensure_future(_wait_answer(inside, inside_rec))
            outside_gone = asyncio.ensure_future(out.done.wait())
            await asyncio.wait({answered, outside_gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ringing.set()
            await ringback
            bridge.to_outside.frames.clear()
        if not answered.done():
            bridge.fail(f"outside: {rec.reason or 'caller hung up'} while the inside phone rang")
            inside.hangup()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(answered, 2.0)
            outside_gone.cancel()
            return
        outside_gone.cancel()
        ev = answered.result()
        if not isinstance(ev, Answered):
            what = f"{ev.code} {ev.reason}" if isinstance(ev, Failed) else ev.reason
            bridge.fail(f"inside phone: {what}")
            out.hangup(f"voipgw gateway: the inside phone did not answer ({what})")
            return
        try:
            remote = parse_sdp(ev.remote_sdp)
        except SdpError as exc:
            remote = None
            why = f"unusable answer from the inside phone: {exc.reason}"
        codec = _pick_inside_codec(remote.codecs) if remote is not None else None
        if remote is None or codec is None:
            bridge.fail(why if remote is None else "no common codec with the inside phone")
            self._end(bridge, bridge.reason)
            return
        if out.record.finished:
            bridge.fail()
            self._end(bridge, "outside: caller hung up as the inside phone answered")
            return
        await self._start_inside_media(bridge, stream, remote, codec)


def _send_dtmf(bridge: Bridge, stream: MediaStream, digit: str, leg: str) -> bool:
    try:
        stream.send_dtmf(digit)
    except (MediaError, DtmfError) as exc:
        # Counted, never logged digit by digit (digits may be PINs); the first failure says why.
        if not bridge.dtmf_dropped:
            log.warning("gateway call %s: DTMF cannot cross to the %s leg: %s", bridge.call_id, leg, exc)
        bridge.dtmf_dropped += 1
        return False
    return True


async def _wait_terminal(sip: SipCall) -> Ended | Failed | None:
    """The leg's terminal event (its other events are of no interest while we wait)."""
    while True:
        ev = await sip.next_event()
        if isinstance(ev, Ended | Failed):
            return ev


async def _wait_answer(sip: OutgoingCall, record: CallRecord) -> Answered | Ended | Failed:
    """The inside leg's final answer, moving its record (ringing, answered, refused, or given up)."""
    while True:
        ev = await sip.next_event()
        if isinstance(ev, Answered):
            record.apply(CallEvent.ANSWERED, security=Security.NOT_SECURE)
            return ev
        if isinstance(ev, Failed):
            record.apply(CallEvent.REFUSED)
            return ev
        if isinstance(ev, Ended):
            record.apply(CallEvent.HUNG_UP)
            return ev
        if isinstance(ev, Ringing):
            record.apply(CallEvent.RINGING)
            log.debug("inside leg %s ringing", sip.call_id)


def _pick_inside_codec(offered: tuple[Codec, ...]) -> Codec | None:
    """The inside phone's first codec that we transcode (its order, not ours: it knows its network)."""
    return next((c for c in offered if c.name in INSIDE_CODECS), None)


def _outside_transport(config: B2buaSettings) -> dict[str, Any]:
    """PhoneConfig settings for the outside leg's transport: a stream transport carries the hybrid suite's
    ~2.8 KB INVITE, so it is offered there (PhoneConfig leaves it out of UDP offers itself)."""
    tls = config.outside_tls
    values: dict[str, Any] = {"transport": config.outside_transport}
    if config.outside_transport in ("tcp", "tls"):
        values["suites"] = frozenset({Suite.X25519, Suite.X25519_MLKEM768})
        values["require_hybrid"] = config.outside_require_hybrid
    if tls is not None:
        values.update(
            tls_ca_file=tls.ca_file,
            tls_pinned_sha256=tls.pinned_sha256,
            tls_cert_file=tls.cert_file,
            tls_key_file=tls.key_file,
            tls_port=tls.port,
        )
    return values
