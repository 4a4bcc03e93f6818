"""The gateway's B2BUA: routes each INVITE to an outbound or inbound bridge, runs each bridge from setup
(``outbound.py``, ``inbound.py``) through the bridged call (``bridged.py``) to its end, and keeps the books. It never
lets inside audio out unless the outside leg is a sealed voipgw call (policy ``require``)."""

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
from voipgw.audio.codecs import CodecInfo, get_codec
from voipgw.call import BridgeState, CallEvent, Security
from voipgw.config import PhoneConfig, Policy
from voipgw.gateway.bridged import follow, on_reoffer
from voipgw.gateway.hooks import B2buaHooks
from voipgw.gateway.inbound import inbound_setup
from voipgw.gateway.legs import end_bridge, unhook
from voipgw.gateway.model import B2buaSettings, Bridge, InsideUser
from voipgw.gateway.outbound import outbound_setup
from voipgw.gateway.routing import Inbound, Outbound, Refuse, RoutePlan, route
from voipgw.gateway.statuses import SIP_PHRASES, refusal_reason
from voipgw.gateway.zones import stream_tls
from voipgw.leg import Leg, LegContext, incoming_record
from voipgw.probes import ProbeGuard
from voipgw.rtp.sdes import SrtpMode
from voipgw.sdp import Codec
from voipgw.sip import IncomingCall, RateLimitedLog, SipStack, TcpOptions
from voipgw.store.errors import ContactStoreError
from voipgw.store.replay import replay_cache
from voipgw.trust import TrustStore

log = logging.getLogger(__name__)
_refusals = RateLimitedLog(log)
"""Refused INVITEs are logged through this (one line per kind per interval) and counted in ``refused_invites``:
a flood of INVITEs to an unknown user, or refused by policy, must not flood the log."""

FINISHED_KEPT = 100


