"""Phone configuration: the settings type (:class:`PhoneConfig`, :class:`Policy`), read from TOML
(``config/phone.example.toml`` documents every key) plus CLI overrides. Pure data: it never loads the SIP stack.

Unknown keys, wrong types and bad values raise :class:`ConfigError` with one line naming the key, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import enum
import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratchet.handshake import HandshakeConfig
from ratchet.params import (
    DEFAULT_INTERVAL_MS,
    MAX_FRAMES_PER_KEY,
    MAX_INTERVAL_MS,
    MIN_FRAMES_PER_KEY,
    MIN_INTERVAL_MS,
    SendParams,
    Suite,
)
from ratchet.session import MediaConfig
from voipgw.trust import KeyChangePolicy

if TYPE_CHECKING:
    from voipgw.sip.tls import TlsOptions

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
    rtp_ports: tuple[int, int] | None = None
    """RTP sockets only from this inclusive port range (``"20000-29999"`` in the file: a firewall's media range,
    or a gateway zone's); None = any free port."""
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
    pq_interval_s: float = 60.0
    """On hybrid calls, seconds between the end of one in-call ML-KEM exchange of ours and the start of the next
    (PROTOCOL.md §B.12; 0 disables ours)."""
    media_max_skew_ms: int = 2000
    bind_call_id: bool = True
    """Require the handshake's signed Call-ID to equal the SIP Call-ID (turn off behind Call-ID-rewriting B2BUAs)."""
    inband: bool = True
    """When the SDP arrives without ``a=voipgw`` but with opus (a PBX rebuilt it), run the key exchange in the media
    path (docs/PROTOCOL.md §C.6) instead of refusing (``require``) or going plain (``opportunistic``)."""
    inband_wait_s: float = 2.0
    """How long either side waits for the key exchange in the media path; no audio flows meanwhile."""
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
        from voipgw.sip.tls import TlsOptions  # here, not at the top: loading the settings must not load SIP

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
        return MediaConfig(
            dh_interval_s=self.dh_interval_s, max_skew_ms=self.media_max_skew_ms, pq_interval_s=self.pq_interval_s
        )


class ConfigError(ValueError):
    """One line naming the key at fault (phone or gateway configuration); the CLI prints it, never a traceback."""


def parse_hostport(text: str, what: str, default_port: int | None = None) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
        host, port = text, str(default_port)
    try:
        p = int(port)
    except ValueError:
        raise ConfigError(f"{what}: port {port!r} is not a number") from None
    if not 0 <= p <= 65535 or not host:
        raise ConfigError(f"{what}: {text!r} is not a valid HOST:PORT")
    return host, p


_SUITES = {"x25519": Suite.X25519, "x25519-mlkem768": Suite.X25519_MLKEM768}


def parse_port_range(value: Any, where: str) -> tuple[int, int]:
    """``"20000-29999"``: an inclusive range of at least two ports (an RTP and an RTCP socket)."""
    low_s, sep, high_s = value.partition("-") if isinstance(value, str) else ("", "", "")
    if not sep or not low_s.strip().isdigit() or not high_s.strip().isdigit():
        raise ConfigError(f'{where}: expected "LOW-HIGH", e.g. "20000-29999", got {value!r}')
    low, high = int(low_s), int(high_s)
    if not 1024 <= low < high <= 65535:
        raise ConfigError(f"{where}: {low}-{high} is not a range within 1024-65535 with LOW < HIGH")
    return low, high


def _convert(key: str, value: Any) -> Any:
    if key == "rtp_ports":
        return parse_port_range(value, key)
    if key in ("registrar", "proxy"):
        if not isinstance(value, str):
            raise ConfigError(f'{key}: expected "HOST:PORT"')
        return parse_hostport(value, key, 5060)
    if key == "key_change_policy":
        try:
            return KeyChangePolicy(value)
        except ValueError:
            known = ", ".join(p.value for p in KeyChangePolicy)
            raise ConfigError(f"key_change_policy: expected one of {known}, got {value!r}") from None
    if key == "policy":
        try:
            return Policy(value)
        except ValueError:
            raise ConfigError(f"policy: expected 'require' or 'opportunistic', got {value!r}") from None
    if key == "transport":
        if value not in TRANSPORTS:
            raise ConfigError(f"transport: expected one of {', '.join(TRANSPORTS)}, got {value!r}")
        return value
    if key == "suites":
        if not isinstance(value, list) or not value:
            raise ConfigError('suites: expected a non-empty list such as ["x25519"]')
        try:
            suites = frozenset(_SUITES[v] for v in value)
        except (KeyError, TypeError):
            raise ConfigError(f"suites: unknown suite in {value!r} (known: {', '.join(_SUITES)})") from None
        if Suite.X25519 not in suites:
            raise ConfigError("suites: x25519 is mandatory")
        return suites
    return value


_TYPES: dict[str, type | tuple[type, ...]] = {
    "aor": str,
    "display_name": str,
    "listen_host": str,
    "listen_port": int,
    "rtp_host": str,
    "rtp_ports": str,
    "username": str,
    "password": str,
    "register_expires": int,
    "no_answer_timeout_s": (int, float),
    "media_timeout_s": (int, float),
    "max_skew_s": (int, float),
    "interval_ms": int,
    "frames_per_key": int,
    "per_frame_keys": bool,
    "dh_interval_s": (int, float),
    "pq_interval_s": (int, float),
    "media_max_skew_ms": int,
    "bind_call_id": bool,
    "inband": bool,
    "inband_wait_s": (int, float),
    "accept_any_callee": bool,
    "require_hybrid": bool,
    "e2e": bool,
    "key_change_policy": str,
    "transport": str,
    "tls_ca_file": str,
    "tls_pinned_sha256": str,
    "tls_cert_file": str,
    "tls_key_file": str,
    "tls_port": int,
}


def phone_config_from_mapping(data: dict[str, Any], base: PhoneConfig | None = None) -> PhoneConfig:
    known = {f.name for f in fields(PhoneConfig)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"unknown setting {key!r} (see config/phone.example.toml)")
        want = _TYPES.get(key)
        if want is not None and (not isinstance(value, want) or (want is int and isinstance(value, bool))):
            raise ConfigError(f"{key}: expected {getattr(want, '__name__', 'a number')}, got {value!r}")
        values[key] = _convert(key, value)
    if base is None:
        if "aor" not in values:
            raise ConfigError('aor: missing (our address of record, e.g. "alice@example.org")')
        config = PhoneConfig(**values)
    else:
        config = replace(base, **values)
    validate(config)
    return config


MIN_DH_INTERVAL_S = 1.0
"""Shortest in-call DH interval. A step is announced inside the current epoch's frames and taken only once the
peer acknowledged it (PROTOCOL.md §B.4), which takes a round trip and a few frames; a shorter interval would only
queue steps behind their acknowledgements and put a 42-byte key into more frames' audio budget."""


def validate(config: PhoneConfig) -> None:
    if not MIN_INTERVAL_MS <= config.interval_ms <= MAX_INTERVAL_MS:
        raise ConfigError(f"interval_ms: must be within {MIN_INTERVAL_MS}..{MAX_INTERVAL_MS}")
    if not MIN_FRAMES_PER_KEY <= config.frames_per_key <= MAX_FRAMES_PER_KEY:
        raise ConfigError(f"frames_per_key: must be within {MIN_FRAMES_PER_KEY}..{MAX_FRAMES_PER_KEY}")
    # TOML allows nan and inf, which pass every comparison below unnoticed (a nan skew disables the freshness check)
    for name in (
        "dh_interval_s",
        "pq_interval_s",
        "max_skew_s",
        "no_answer_timeout_s",
        "media_timeout_s",
        "inband_wait_s",
    ):
        if not math.isfinite(getattr(config, name)):
            raise ConfigError(f"{name}: must be a finite number")
    if config.media_timeout_s < 0:
        raise ConfigError("media_timeout_s: must be >= 0 (0 never hangs up a silent call)")
    if config.dh_interval_s < 0:
        raise ConfigError("dh_interval_s: must be >= 0 (0 disables in-call DH steps)")
    if config.pq_interval_s < 0:
        raise ConfigError("pq_interval_s: must be >= 0 (0 disables our in-call ML-KEM exchanges)")
    if 0 < config.dh_interval_s < MIN_DH_INTERVAL_S:
        raise ConfigError(
            f"dh_interval_s: must be 0 or at least {MIN_DH_INTERVAL_S:g} s (each step waits for the peer to "
            f"acknowledge its key, and every key announced takes audio bytes from a frame)"
        )
    if not 0.5 <= config.inband_wait_s <= 30:
        raise ConfigError("inband_wait_s: must be within 0.5..30 s (no audio flows while it runs)")
    if config.max_skew_s <= 0 or config.no_answer_timeout_s <= 0:
        raise ConfigError("max_skew_s and no_answer_timeout_s must be positive")
    window = -(-config.media_max_skew_ms // config.interval_ms)
    if config.media_max_skew_ms < 0 or window > 31:
        raise ConfigError("media_max_skew_ms: must span at most 31 intervals of interval_ms")
    if not config.e2e and config.policy is Policy.REQUIRE:
        raise ConfigError('e2e = false needs policy = "opportunistic" (require refuses calls without the key exchange)')
    if not 0 <= config.listen_port <= 65535:
        raise ConfigError("listen_port: out of range")
    if config.require_hybrid:
        if Suite.X25519_MLKEM768 not in config.suites:
            raise ConfigError('require_hybrid: add "x25519-mlkem768" to suites')
        if config.transport == "udp":
            # The hybrid INVITE (2.6-2.8 KB) is never offered over UDP (it would be IP-fragmented), so every
            # call would be refused.
            raise ConfigError('require_hybrid: needs transport "auto", "tcp" or "tls" (no hybrid offers over UDP)')


DEFAULT_PHONE_CONFIG = "phone.toml"
"""Read from ``<home>`` by ``call`` and ``listen`` when no --config is given and the file exists."""


def load_phone_config(
    path: Path | None, overrides: dict[str, Any], defaults: dict[str, Any] | None = None
) -> PhoneConfig:
    """``defaults`` < the file's settings < ``overrides`` (command-line flags; None values are ignored)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {path}: is a directory (give the TOML file)") from None
        except OSError as exc:
            raise ConfigError(f"config file {path}: cannot read it ({exc.strerror})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        data = raw.get("phone", raw)
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: [phone] must be a table")
    data = {**(defaults or {}), **data, **{k: v for k, v in overrides.items() if v is not None}}
    return phone_config_from_mapping(data)
