"""The gateway's one configuration type: the TOML file's (``config/gateway.example.toml`` documents every key), which
flag mode builds too, and its start-up checks. Every mistake raises :class:`ConfigError` with one line naming the
key; nothing here may print a traceback, log a password, or keep a socket open after a check."""

from __future__ import annotations

import errno
import fnmatch
import ipaddress
import re
import secrets
import socket
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voipgw.config import ConfigError as ConfigError  # the one ConfigError: the CLI catches both configs' alike
from voipgw.config import Policy, parse_port_range
from voipgw.ops.logs import LogFormat
from voipgw.rtp.sdes import SrtpMode

EXAMPLE = "config/gateway.example.toml"
DEFAULT_INSIDE_LISTEN = ("127.0.0.1", 5070)
DEFAULT_OUTSIDE_LISTEN = ("127.0.0.1", 5080)
DEFAULT_INSIDE_RTP_PORTS = (30000, 39999)
DEFAULT_OUTSIDE_RTP_PORTS = (20000, 29999)
DEFAULT_METRICS = ("127.0.0.1", 9464)
DEFAULT_WEB_LISTEN = ("127.0.0.1", 8443)
DEFAULT_REGISTER_EXPIRES = 300
MIN_REGISTER_EXPIRES = 60
_USER_RE = re.compile(r"[A-Za-z0-9._+-]{1,64}")
_AOR_RE = re.compile(r"[A-Za-z0-9._+!~*'()&=$,;?/%-]+@[A-Za-z0-9.-]+(:[0-9]{1,5})?")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class InsideConfig:
    """The inside zone: the phones. Its listener is their registrar and outbound proxy, and nothing else."""

    listen: tuple[str, int] = DEFAULT_INSIDE_LISTEN
    """Where the phones send SIP (REGISTER and their calls); the PBX never may (see ``outside.listen``)."""
    rtp_address: str | None = None
    """Where the inside legs' RTP sockets are bound (and what the phones are told in SDP); None = listen's host."""
    rtp_ports: tuple[int, int] = DEFAULT_INSIDE_RTP_PORTS
    """The inclusive port range of the inside legs' RTP (and RTCP) sockets."""
    auth: bool = True
    """Challenge inside phones with digest auth on REGISTER and INVITE (each user then needs
    ``inside_password``); off only together with ``trusted_networks``."""
    realm: str = "voipgw"
    srtp: SrtpMode = SrtpMode.OFF
    """SDES-SRTP between the phones and the gateway: "off", "optional" (when the phone does it) or "required"
    (a phone offer without a usable ``a=crypto`` line is refused 488). Give the phones SIP over TLS with it."""
    tls_port: int = 0
    """Where phones reach the gateway over SIP/TLS (with ``outside.tls_cert_file``); 0: a free port."""
    trusted_networks: tuple[Network, ...] = ()
    """With ``auth = false``: the only source networks the inside listener takes requests from."""

    @property
    def rtp_host(self) -> str:
        return self.rtp_address or self.listen[0]


@dataclass(frozen=True)
class OutsideConfig:
    registrar: tuple[str, int] | None
    """The PBX or carrier that registers the fronted users and routes their calls. Required in the file; None only
    in flag mode (no PBX: outside calls go to the proxy, else straight to the dialled URI)."""
    proxy: tuple[str, int] | None = None
    """Outbound proxy; None = the registrar."""
    register_expires: int = DEFAULT_REGISTER_EXPIRES
    identity_dir: Path | None = None
    """One folder per fronted user (``<identity_dir>/<name>/``: identity key and contact store); None = ``<home>/users``
    (where ``voipgw.gateway`` keeps them today)."""
    bind_call_id: bool = True
    """Require the signed Call-ID to equal the SIP Call-ID; False behind a B2BUA PBX that rewrites Call-IDs."""
    inband: bool = True
    """Run the key exchange in the media path when the PBX strips ``a=voipgw`` (docs/PROTOCOL.md §C.6)."""
    inband_wait_s: float = 2.0
    """How long a call waits for the key exchange in the media path (no audio flows meanwhile)."""
    pq_interval_s: float = 60.0
    """Seconds between our in-call ML-KEM exchanges on hybrid calls (docs/PROTOCOL.md §B.12); 0 turns ours off."""
    register: bool = True
    """False: do not REGISTER the users (the PBX routes to this gateway statically, e.g. through a dispatcher)."""
    transport: str = "udp"
    """SIP toward the PBX: "udp", "tcp", "tls" or "auto" (UDP; TCP for requests over 1300 bytes)."""
    require_hybrid: bool = False
    """Refuse outside calls whose key exchange is x25519 alone: the far gateway must speak the post-quantum hybrid
    (offered over "tcp" and "tls" only, so it needs one of them)."""
    tls_ca_file: Path | None = None
    tls_pinned_sha256: str | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = field(default=None, repr=False)
    listen: tuple[str, int] | None = DEFAULT_OUTSIDE_LISTEN
    """The outside zone's SIP listener: the PBX's calls to fronted users, in-dialog requests and our
    registrations' contact; never REGISTER. None only in flag mode (no PBX: one socket, see the CLI help)."""
    rtp_address: str | None = None
    """Where the outside legs' RTP sockets are bound (and what the far end is told); None = listen's host."""
    rtp_ports: tuple[int, int] = DEFAULT_OUTSIDE_RTP_PORTS

    @property
    def rtp_host(self) -> str | None:
        return self.rtp_address or (self.listen[0] if self.listen is not None else None)


