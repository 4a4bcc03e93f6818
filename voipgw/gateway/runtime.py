"""Runs a gateway from its TOML configuration: maps it onto the B2BUA (``b2bua_config``, the one translation, flag
mode's too), loads each fronted user's identity and contact store, starts the Gateway with its hooks, its PBX
registrations and the ops endpoints, and stops them in order. Every start-up mistake is a one-line ConfigError; it
never handles media and never logs a password."""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratchet.identity import IdentityKey
from voipgw import __version__
from voipgw.config import PhoneConfig
from voipgw.gateway.b2bua import Gateway
from voipgw.gateway.model import B2buaSettings, Bridge, InsideUser
from voipgw.gateway.registrations import OutsideAccount, Registrations
from voipgw.gateway.routing import InsideRegistrar
from voipgw.gateway.zones import ScreenPolicy, Zones, screen
from voipgw.media_health import Degraded
from voipgw.ops.config import ConfigError, GatewayConfig, check_pbx, format_hostport, preflight
from voipgw.ops.metrics import FrameCounts, GatewayMetrics, handshake_failure_reason
from voipgw.ops.service import OpsServices
from voipgw.portrange import RtpRange
from voipgw.sip import RequestFacts, SipStack, TlsOptions
from voipgw.sip.registrar import Registrar
from voipgw.sip.zone import Refusal
from voipgw.store.errors import ContactStoreError
from voipgw.store.keyfile import load_or_create_identity, passphrase_from_env
from voipgw.trust import TrustStore

if TYPE_CHECKING:
    from voipgw.web.server import WebServer

log = logging.getLogger(__name__)


def b2bua_config(config: GatewayConfig, home: Path, no_answer_timeout_s: float = 30.0) -> B2buaSettings:
    """The B2BUA's settings for ``config``: one SIP socket (inside.listen) serves both legs, and outside calls go
    through the outbound proxy, else the registrar (flag mode may have neither: then to the dialled URI)."""
    host, port = config.inside.listen
    users = tuple(
        InsideUser(
            name=u.name,
            # A phone that registers gets its contact from the inside registrar, per call.
            contact=u.contact,
            outside_aor=u.outside_aor,
            display_name=u.display_name or None,
            policy=u.policy,
        )
        for u in config.users.values()
    )
    return B2buaSettings(
        home=home,
        users=users,
        listen_host=host,
        listen_port=port,
        outside_proxy=config.outside.proxy or config.outside.registrar,
        routes=dict(config.routes),
        no_answer_timeout_s=no_answer_timeout_s,
        media_timeout_s=config.media_timeout_s,
        speak_sas=config.speak_sas,
        bind_call_id=config.outside.bind_call_id,
        inband=config.outside.inband,
        inband_wait_s=config.outside.inband_wait_s,
        pq_interval_s=config.outside.pq_interval_s,
        outside_transport=config.outside.transport,
        outside_tls=_tls(config),
        outside_require_hybrid=config.outside.require_hybrid,
        inside_srtp=config.inside.srtp,
        policy=config.policy,
        destinations=config.destinations,
        zones=_zones(config),
    )


def _zones(config: GatewayConfig) -> Zones | None:
    """The two zones' sockets; None in flag mode (no outside listener of its own)."""
    i, o = config.inside, config.outside
    if o.listen is None:
        return None
    return Zones(
        outside_listen=o.listen,
        inside_rtp=RtpRange(i.rtp_host, *i.rtp_ports),
        outside_rtp=RtpRange(o.rtp_host or o.listen[0], *o.rtp_ports),
    )


def _tls(config: GatewayConfig) -> TlsOptions | None:
    o = config.outside
    if o.transport != "tls" and not (o.tls_ca_file or o.tls_pinned_sha256 or o.tls_cert_file):
        return None
    return TlsOptions(
        ca_file=str(o.tls_ca_file) if o.tls_ca_file else None,
        pinned_sha256=o.tls_pinned_sha256,
        cert_file=str(o.tls_cert_file) if o.tls_cert_file else None,
        key_file=str(o.tls_key_file) if o.tls_key_file else None,
        port=config.inside.tls_port,
    )


