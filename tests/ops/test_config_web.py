"""``[web]`` in the gateway config: off by default, plain HTTP on loopback only, a certificate for anything else,
and every user must have an inside password to log in with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.pki import make_pki
from voipgw.ops.config import DEFAULT_WEB_LISTEN, ConfigError, gateway_config_from_mapping


def config(web: dict[str, Any] | None = None, **outside: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "inside": {"listen": "127.0.0.1:0"},
        "outside": {"registrar": "127.0.0.1:5060", "listen": "127.0.0.1:0", **outside},
        "users": {"alice": {"outside_aor": "alice@pbx.test", "inside_password": "phone-pw"}},
    }
    if web is not None:
        data["web"] = web
    return data


def test_off_by_default() -> None:
    web = gateway_config_from_mapping(config()).web
    assert web.enabled is False and web.listen == DEFAULT_WEB_LISTEN == ("127.0.0.1", 8443)
    assert web.session_ttl_s == 8 * 3600


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "[::1]:8443", "127.9.9.9:0"])
def test_plain_http_on_loopback(listen: str) -> None:
    web = gateway_config_from_mapping(config({"enabled": True, "listen": listen, "session_ttl_s": 600})).web
    assert web.enabled and web.session_ttl_s == 600.0


def test_plain_http_elsewhere_needs_the_certificate(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"web.listen: 0.0.0.0 is not a loopback address.*tls_cert_file"):
        gateway_config_from_mapping(config({"enabled": True, "listen": "0.0.0.0:8443"}))
    assert not gateway_config_from_mapping(config({"listen": "0.0.0.0:8443"})).web.enabled  # off: no check
    pki = make_pki(tmp_path)
    cert, key = pki.kamailio
    web = gateway_config_from_mapping(
        config({"enabled": True, "listen": "0.0.0.0:8443"}, tls_cert_file=str(cert), tls_key_file=str(key))
    ).web
    assert web.listen == ("0.0.0.0", 8443)


@pytest.mark.parametrize(
    ("web", "message"),
    [
        ({"enabled": "yes"}, "web.enabled"),
        ({"enabled": True, "session_ttl_s": 5}, "web.session_ttl_s: expected seconds between 60"),
        ({"enabled": True, "session_ttl_s": True}, "web.session_ttl_s"),
        ({"listen": "nowhere"}, "web.listen"),
        ({"port": 1}, "web.port"),
    ],
)
def test_mistakes_are_one_line(web: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        gateway_config_from_mapping(config(web))


def test_every_user_needs_an_inside_password() -> None:
    data = config({"enabled": True})
    data["inside"] = {"listen": "127.0.0.1:0", "auth": False, "trusted_networks": ["127.0.0.0/8"]}
    data["users"]["bob"] = {"outside_aor": "bob@pbx.test"}
    with pytest.raises(ConfigError, match="web: users bob have no inside_password"):
        gateway_config_from_mapping(data)