@dataclass(frozen=True)
class UserConfig:
    name: str
    """The inside user name (the phone's extension / SIP user part)."""
    outside_aor: str
    username: str
    """Digest username at the PBX (default: the user part of ``outside_aor``)."""
    password: str = field(default="", repr=False)
    inside_password: str = field(default="", repr=False)
    inside_contact: tuple[str, int] | None = None
    """A static phone's SIP address; None = the phone registers to the gateway."""
    display_name: str = ""
    policy: Policy | None = None
    """Overrides the gateway's default policy for this user's calls."""
    inside_uri: str = ""
    """A static phone's own SIP URI when flag mode gave one (``--user NAME=sip:CONTACT``); "" = ``sip:NAME@`` its
    ``inside_contact``."""

    @property
    def contact(self) -> str:
        """Where the static phone is called (a SIP URI); "" for a phone that registers to the gateway."""
        if self.inside_uri:
            return self.inside_uri
        return f"sip:{self.name}@{format_hostport(self.inside_contact)}" if self.inside_contact is not None else ""


@dataclass(frozen=True)
class DestinationRule:
    match: str
    """A shell-style pattern on the far end's AOR, e.g. ``*@legacy.example.org``."""
    policy: Policy
    users: frozenset[str] = frozenset()
    """Only for these inside users; empty = all."""


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = False
    address: tuple[str, int] = DEFAULT_METRICS


@dataclass(frozen=True)
class WebConfig:
    """``[web]``: the browser phone (``voipgw.web``); off by default. HTTPS with ``outside.tls_cert_file``, else
    plain HTTP, allowed on a loopback address only."""

    enabled: bool = False
    listen: tuple[str, int] = DEFAULT_WEB_LISTEN
    session_ttl_s: float = 8 * 3600.0


@dataclass(frozen=True)
class GatewayConfig:
    inside: InsideConfig
    outside: OutsideConfig
    users: Mapping[str, UserConfig]
    destinations: tuple[DestinationRule, ...] = ()
    metrics: MetricsConfig = MetricsConfig()
    web: WebConfig = WebConfig()
    policy: Policy = Policy.REQUIRE
    log_format: LogFormat = LogFormat.TEXT
    control_socket: Path | None = None
    """None = ``<home>/gateway.sock`` (see ``voipgw.ops.control.socket_path``)."""
    media_timeout_s: float = 30.0
    """End an answered call one of whose legs has received no RTP this long (nobody holding)."""
    speak_sas: bool = True
    """``gateway.speak_sas``: after the answer's tone cue, speak its words and the SAS to the inside phone."""
    routes: Mapping[str, str] = field(default_factory=dict)
    """Dialled user -> outside URI, for calls an inside phone dials at the gateway itself: flag mode's ``--route``
    (the file has no such key: there, the PBX routes)."""

    def policy_for(self, user: str, destination_aor: str) -> Policy:
        u = self.users.get(user)
        return choose_policy(self.destinations, user, destination_aor, u.policy if u else None, self.policy)

    def user_for_outside_aor(self, aor: str) -> UserConfig | None:
        aor = aor.removeprefix("sip:").lower()
        return next((u for u in self.users.values() if u.outside_aor == aor), None)