class Gateway:
    """``await start()``; incoming INVITEs are routed by who sent them; ``snapshot()``; ``await stop()``.

    Routing (``voipgw.gateway.routing.route``): an INVITE from an inside phone's address (and From user) is
    outbound; any other INVITE is inbound, for the inside user named in its To.

    Policy: ``config.policy_for(user, far AOR)``. Under ``require`` a far end without the key exchange is refused
    with the reason; under ``opportunistic`` the call goes through in the clear, marked NOT SECURE everywhere.

    Outbound (inside phone -> outside): 180 to the phone at once (it plays its own ringback; outside early media
    is never relayed), then the outside INVITE; the phone's 200 OK follows the outside 200 OK (and its SAS, which
    the offerer knows at once), and the phone then hears a cue for the far key's trust state and the SAS spoken
    (``voipgw.gateway.announce``: it cannot show a display name change). An outside failure, or an answer without
    the key exchange under ``require``, becomes the phone's final response (488 + Warning with the reason).

    Inbound (outside -> inside phone): the outside INVITE is verified and its key exchange settled in a 183 (the
    early dialog; nothing is answered), then the gateway waits (up to ``sas_wait_s``) for the caller's SAS reveal,
    which travels in the caller's first sealed frames, and only then rings the inside phone with the label first
    (``From: "[NEW sas] alice"``, ``voipgw.gateway.labels``; ``[NO SAS]`` if the reveal does not come): unmodified
    phones show the From display name while ringing and cannot update it later. The phone's first 18x is the ring
    point: our own SAS contribution goes out (the caller can compute the SAS only from then on, so a man in the
    middle pays a visible ring per SAS guess) and the caller gets a 180. The outside 200 OK follows the inside
    phone's answer; its busy, decline or silence reaches the caller as its own status (486, 603, 480).

    Up: hold/resume re-INVITEs are answered per leg and passed to the other (no new handshake outside), RFC 4733
    digits cross both ways (but the inside phone's ``*1`` / ``*0``: the SAS matched / did not), and a leg without
    RTP for ``media_timeout_s`` (nobody holding) ends the call.
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
        self.finished: collections.deque[dict[str, Any]] = collections.deque(maxlen=FINISHED_KEPT)
        """The last calls' ``Bridge.snapshot()`` taken when each ended (for ``gateway status``): never the bridge
        itself, so a finished call's media, sockets and ratchet state are released at once (issue 17)."""
        self._nonces: dict[str, NonceCache] = {}
        """One replay cache per identity, shared by all that user's outside legs."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._accept: asyncio.Task[None] | None = None
        self._rtp_malformed_done: collections.Counter[str] = collections.Counter()
        """RTP malformed-by-reason of every finished call (its media sockets are closed; the counts stay)."""
        self._inside_dropped_done: collections.Counter[str] = collections.Counter()
        """Inside-leg datagrams dropped by reason (wrong source, SRTP auth/replay) in every finished call."""
        self._routing: RoutePlan | None = None
        self.refused_invites: collections.Counter[int] = collections.Counter()
        self.probes = ProbeGuard()
        """Secure calls whose caller gave up before the answer, per peer: the SAS-probing guard (voipgw.probes)."""
        self.routing_refusals: collections.Counter[str] = collections.Counter()
        """Trust-zone refusals routing decided (``Refuse.reason`` other than plain routing), by reason."""
        """Every INVITE the gateway (or its outside leg's key exchange or policy) refused, by status code."""
        self.refused_calls: collections.Counter[str] = collections.Counter()
        """Every bridge that ended refused (its outside leg's security, or refused at setup), by reason: the key
        exchange's typed reason (``bad-signature``, ``no_key_exchange``) or ``sip-<code>``."""

    @property
    def port(self) -> int:
        """The inside listener's port (the only one in flag mode)."""
        assert self.stack is not None
        return self.stack.inside_port or self.stack.local_port

    @property
    def outside_port(self) -> int:
        """The outside listener's port (the PBX's side; the inside one too in flag mode)."""
        assert self.stack is not None
        return self.stack.local_port

    async def start(self) -> None:
        registrar = self.hooks.inside_registrar() if self.hooks is not None else None
        transport = self.config.outside_transport
        tls = self.config.outside_tls
        # With a certificate the gateway also listens for SIP over TLS, whatever the outside transport: the inside
        # phones need it to carry SDES-SRTP keys (inside.srtp) out of reach of anyone on the inside network.
        listen_tls = tls is not None and tls.cert_file is not None
        zones = self.config.zones
        # Two zones: the stack's main socket is the outside one (registrations, TCP, TLS toward the PBX), the phones
        # get their own UDP socket and, with a certificate, their own TLS listener on inside.tls_port.
        main = zones.outside_listen if zones is not None else (self.config.listen_host, self.config.listen_port)
        split = stream_tls(tls, transport, zones.outside_listen if zones is not None else None)
        self.stack = SipStack(
            main[0],
            main[1],
            asyncio.get_running_loop(),
            registrar=registrar,
            tcp=TcpOptions() if transport in ("auto", "tcp") else None,
            tls=split.outside,
            inside=(self.config.listen_host, self.config.listen_port) if zones is not None else None,
            inside_tls=split.inside,
        )
        await self.stack.start()
        if self.hooks is not None:
            self.hooks.stack_started(self.stack)
        for user in self.config.users:
            # One table for every user (nonces are random: one seen by any user is a replay for all), one
            # in-memory front per user.
            skew = self._phone_config(user, Policy.REQUIRE).max_skew_s
            self._nonces[user.name] = replay_cache(self.config.home, skew)
        cfg, inside = self.config, self.hooks.inside_routing() if self.hooks is not None else None
        self._routing = RoutePlan(
            self.users,
            (cfg.listen_host, self.port),
            cfg.routes,
            cfg.outside_proxy,
            inside,
            zoned=zones is not None,
            tls_port=self.stack.inside_tls_port,
        )
        self._accept = asyncio.get_running_loop().create_task(self._accept_loop())
        log.info(
            "gateway SIP on udp:%s:%d (inside) and %s:%d (outside) for %d user(s); outside SIP over %s; "
            "inside SRTP %s",
            self.config.listen_host, self.port, main[0], self.outside_port, len(self.users),
            self.config.outside_transport, self.config.inside_srtp.value,
        )  # fmt: skip
        if self.config.inside_srtp is not SrtpMode.OFF and not listen_tls:
            # SDES keys travel in the SDP: over plain SIP anyone on the path to the phone reads them.
            log.warning(
                "inside.srtp = %s but the gateway has no TLS certificate: SDES keys cross the inside network in "
                "the clear with the SIP; give the phones SIP over TLS", self.config.inside_srtp.value,
            )  # fmt: skip

    async def stop(self) -> None:
        """BYE (or CANCEL) every call on both legs, then close the SIP stack."""
        if self._accept is not None:
            self._accept.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept
        for bridge in list(self.bridges):
            end_bridge(bridge, "gateway shutdown")
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        if self.stack is not None:
            await self.stack.stop()

    def snapshot(self) -> dict[str, Any]:
        """Active and recently finished calls with security state, SAS, codecs and frame counters (JSON-ready)."""
        return {
            "listen": f"{self.config.listen_host}:{self.port if self.stack else self.config.listen_port}",
            "listen_outside": f"{self.stack.local_host}:{self.outside_port}" if self.stack else None,
            "listen_tls": (self.stack.inside_tls_port or self.stack.tls_port) if self.stack is not None else None,
            "users": [
                {"name": u.name, "outside_aor": u.outside_aor, "contact": u.contact} for u in self.users.values()
            ],
            "calls": [b.snapshot() for b in self.bridges],
            "finished": list(self.finished),
            "refused_invites": {str(code): n for code, n in sorted(self.refused_invites.items())},
            "refused_calls": dict(sorted(self.refused_calls.items())),
            "zone_refusals": self.zone_refusals(),
            "malformed_by_reason": self.malformed_by_reason(),
            "inside_media_dropped": self.inside_media_dropped(),
            "unanswered_secure_calls": self.unanswered_secure_calls(),
            "sas_probe_suspects": self.probes.suspects(time.time()),
        }

    def degraded_calls(self) -> dict[str, int]:
        """Calls in progress whose protection is degraded now, by reason (``voipgw.media_health``); read by the
        metrics thread, hence the copy of the list."""
        out: dict[str, int] = {}
        for bridge in list(self.bridges):
            if bridge.outside is not None:
                for what in list(bridge.outside.record.health.active):
                    out[what.value] = out.get(what.value, 0) + 1
        return out

    def unanswered_secure_calls(self) -> dict[str, int]:
        """Secure inbound calls whose caller hung up before the answer, by stage (before or after our SAS reveal),
        and ``alert``: the times one peer crossed the probing limit (``voipgw.probes``)."""
        out = {stage.value: n for stage, n in self.probes.ended.items()}
        out["alert"] = self.probes.alerts
        return out

    def inside_media_dropped(self) -> dict[str, int]:
        """Datagrams the inside legs dropped since start (active and finished calls), by reason: from another
        address than the phone's (``wrong-source``, ``wrong-port``), SRTP that did not authenticate..."""
        out: collections.Counter[str] = collections.Counter(self._inside_dropped_done)
        for bridge in self.bridges:
            out.update(bridge.inside_dropped())
        return dict(sorted(out.items()))

    def registered_source(self, user: str) -> tuple[str, int] | None:
        """Where ``user``'s current inside registration came from (None: static phone or not registered): the
        only address a phone behind NAT may send its inside RTP from."""
        registrar = self._routing.registrar if self._routing is not None else None
        binding = registrar.lookup(user) if registrar is not None else None
        return binding.source if binding is not None else None

    def zone_refusals(self) -> dict[str, int]:
        """Requests refused by a trust-zone rule, by reason: at the SIP stack (REGISTER on the outside listener,
        the PBX or an untrusted source on the inside one, bad credentials, a binding from another source) and by
        routing (an inside INVITE from no authenticated inside user)."""
        counts: collections.Counter[str] = collections.Counter(self.routing_refusals)
        if self.stack is not None:
            counts.update(self.stack.stats.refused)
        return dict(sorted(counts.items()))

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
            listen_host=self.stack.local_host if self.stack is not None else self.config.listen_host,
            listen_port=self.outside_port,
            rtp_host=self.config.zones.outside_rtp.host if self.config.zones is not None else None,
            rtp_ports=_rtp_ports(self.config),
            policy=policy,
            proxy=self.config.outside_proxy,
            no_answer_timeout_s=self.config.no_answer_timeout_s,
            bind_call_id=self.config.bind_call_id,
            inband=self.config.inband,
            inband_wait_s=self.config.inband_wait_s,
            pq_interval_s=self.config.pq_interval_s,
            **_outside_transport(self.config),
        )
        if self.hooks is not None:
            cfg = self.hooks.phone_config(user, cfg)
        return cfg

    def outside_leg(self, bridge: Bridge, user: InsideUser, policy: Policy) -> Leg:
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
            self.probes,
        )
        bridged = bridge.to_outside.outside_codec

        def outside_codec(codec: Codec, secure: bool) -> CodecInfo:
            return bridged if secure and bridged is not None else get_codec(codec.name)

        return Leg(context, bridge.background, outside_codec)

    def count_refused(self, code: int) -> None:
        self.refused_invites[code] += 1

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
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
            self.spawn(self._outbound(decision.user, incoming, decision.target))
        elif isinstance(decision, Inbound):
            self.spawn(self._inbound(decision.user, incoming))
        else:
            self.refused_invites[decision.code] += 1
            if decision.reason != "routing":
                self.routing_refusals[decision.reason] += 1
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
            self.finished.append(bridge.snapshot())
            unhook(bridge)
        bridge.done.set()
        if counted:
            self._rtp_malformed_done.update(bridge.rtp_malformed())
            self._inside_dropped_done.update(bridge.inside_dropped())
            leg = bridge.outside.record if bridge.outside is not None else None
            if bridge.refused or (leg is not None and leg.security is Security.REFUSED):
                self.refused_calls[refusal_reason(f"{bridge.reason} {leg.reason if leg else ''}")] += 1
        # A refused INVITE was logged (rate-limited) where it was refused: its end is no news.
        log.log(
            logging.DEBUG if bridge.refused else logging.INFO,
            "gateway call %s (%s, %s) over: %s", bridge.call_id, bridge.user.name, bridge.direction, bridge.reason,
        )  # fmt: skip
        if counted and self.hooks is not None:
            self.hooks.call_finished(bridge)

    def _on_reoffer(self, bridge: Bridge, leg: str, sdp: str) -> str | None:
        """Our answer to a bridged call's re-offer on ``leg`` (None: 488); see ``voipgw.gateway.bridged``."""
        return on_reoffer(bridge, leg, sdp, self.config.listen_host)

    async def _close(self, bridge: Bridge, reason: str) -> None:
        if bridge.inside_media is not None:
            await bridge.inside_media.stop()
        self._finish(bridge, reason)
        # The outside leg records the call in the contact store in the background: done before the store may close.
        await bridge.background.settle()

    # --- one bridge, from setup to the end ----------------------------------------------------------------

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
                await follow(bridge, self.config, self.trust.get(bridge.user.name))
        except Exception as exc:
            # A store the file system refuses is an operations problem with a clear message, not a code bug.
            known = isinstance(exc, ContactStoreError)
            log.error("gateway %s call of %s failed: %s", bridge.direction, bridge.user.name, exc, exc_info=not known)
            bridge.fail()
            why = f"contact store: {exc.reason}" if isinstance(exc, ContactStoreError) else type(exc).__name__
            if pending is not None and bridge.outside is None:
                with contextlib.suppress(Exception):
                    pending.reject(503 if known else 500, SIP_PHRASES[503 if known else 500], f"voipgw gateway: {why}")
            end_bridge(bridge, f"internal error: {why}")
        finally:
            await self._close(bridge, "ended")

    async def _outbound(self, user: InsideUser, incoming: IncomingCall, target: str | Refuse) -> None:
        local_aor = normalize_aor(incoming.to_aor)
        bridge = Bridge(user, "outbound", local_aor, inside=incoming_record(incoming, local_aor), inside_sip=incoming)
        await self._supervise(bridge, outbound_setup(self, bridge, user, incoming, target))

    def refuse(
        self, bridge: Bridge, incoming: IncomingCall, code: int, warning: str, cause: tuple[int, str] | None = None
    ) -> None:
        """Refuse the inside phone's INVITE of an outbound bridge (counted; logged once per kind and interval)."""
        bridge.fail(f"{code} {warning}")
        bridge.inside.apply(CallEvent.REFUSED)
        bridge.refused = True
        self.refused_invites[code] += 1
        _refusals(f"refuse-{code}", logging.WARNING, "gateway refuses call %s from %s: %d %s", incoming.call_id,
                  bridge.user.name, code, warning)  # fmt: skip
        incoming.reject(code, SIP_PHRASES.get(code, "Call Failed"), warning, cause=cause)

    async def _inbound(self, user: InsideUser, incoming: IncomingCall) -> None:
        bridge = Bridge(user, "inbound", normalize_aor(incoming.from_aor))
        await self._supervise(bridge, inbound_setup(self, bridge, user, incoming), pending=incoming)


def _rtp_ports(config: B2buaSettings) -> tuple[int, int] | None:
    zones = config.zones
    return None if zones is None else (zones.outside_rtp.low, zones.outside_rtp.high)


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