def user_dir(config: GatewayConfig, home: Path, user: str) -> Path:
    """Where one fronted user's identity key and contact store live."""
    return (config.outside.identity_dir or home / "users") / user


def load_users(config: GatewayConfig, home: Path) -> tuple[dict[str, IdentityKey], dict[str, TrustStore]]:
    """Each fronted user's identity (created on first start) and contact store; one ConfigError line on failure."""
    identities: dict[str, IdentityKey] = {}
    trust: dict[str, TrustStore] = {}
    base = config.outside.identity_dir or home / "users"
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"outside.identity_dir: cannot create {base}: {exc.strerror or exc}") from None
    try:
        for name in config.users:
            d = user_dir(config, home, name)
            try:
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
                identities[name] = load_or_create_identity(d, passphrase_from_env())
            except Exception as exc:  # one clear line for any key-file problem
                raise ConfigError(f"users.{name}: identity in {d}: {exc}") from None
            try:
                trust[name] = TrustStore(d)
            except ContactStoreError as exc:
                raise ConfigError(f"users.{name}: contact store in {d}: {exc}") from None
    except BaseException:
        for store in trust.values():
            store.close()
        raise
    return identities, trust


def _addresses(addr: tuple[str, int]) -> set[tuple[str, int]]:
    """Every (IP, port) ``addr`` resolves to (the PBX's SIP packets come from one of these)."""
    try:
        infos = socket.getaddrinfo(addr[0], addr[1], type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return set()
    return {(str(info[4][0]), int(info[4][1])) for info in infos}


class GatewayHooks:
    """What the configuration adds to the B2BUA's routing and accounting: implements
    ``voipgw.gateway.hooks.B2buaHooks`` (called by Gateway on its loop)."""

    def __init__(self, config: GatewayConfig, gateway: Gateway, metrics: GatewayMetrics) -> None:
        self.config = config
        self.gateway = gateway
        self.metrics = metrics
        self.registrar = Registrar(
            {u.name: u.inside_password or None for u in config.users.values()},
            realm=config.inside.realm,
            auth=config.inside.auth,
        )
        self._pbx_addrs = {
            a for addr in (config.outside.registrar, config.outside.proxy) if addr is not None for a in _addresses(addr)
        }

    def inside_registrar(self) -> Registrar:
        """The phones' registrar on the gateway's SIP socket (REGISTER as the user NAME, digest when inside.auth)."""
        return self.registrar

    def stack_started(self, stack: SipStack) -> None:
        if self.config.outside.listen is not None:
            policy = ScreenPolicy(
                frozenset(self._pbx_addrs), self.config.inside.auth, self.config.inside.trusted_networks
            )

            def screened(req: RequestFacts) -> Refusal | None:
                return screen(policy, req)

            stack.screen_requests(screened)
        if self.config.inside.auth:
            stack.authenticate_invites(self._must_authenticate)

    def _must_authenticate(self, source: tuple[str, int], from_user: str) -> bool:
        """An INVITE that claims to come from an inside user, and not from the PBX, must prove it (reactor thread).
        Calls from the PBX (or another gateway) are authenticated by the end-to-end key exchange instead. With two
        zones the stack asks this only for the inside listener's INVITEs, and every one of those must prove it."""
        if self.config.outside.listen is not None:
            return True
        return from_user in self.config.users and source not in self._pbx_addrs

    def phone_config(self, user: InsideUser, cfg: PhoneConfig) -> PhoneConfig:
        """The outside leg answers the PBX's digest challenges with the user's credentials."""
        u = self.config.users[user.name]
        return dataclasses.replace(cfg, username=u.username, password=u.password or None)

    def inside_routing(self) -> InsideRegistrar:
        """Registered phones (recognised by their credentials with inside.auth, else by their address), outside
        user names, and the PBX a user dialled at the gateway is called at."""
        return InsideRegistrar(self.config.inside.auth, self.registrar.lookup, self.config.outside.registrar)

    def inside_status(self) -> list[dict[str, Any]]:
        """Each fronted user's inside phone: static, or registered (contact, source, seconds left), or not."""
        now = time.monotonic()
        rows: list[dict[str, Any]] = []
        for u in self.config.users.values():
            if u.inside_contact is not None:
                rows.append({"user": u.name, "state": "static", "contact": u.contact})
                continue
            b = self.registrar.lookup(u.name)
            if b is None:
                rows.append({"user": u.name, "state": "not registered"})
            else:
                rows.append(
                    {
                        "user": u.name,
                        "state": "registered",
                        "contact": b.contact_uri,
                        "source": format_hostport(b.source),
                        "expires_in_s": max(0.0, round(b.expires_at - now, 1)),
                        "user_agent": b.user_agent,
                    }
                )
        return rows

    def call_finished(self, bridge: Bridge) -> None:
        snap = bridge.snapshot()
        security = str(snap["security"])
        stats = bridge.outside.media.stats if bridge.outside is not None and bridge.outside.media else None
        failure = None
        if security == "refused":
            rec = bridge.outside.record if bridge.outside is not None else None
            failure = handshake_failure_reason(f"{bridge.reason} {rec.reason if rec else ''}")
        self.metrics.call_finished(
            security,
            transcoded=bool(bridge.inside_codec) and not bridge.passthrough.on,
            sealed=stats.frames_sent if stats else 0,
            opened=stats.frames_opened if stats else 0,
            refused=dict(stats.refused) if stats else {},
            handshake_failure=failure,
            key=id(bridge),
            label=bridge.label,
            degraded=[d.value for d in bridge.outside.record.health.seen] if bridge.outside is not None else (),
            key_exchange=bridge.outside.record.key_exchange.value if bridge.outside is not None else "none",
            inband_refused=dict(stats.inband_refused) if stats else None,
        )
        self.metrics.inside_dropped(bridge.inside_dropped())

    def live_frames(self) -> list[tuple[object, FrameCounts]]:
        """Outside frames of each active call so far, for the metrics (read from the metrics thread)."""
        out: list[tuple[object, FrameCounts]] = []
        for bridge in list(self.gateway.bridges):
            media = bridge.outside.media if bridge.outside is not None else None
            if media is not None:
                st = media.stats
                out.append((id(bridge), (st.frames_sent, st.frames_opened, dict(st.refused))))
        return out

    def live_calls(self) -> list[tuple[str, bool]]:
        """(security, transcoding) of each active call, for the metrics (read from the metrics thread)."""
        out = []
        for bridge in list(self.gateway.bridges):
            rec = bridge.outside.record if bridge.outside is not None else None
            security = rec.security.value if rec is not None else "pending"
            out.append((security, bool(bridge.inside_codec) and not bridge.passthrough.on))
        return out


class GatewayRuntime:
    """``await start()`` (raises ConfigError with one line), serve, ``await stop()`` (idempotent).

    Start: checks (ports free, PBX resolvable and answering), identities, the B2BUA's SIP socket, the control
    socket and metrics, then the registrations (in the background: a PBX that refuses is retried with backoff).
    Stop: registrations removed, every call hung up (BYE/CANCEL), SIP socket closed, control socket removed.
    """

    def __init__(
        self,
        config: GatewayConfig,
        home: Path,
        *,
        no_answer_timeout_s: float = 30.0,
        check_pbx: bool = True,
    ) -> None:
        self.config = config
        self.home = home
        self.check_pbx = check_pbx
        self.gw_config = b2bua_config(config, home, no_answer_timeout_s)
        self.metrics = GatewayMetrics()
        self.gateway: Gateway | None = None
        self.hooks: GatewayHooks | None = None
        self.registrations: Registrations | None = None
        self.ops: OpsServices | None = None
        self.web: WebServer | None = None
        self._trust: dict[str, TrustStore] = {}
        self._started_at = time.monotonic()
        self._stopped = False

    @property
    def port(self) -> int:
        assert self.gateway is not None
        return self.gateway.port

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        registrar = self.config.outside.registrar
        if registrar is None:  # only flag mode has none, and it runs without registrations
            raise ConfigError('outside.registrar: missing (the PBX address, e.g. "pbx.example.org:5060")')
        preflight(self.config)
        if self.check_pbx:
            check_pbx(self.config)
        identities, self._trust = load_users(self.config, self.home)
        gateway = Gateway(self.gw_config, identities, self._trust)
        hooks = GatewayHooks(self.config, gateway, self.metrics)
        gateway.hooks = self.hooks = hooks
        self.metrics.track_active(hooks.live_calls)
        self.metrics.track_frames(hooks.live_frames)
        self.metrics.track_zone_refusals(gateway.zone_refusals)
        self.metrics.track_unanswered(gateway.unanswered_secure_calls)
        self.metrics.track_degraded(gateway.degraded_calls, [d.value for d in Degraded])
        self.gateway = gateway
        try:
            await gateway.start()
        except OSError as exc:
            where = format_hostport(self.config.inside.listen)
            if self.config.outside.listen is not None:
                where += f" or {format_hostport(self.config.outside.listen)}"
            raise ConfigError(
                f"inside.listen/outside.listen: cannot listen on {where} (UDP): {exc.strerror or exc}"
            ) from None
        self.ops = OpsServices(self.config, self.home, self.snapshot, self.metrics)
        await self.ops.start()
        if self.config.web.enabled:
            # Imported here: the web phone brings aiortc and av, which a gateway without [web] never loads.
            from voipgw.web.link import gateway_link
            from voipgw.web.server import web_server

            self.web = web_server(self.config, gateway_link(self.config, gateway))
            try:
                await self.web.start()
            except OSError as exc:
                where = format_hostport(self.config.web.listen)
                raise ConfigError(f"web.listen: cannot listen on {where} (TCP): {exc.strerror or exc}") from None
        assert gateway.stack is not None
        # register = false: a process behind a dispatcher; the PBX routes the users to the dispatcher set instead.
        users = self.config.users.values() if self.config.outside.register else ()
        accounts = [OutsideAccount(u.name, u.outside_aor, u.username, u.password) for u in users]
        self.registrations = Registrations(
            gateway.stack,
            registrar,
            accounts,
            expires=self.config.outside.register_expires,
            on_change=self._registrations_changed,
            transport="udp" if self.config.outside.transport == "auto" else self.config.outside.transport,
        )
        self.metrics.set_registered(0)
        await self.registrations.start()
        self._started_at = time.monotonic()

    def _registrations_changed(self) -> None:
        if self.registrations is not None:
            self.metrics.set_registered(self.registrations.registered_count())

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        # Each stage runs even if an earlier one failed: the SIP socket, the control socket file and the contact
        # stores must never be left behind.
        stages: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        if self.web is not None:
            stages.append(("closing the web phone", self.web.stop))
        if self.registrations is not None and self.gateway is not None and self.gateway.stack is not None:
            stages.append(("removing the registrations", self.registrations.stop))
        if self.gateway is not None and self.gateway.stack is not None:
            stages.append(("hanging up and closing SIP", self.gateway.stop))
        if self.ops is not None:
            stages.append(("closing the control socket and metrics", self.ops.close))
        for what, stage in stages:
            try:
                await stage()
            except Exception:
                log.exception("gateway shutdown: %s failed", what)
        for store in self._trust.values():
            try:
                store.close()
            except Exception:
                log.exception("gateway shutdown: closing a contact store failed")
        self._trust = {}

    def snapshot(self) -> dict[str, Any]:
        """What ``voipgw gateway status`` shows: the B2BUA's calls plus registrations, version and uptime."""
        snap: dict[str, Any] = self.gateway.snapshot() if self.gateway is not None else {}
        snap["version"] = __version__
        snap["uptime_s"] = round(time.monotonic() - self._started_at, 1)
        snap["registrations"] = self.registrations.status() if self.registrations is not None else []
        snap["inside"] = self.hooks.inside_status() if self.hooks is not None else []
        if self.web is not None:
            snap["web"] = self.web.status()
        return snap