def choose_policy(
    rules: Sequence[DestinationRule], user: str, destination_aor: str, user_policy: Policy | None, default: Policy
) -> Policy:
    """The first destination rule that matches wins, then the user's policy, then the gateway default."""
    dest = destination_aor.removeprefix("sip:").lower()
    for rule in rules:
        if (not rule.users or user in rule.users) and fnmatch.fnmatchcase(dest, rule.match.lower()):
            return rule.policy
    return user_policy if user_policy is not None else default


# --- parsing ---------------------------------------------------------------------------------------------------


def _srtp_mode(value: str) -> SrtpMode:
    try:
        return SrtpMode(value)
    except ValueError:
        raise ConfigError(f'inside.srtp: {value[:20]!r} is not "off", "optional" or "required"') from None


_TABLES: dict[str, frozenset[str]] = {
    "gateway": frozenset({"policy", "log_format", "control_socket", "media_timeout_s", "speak_sas"}),
    "inside": frozenset(
        {"listen", "auth", "realm", "rtp_address", "rtp_ports", "trusted_networks", "srtp", "tls_port"}
    ),
    "outside": frozenset(
        {
            "listen",
            "rtp_address",
            "rtp_ports",
            "registrar",
            "proxy",
            "register_expires",
            "identity_dir",
            "bind_call_id",
            "inband",
            "inband_wait_s",
            "pq_interval_s",
            "register",
            "transport",
            "require_hybrid",
            "tls_ca_file",
            "tls_pinned_sha256",
            "tls_cert_file",
            "tls_key_file",
        }
    ),
    "metrics": frozenset({"enabled", "address"}),
    "web": frozenset({"enabled", "listen", "session_ttl_s"}),
}
_USER_KEYS = frozenset(
    {"outside_aor", "username", "password", "inside_password", "inside_contact", "display_name", "policy"}
)
_RULE_KEYS = frozenset({"match", "policy", "users"})


def schema_keys() -> frozenset[str]:
    """Every key name the schema accepts (the example file must document each one)."""
    return frozenset().union(*_TABLES.values(), _USER_KEYS, _RULE_KEYS, _TABLES, {"users", "destinations"})


def parse_hostport(
    text: object, what: str, default_port: int | None = None, allow_zero: bool = True
) -> tuple[str, int]:
    if not isinstance(text, str) or not text:
        raise ConfigError(f'{what}: expected "HOST:PORT"')
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ConfigError(f"{what}: {text!r} is not a valid HOST:PORT")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not port:
        if default_port is None:
            raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
        port = str(default_port)
    if not port.isdigit():
        raise ConfigError(f"{what}: port {port!r} is not a number")
    p = int(port)
    low = 0 if allow_zero else 1
    if not low <= p <= 65535:
        raise ConfigError(f"{what}: port {p} is out of range ({low}..65535)")
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"{what}: {text!r} has no valid host")
    return host, p


def _check_keys(table: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"unknown setting '{where}{key}' (see {EXAMPLE})")


def _get(table: Mapping[str, Any], key: str, want: type, where: str, default: Any = None) -> Any:
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(f"{where}{key}: expected {want.__name__}, got {value!r}")
    return value


