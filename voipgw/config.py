"""Phone configuration from TOML (``config/phone.example.toml`` documents every key) plus CLI overrides.

Unknown keys, wrong types and bad values raise :class:`ConfigError` with one line naming the key, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from ratchet.params import MAX_FRAMES_PER_KEY, MAX_INTERVAL_MS, MIN_FRAMES_PER_KEY, MIN_INTERVAL_MS, Suite
from voipgw.phone import TRANSPORTS, PhoneConfig, Policy
from voipgw.trust import KeyChangePolicy


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


def _convert(key: str, value: Any) -> Any:
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
    "media_max_skew_ms": int,
    "bind_call_id": bool,
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


def validate(config: PhoneConfig) -> None:
    if not MIN_INTERVAL_MS <= config.interval_ms <= MAX_INTERVAL_MS:
        raise ConfigError(f"interval_ms: must be within {MIN_INTERVAL_MS}..{MAX_INTERVAL_MS}")
    if not MIN_FRAMES_PER_KEY <= config.frames_per_key <= MAX_FRAMES_PER_KEY:
        raise ConfigError(f"frames_per_key: must be within {MIN_FRAMES_PER_KEY}..{MAX_FRAMES_PER_KEY}")
    # TOML allows nan and inf, which pass every comparison below unnoticed (a nan skew disables the freshness check)
    for name in ("dh_interval_s", "max_skew_s", "no_answer_timeout_s", "media_timeout_s"):
        if not math.isfinite(getattr(config, name)):
            raise ConfigError(f"{name}: must be a finite number")
    if config.media_timeout_s < 0:
        raise ConfigError("media_timeout_s: must be >= 0 (0 never hangs up a silent call)")
    if config.dh_interval_s < 0:
        raise ConfigError("dh_interval_s: must be >= 0 (0 disables in-call DH steps)")
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


def load_phone_config(path: Path | None, overrides: dict[str, Any]) -> PhoneConfig:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        data = raw.get("phone", raw)
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: [phone] must be a table")
    data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return phone_config_from_mapping(data)