def _inband_wait(o: Mapping[str, Any]) -> float:
    value = o.get("inband_wait_s", 2.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.5 <= value <= 30:
        raise ConfigError(f"outside.inband_wait_s: expected a number of seconds within 0.5..30, got {value!r}")
    return float(value)


def _pq_interval(o: Mapping[str, Any]) -> float:
    value = o.get("pq_interval_s", 60.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86400:
        raise ConfigError(f"outside.pq_interval_s: expected seconds within 0..86400 (0: off), got {value!r}")
    return float(value)


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{key}] must be a table")
    return value


def _policy(value: Any, where: str) -> Policy:
    try:
        return Policy(value)
    except ValueError:
        raise ConfigError(f"{where}: expected 'require' or 'opportunistic', got {value!r}") from None


def _path(value: str, base_dir: Path, where: str) -> Path:
    if "\0" in value:
        raise ConfigError(f"{where}: a path cannot contain a NUL character")
    try:
        p = Path(value).expanduser()
    except RuntimeError:
        raise ConfigError(f"{where}: cannot expand ~ in {value!r} (unknown user or no home directory)") from None
    return p if p.is_absolute() else base_dir / p


def _aor(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f'{where}: expected "user@host"')
    aor = value.removeprefix("sip:").lower()
    if not _AOR_RE.fullmatch(aor):
        raise ConfigError(f'{where}: {value!r} is not a SIP address of record ("user@host")')
    return aor


def _user(name: str, table: Any, inside_auth: bool) -> UserConfig:
    where = f"users.{name}."
    if not _USER_RE.fullmatch(name):
        raise ConfigError(f"users.{name}: a user name is 1-64 of A-Z a-z 0-9 . _ + -")
    if not isinstance(table, Mapping):
        raise ConfigError(f"users.{name}: must be a table")
    _check_keys(table, _USER_KEYS, where)
    if "outside_aor" not in table:
        raise ConfigError(
            f'{where}outside_aor: missing (the user\'s address at the PBX, e.g. "{name}@pbx.example.org")'
        )
    aor = _aor(table["outside_aor"], f"{where}outside_aor")
    inside_password = _get(table, "inside_password", str, where, "")
    if inside_auth and not inside_password:
        raise ConfigError(
            f"{where}inside_password: missing (inside.auth is on by default and challenges every inside phone)"
        )
    contact = table.get("inside_contact")
    policy = table.get("policy")
    return UserConfig(
        name=name,
        outside_aor=aor,
        username=_get(table, "username", str, where, aor.partition("@")[0]),
        password=_get(table, "password", str, where, ""),
        inside_password=inside_password,
        inside_contact=None if contact is None else parse_hostport(contact, f"{where}inside_contact", 5060, False),
        display_name=_get(table, "display_name", str, where, ""),
        policy=None if policy is None else _policy(policy, f"{where}policy"),
    )


def _rules(value: Any, users: Mapping[str, UserConfig]) -> tuple[DestinationRule, ...]:
    if not isinstance(value, list):
        raise ConfigError("destinations: expected [[destinations]] tables")
    rules = []
    for i, rule in enumerate(value, 1):
        where = f"destinations[{i}]."
        if not isinstance(rule, Mapping):
            raise ConfigError(f"destinations[{i}]: must be a table")
        _check_keys(rule, _RULE_KEYS, where)
        for key in ("match", "policy"):
            if key not in rule:
                raise ConfigError(f"{where}{key}: missing")
        match = _get(rule, "match", str, where)
        if not match:
            raise ConfigError(f"{where}match: empty pattern")
        names = _get(rule, "users", list, where, [])
        for n in names:
            if not isinstance(n, str):
                raise ConfigError(f"{where}users: expected user names, got {n!r}")
            if n not in users:
                raise ConfigError(f"{where}users: unknown user {n!r} (no [users.{n}] table)")
        rules.append(DestinationRule(match, _policy(rule["policy"], f"{where}policy"), frozenset(names)))
    return tuple(rules)


def _listen(table: Mapping[str, Any], zone: str, default: tuple[str, int]) -> tuple[str, int]:
    if "listen" not in table:
        return default
    addr = parse_hostport(table["listen"], f"{zone}.listen")
    if addr[0] in ("0.0.0.0", "::", "[::]"):
        raise ConfigError(
            f"{zone}.listen: {addr[0]} is not an address peers can send to (it is given out as a contact); give the"
            " interface's address"
        )
    return addr


def _rtp_address(table: Mapping[str, Any], zone: str) -> str | None:
    value = _get(table, "rtp_address", str, f"{zone}.")
    if value is None:
        return None
    try:
        ip = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        raise ConfigError(f"{zone}.rtp_address: {value!r} is not an IP address") from None
    if ip.is_unspecified:
        raise ConfigError(f"{zone}.rtp_address: {value} is not an address peers can send to; give the interface's")
    return str(ip)


def _port_range(value: Any, where: str, default: tuple[int, int]) -> tuple[int, int]:
    return default if value is None else parse_port_range(value, where)


def _networks(value: Any, where: str) -> tuple[Network, ...]:
    if not isinstance(value, list):
        raise ConfigError(f'{where}: expected a list of CIDRs, e.g. ["192.168.1.0/24"]')
    nets: list[Network] = []
    for item in value:
        try:
            if not isinstance(item, str):
                raise ValueError(item)
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{where}: {item!r} is not a network (CIDR like 192.168.1.0/24)") from None
    return tuple(nets)


def check_zones(inside: InsideConfig, outside: OutsideConfig) -> None:
    """The two zones never share a socket: not the SIP listener, not an RTP port on one address."""
    o_listen = outside.listen
    if o_listen is None:
        return
    if o_listen == inside.listen and o_listen[1] != 0:
        raise ConfigError(
            f"outside.listen: {format_hostport(o_listen)} is inside.listen too; each zone needs its own socket"
        )
    tls_port = inside.tls_port
    same_host = _same_ip(inside.listen[0], o_listen[0])
    if outside.transport == "tls" and tls_port != 0 and tls_port == o_listen[1] and same_host:
        # The outside zone's TLS listener takes outside.listen's port number over TCP: the phones' one cannot.
        raise ConfigError(
            f"inside.tls_port: {tls_port} is the outside TLS listener's port too (outside.listen's port number on the "
            "same address); each zone needs its own socket"
        )
    o_host = outside.rtp_host
    if o_host is not None and _same_ip(o_host, inside.rtp_host):
        (ilo, ihi), (olo, ohi) = inside.rtp_ports, outside.rtp_ports
        if ilo <= ohi and olo <= ihi:
            raise ConfigError(
                f"outside.rtp_ports: {olo}-{ohi} overlaps inside.rtp_ports {ilo}-{ihi} on {o_host}; give the zones"
                " separate ranges or addresses"
            )


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.strip("[]")) == ipaddress.ip_address(b.strip("[]"))
    except ValueError:
        return a == b


def _web(w: Mapping[str, Any], outside: OutsideConfig, users: Mapping[str, UserConfig]) -> WebConfig:
    ttl = w.get("session_ttl_s", WebConfig.session_ttl_s)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 60 <= ttl <= 7 * 86400:
        raise ConfigError(f"web.session_ttl_s: expected seconds between 60 and 604800, got {ttl!r}")
    web = WebConfig(
        enabled=_get(w, "enabled", bool, "web.", False),
        listen=parse_hostport(w["listen"], "web.listen") if "listen" in w else DEFAULT_WEB_LISTEN,
        session_ttl_s=float(ttl),
    )
    if web.enabled and outside.tls_cert_file is None and not _is_loopback(web.listen[0]):
        # The page carries the inside password and the call's SAS: never in the clear across a network.
        raise ConfigError(
            f"web.listen: {web.listen[0]} is not a loopback address; plain HTTP is allowed on loopback only"
            " (give outside.tls_cert_file and outside.tls_key_file for HTTPS)"
        )
    if web.enabled and (nopw := sorted(n for n, u in users.items() if not u.inside_password)):
        raise ConfigError(f"web: users {', '.join(nopw)} have no inside_password to log in to the web phone with")
    return web


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def gateway_config_from_mapping(data: Mapping[str, Any], base_dir: Path = Path()) -> GatewayConfig:
    """Validate a parsed TOML document; relative paths are taken relative to ``base_dir`` (the file's folder)."""
    _check_keys(data, frozenset(_TABLES) | {"users", "destinations"}, "")
    g, i, o, m, w = (_table(data, k) for k in ("gateway", "inside", "outside", "metrics", "web"))
    for name, table in (("gateway", g), ("inside", i), ("outside", o), ("metrics", m), ("web", w)):
        _check_keys(table, _TABLES[name], f"{name}.")

    auth = _get(i, "auth", bool, "inside.", True)
    trusted = _networks(i.get("trusted_networks", []), "inside.trusted_networks")
    if not auth and not trusted:
        raise ConfigError(
            'inside.auth: false needs inside.trusted_networks (the phones\' networks, e.g. ["192.168.1.0/24"]);'
            " requests from anywhere else are then refused"
        )
    inside = InsideConfig(
        listen=_listen(i, "inside", DEFAULT_INSIDE_LISTEN),
        rtp_address=_rtp_address(i, "inside"),
        rtp_ports=_port_range(i.get("rtp_ports"), "inside.rtp_ports", DEFAULT_INSIDE_RTP_PORTS),
        auth=auth,
        realm=_get(i, "realm", str, "inside.", "voipgw"),
        srtp=_srtp_mode(_get(i, "srtp", str, "inside.", SrtpMode.OFF.value)),
        tls_port=_get(i, "tls_port", int, "inside.", 0),
        trusted_networks=trusted,
    )
    if not 0 <= inside.tls_port <= 65535:
        raise ConfigError(f"inside.tls_port: {inside.tls_port} is not a port number")
    if "registrar" not in o:
        raise ConfigError('outside.registrar: missing (the PBX address, e.g. "pbx.example.org:5060")')
    expires = _get(o, "register_expires", int, "outside.", DEFAULT_REGISTER_EXPIRES)
    if expires < MIN_REGISTER_EXPIRES:
        raise ConfigError(f"outside.register_expires: must be at least {MIN_REGISTER_EXPIRES} seconds")
    identity_dir = _get(o, "identity_dir", str, "outside.")
    outside = OutsideConfig(
        registrar=parse_hostport(o["registrar"], "outside.registrar", 5060, allow_zero=False),
        proxy=None if "proxy" not in o else parse_hostport(o["proxy"], "outside.proxy", 5060, allow_zero=False),
        register_expires=expires,
        identity_dir=None if not identity_dir else _path(identity_dir, base_dir, "outside.identity_dir"),
        bind_call_id=_get(o, "bind_call_id", bool, "outside.", True),
        inband=_get(o, "inband", bool, "outside.", True),
        inband_wait_s=_inband_wait(o),
        pq_interval_s=_pq_interval(o),
        register=_get(o, "register", bool, "outside.", True),
        listen=_listen(o, "outside", DEFAULT_OUTSIDE_LISTEN),
        rtp_address=_rtp_address(o, "outside"),
        rtp_ports=_port_range(o.get("rtp_ports"), "outside.rtp_ports", DEFAULT_OUTSIDE_RTP_PORTS),
        **_outside_tls(o, base_dir),
    )
    check_zones(inside, outside)

    raw_users = data.get("users")
    if not isinstance(raw_users, Mapping) or not raw_users:
        raise ConfigError("users: no fronted user (add a [users.NAME] table with outside_aor)")
    users = {name: _user(name, table, inside.auth) for name, table in raw_users.items()}
    seen: dict[str, str] = {}
    for u in users.values():
        if u.outside_aor in seen:
            raise ConfigError(f"users.{u.name}.outside_aor: {u.outside_aor} is also users.{seen[u.outside_aor]}'s")
        seen[u.outside_aor] = u.name

    metrics = MetricsConfig(
        enabled=_get(m, "enabled", bool, "metrics.", False),
        address=parse_hostport(m["address"], "metrics.address") if "address" in m else DEFAULT_METRICS,
    )
    log_format = _get(g, "log_format", str, "gateway.", "text")
    try:
        fmt = LogFormat(log_format)
    except ValueError:
        raise ConfigError(f"gateway.log_format: expected 'text' or 'json', got {log_format!r}") from None
    control = _get(g, "control_socket", str, "gateway.", "")
    media_timeout = g.get("media_timeout_s", 30.0)
    if isinstance(media_timeout, bool) or not isinstance(media_timeout, int | float) or not 5 <= media_timeout <= 3600:
        raise ConfigError(f"gateway.media_timeout_s: expected seconds between 5 and 3600, got {media_timeout!r}")
    return GatewayConfig(
        inside=inside,
        outside=outside,
        users=users,
        destinations=_rules(data.get("destinations", []), users),
        metrics=metrics,
        web=_web(w, outside, users),
        policy=_policy(g.get("policy", "require"), "gateway.policy"),
        log_format=fmt,
        control_socket=_path(control, base_dir, "gateway.control_socket") if control else None,
        media_timeout_s=float(media_timeout),
        speak_sas=_get(g, "speak_sas", bool, "gateway.", True),
    )


def load_gateway_config(path: Path) -> GatewayConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    return gateway_config_from_mapping(data, path.parent)


# --- start-up checks --------------------------------------------------------------------------------------------


def format_hostport(addr: tuple[str, int]) -> str:
    """``host:port``, with an IPv6 host in brackets (as in a SIP URI)."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_bind(addr: tuple[str, int], kind: int, what: str) -> None:
    """Raise :class:`ConfigError` unless ``addr`` can be bound now (the probe socket is closed at once)."""
    host, port = addr
    proto = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
    where = format_hostport(addr)
    try:
        infos = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST)
    except socket.gaierror:
        raise ConfigError(f"{what}: {host!r} is not a numeric IP address to listen on") from None
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            # Match what an HTTP server does, so a socket in TIME_WAIT does not read as "in use".
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"{what}: {where} ({proto}) is already in use by another process") from None
        raise ConfigError(f"{what}: cannot listen on {where} ({proto}): {exc.strerror or exc}") from None
    finally:
        sock.close()


def check_resolves(addr: tuple[str, int], what: str) -> None:
    """Raise :class:`ConfigError` unless ``addr``'s host resolves now (a PBX that does not answer is not an error
    here: registration retries with backoff and the status shows it)."""
    host, port = addr
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        detail = exc.strerror if isinstance(exc, socket.gaierror) else "not a valid host name"
        raise ConfigError(f"{what}: cannot resolve {host!r} ({detail})") from None


PBX_PROBE_TIMEOUT_S = 4.0


def check_pbx_answers(addr: tuple[str, int], what: str, timeout_s: float = PBX_PROBE_TIMEOUT_S) -> None:
    """Raise :class:`ConfigError` unless something at ``addr`` answers a SIP OPTIONS with any SIP response
    within ``timeout_s`` (retransmitted at 0.5, 1, 2 s). Once the gateway runs, a PBX that goes away is retried
    with backoff instead; at start-up, no answer at all is almost always a wrong address or port."""
    host, port = addr
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        detail = exc.strerror if isinstance(exc, socket.gaierror) else "not a valid host name"
        raise ConfigError(f"{what}: cannot resolve {host!r} ({detail})") from None
    family, _, _, _, sockaddr = infos[0]
    tag = secrets.token_hex(6)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(sockaddr)  # connected: an ICMP port unreachable comes back as ECONNREFUSED
            lhost, lport = sock.getsockname()[:2]
            target = f"[{sockaddr[0]}]:{port}" if family == socket.AF_INET6 else f"{sockaddr[0]}:{port}"
            via = f"[{lhost}]:{lport}" if family == socket.AF_INET6 else f"{lhost}:{lport}"
            msg = (
                f"OPTIONS sip:{target} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK{tag};rport\r\n"
                f"From: <sip:voipgw-probe@{via}>;tag={tag}\r\nTo: <sip:{target}>\r\nCall-ID: probe-{tag}\r\n"
                f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            deadline = time.monotonic() + timeout_s
            wait = 0.5
            while (left := deadline - time.monotonic()) > 0:
                sock.send(msg)
                sock.settimeout(min(wait, left))
                wait *= 2
                try:
                    while True:
                        data = sock.recv(65535)
                        if data.startswith(b"SIP/2.0 ") and f"probe-{tag}".encode() in data:
                            return
                except TimeoutError:
                    continue
        except ConnectionRefusedError:
            raise ConfigError(f"{what}: nothing listens on {format_hostport(addr)} (UDP port unreachable)") from None
        except OSError as exc:
            raise ConfigError(f"{what}: cannot reach {format_hostport(addr)}: {exc.strerror or exc}") from None
    where = format_hostport(addr)
    raise ConfigError(f"{what}: {where} does not answer SIP (no reply to OPTIONS within {timeout_s:g} s)")


OUTSIDE_TRANSPORTS = ("udp", "tcp", "tls", "auto")


def _outside_tls(o: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    """The ``outside.transport`` and ``outside.tls_*`` keys: files must exist now, not at the first call."""
    transport = _get(o, "transport", str, "outside.", "udp")
    if transport not in OUTSIDE_TRANSPORTS:
        raise ConfigError(f"outside.transport: {transport!r} is not one of {', '.join(OUTSIDE_TRANSPORTS)}")
    values: dict[str, Any] = {"transport": transport}
    if _get(o, "require_hybrid", bool, "outside.", False):
        if transport not in ("tcp", "tls"):
            raise ConfigError(
                'outside.require_hybrid: needs outside.transport "tcp" or "tls" (the hybrid is offered over those only)'
            )
        values["require_hybrid"] = True
    for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        raw = _get(o, key, str, "outside.")
        if raw:
            path = _path(raw, base_dir, f"outside.{key}")
            if not path.is_file():
                raise ConfigError(f"outside.{key}: {path} does not exist")
            values[key] = path
    pin = _get(o, "tls_pinned_sha256", str, "outside.")
    if pin:
        hexpin = pin.replace(":", "").strip().lower()
        if len(hexpin) != 64 or any(c not in "0123456789abcdef" for c in hexpin):
            raise ConfigError("outside.tls_pinned_sha256: not a hex SHA-256 fingerprint (64 hex digits)")
        values["tls_pinned_sha256"] = pin
    if ("tls_cert_file" in values) != ("tls_key_file" in values):
        raise ConfigError("outside.tls_cert_file and outside.tls_key_file go together")
    return values


def check_pbx_connects(addr: tuple[str, int], what: str, timeout_s: float = PBX_PROBE_TIMEOUT_S) -> None:
    """For SIP over TCP or TLS: raise :class:`ConfigError` unless ``addr`` accepts a TCP connection (the TLS
    certificate is checked by the first real request, which fails with the reason)."""
    try:
        with socket.create_connection(addr, timeout=timeout_s):
            return
    except (socket.gaierror, UnicodeError):
        raise ConfigError(f"{what}: cannot resolve {addr[0]!r}") from None
    except ConnectionRefusedError:
        raise ConfigError(f"{what}: nothing accepts TCP connections on {format_hostport(addr)}") from None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot reach {format_hostport(addr)} over TCP: {exc.strerror or exc}") from None


def check_pbx(config: GatewayConfig, timeout_s: float = PBX_PROBE_TIMEOUT_S) -> None:
    """:func:`check_pbx_answers` on the gateway's next hop to the PBX (the outbound proxy, else the registrar);
    over TCP or TLS, :func:`check_pbx_connects` on each."""
    if config.outside.transport in ("tcp", "tls"):
        for addr, what in ((config.outside.registrar, "outside.registrar"), (config.outside.proxy, "outside.proxy")):
            if addr is not None:
                check_pbx_connects(addr, what, timeout_s)
        return
    if config.outside.proxy is not None:
        check_pbx_answers(config.outside.proxy, "outside.proxy", timeout_s)
    elif config.outside.registrar is not None:
        check_pbx_answers(config.outside.registrar, "outside.registrar", timeout_s)


def preflight(config: GatewayConfig, resolve: bool = True) -> None:
    """The start-up checks that need the machine: ports free, identity folder usable, PBX name resolvable."""
    if config.inside.listen[1] != 0:
        check_bind(config.inside.listen, socket.SOCK_DGRAM, "inside.listen")
    if config.outside.listen is not None and config.outside.listen[1] != 0:
        check_bind(config.outside.listen, socket.SOCK_DGRAM, "outside.listen")
    if config.metrics.enabled and config.metrics.address[1] != 0:
        check_bind(config.metrics.address, socket.SOCK_STREAM, "metrics.address")
    if config.web.enabled and config.web.listen[1] != 0:
        check_bind(config.web.listen, socket.SOCK_STREAM, "web.listen")
    d = config.outside.identity_dir
    if d is not None and d.exists() and not d.is_dir():
        raise ConfigError(f"outside.identity_dir: {d} exists and is not a folder")
    if resolve and config.outside.registrar is not None:
        check_resolves(config.outside.registrar, "outside.registrar")
        if config.outside.proxy is not None:
            check_resolves(config.outside.proxy, "outside.proxy")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m voipgw.ops.config FILE``: check a gateway config (and its ports) and print one line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m voipgw.ops.config FILE", file=sys.stderr)
        return 2
    try:
        config = load_gateway_config(Path(args[0]))
        preflight(config)
        check_pbx(config)
    except ConfigError as exc:
        print(f"voipgw: {exc}", file=sys.stderr)
        return 2
    metrics = format_hostport(config.metrics.address) if config.metrics.enabled else "off"
    assert config.outside.registrar is not None  # the file requires it
    print(
        f"ok: {len(config.users)} user(s), inside SIP on {format_hostport(config.inside.listen)}, outside SIP on"
        f" {format_hostport(config.outside.listen or config.inside.listen)}"
        f" -> PBX {format_hostport(config.outside.registrar)}, metrics {metrics}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
