"""The gateway TOML schema: the example loads, every key is documented, and each mistake is one clear line."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voipgw.config import ConfigError as BaseConfigError
from voipgw.config import Policy
from voipgw.ops.config import (
    DEFAULT_INSIDE_LISTEN,
    DEFAULT_INSIDE_RTP_PORTS,
    DEFAULT_OUTSIDE_LISTEN,
    DEFAULT_OUTSIDE_RTP_PORTS,
    ConfigError,
    GatewayConfig,
    check_pbx_answers,
    gateway_config_from_mapping,
    load_gateway_config,
    preflight,
    schema_keys,
)
from voipgw.ops.logs import LogFormat

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "gateway.example.toml"


def minimal(**tables: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "inside": {"listen": "127.0.0.1:0"},
        "outside": {"registrar": "127.0.0.1:5060", "listen": "127.0.0.1:0"},
        "users": {
            "alice": {"outside_aor": "alice@pbx.test", "inside_password": "phone-pw", "password": "outside-secret"}
        },
    }
    for name, table in tables.items():
        data[name] = table
    return data


def error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        gateway_config_from_mapping(data)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_example_loads_and_documents_every_key() -> None:
    config = load_gateway_config(EXAMPLE)
    assert set(config.users) == {"alice", "bob"}
    alice = config.users["alice"]
    assert alice.outside_aor == "alice@pbx.example.org" and alice.username == "alice" and alice.display_name == "Alice"
    assert config.users["bob"].username == "bob", "username defaults to the AOR's user part"
    assert config.outside.registrar == ("pbx.example.org", 5060)
    assert config.outside.identity_dir == Path("/var/lib/voipgw/users")
    assert config.outside.bind_call_id is True and config.inside.listen == ("127.0.0.1", 5070)
    default = gateway_config_from_mapping(
        {"outside": {"registrar": "pbx.test"}, "users": {"a": {"outside_aor": "a@b", "inside_password": "phone-pw"}}}
    )
    assert default.inside.listen == ("127.0.0.1", 5070)
    assert config.metrics.enabled is False and config.metrics.address == ("127.0.0.1", 9464)
    assert config.policy is Policy.REQUIRE and config.log_format is LogFormat.TEXT and config.control_socket is None
    text = EXAMPLE.read_text()
    documented = set(re.findall(r"^#?\s*\[{1,2}([a-z_]+)", text, re.M)) | set(
        re.findall(r"^#?\s*([a-z0-9_]+) =", text, re.M)
    )
    assert schema_keys() <= documented, f"undocumented keys: {sorted(schema_keys() - documented)}"


def test_policy_resolution_order() -> None:
    data = minimal()
    data["users"]["bob"] = {"outside_aor": "sip:Bob@pbx.test", "inside_password": "phone-pw", "policy": "opportunistic"}
    data["destinations"] = [
        {"match": "*@legacy.test", "policy": "opportunistic", "users": ["alice"]},
        {"match": "ceo@*", "policy": "require"},
    ]
    config = gateway_config_from_mapping(data)
    assert config.policy_for("alice", "sip:Carol@legacy.test") is Policy.OPPORTUNISTIC
    assert config.policy_for("alice", "carol@pbx.test") is Policy.REQUIRE
    assert config.policy_for("bob", "carol@legacy.test") is Policy.OPPORTUNISTIC, "bob's own policy"
    assert config.policy_for("bob", "ceo@pbx.test") is Policy.REQUIRE, "a destination rule beats the user's policy"
    assert config.user_for_outside_aor("sip:bob@PBX.test") is config.users["bob"]
    assert config.user_for_outside_aor("nobody@pbx.test") is None


def test_secrets_stay_out_of_repr() -> None:
    data = minimal(inside={"auth": True, "listen": "127.0.0.1:0"})
    data["users"]["alice"]["inside_password"] = "inside-secret"
    config = gateway_config_from_mapping(data)
    assert "outside-secret" not in repr(config) and "inside-secret" not in repr(config)
    assert config.users["alice"].password == "outside-secret"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(pbx={}), "unknown setting 'pbx' (see config/gateway.example.toml)"),
        (lambda d: d["inside"].update(lisen="x"), "unknown setting 'inside.lisen' (see config/gateway.example.toml)"),
        (lambda d: d["users"]["alice"].update(pasword="x"), "unknown setting 'users.alice.pasword'"),
        (lambda d: d.pop("users"), "users: no fronted user (add a [users.NAME] table with outside_aor)"),
        (lambda d: d.update(users={}), "users: no fronted user"),
        (lambda d: d["users"]["alice"].pop("outside_aor"), "users.alice.outside_aor: missing"),
        (
            lambda d: d["users"].update(bob={"outside_aor": "ALICE@pbx.test", "inside_password": "phone-pw"}),
            "users.bob.outside_aor: alice@pbx.test is also users.alice's",
        ),
        (
            lambda d: d["users"].update({"bad name": {"outside_aor": "x@y", "inside_password": "phone-pw"}}),
            "users.bad name: a user name is",
        ),
        (lambda d: d["users"]["alice"].update(outside_aor="alice"), "users.alice.outside_aor: 'alice' is not a SIP"),
        (lambda d: d["outside"].pop("registrar"), "outside.registrar: missing"),
        (lambda d: d["outside"].update(registrar="pbx:0"), "outside.registrar: port 0 is out of range (1..65535)"),
        (lambda d: d["inside"].update(listen="127.0.0.1:70000"), "inside.listen: port 70000 is out of range"),
        (lambda d: d["inside"].update(listen="127.0.0.1:fivek"), "inside.listen: port 'fivek' is not a number"),
        (lambda d: d["inside"].update(listen="127.0.0.1"), "inside.listen: expected HOST:PORT, got '127.0.0.1'"),
        (lambda d: d["inside"].update(listen=5070), 'inside.listen: expected "HOST:PORT"'),
        (lambda d: d.update(metrics={"address": ":9464"}), "metrics.address: ':9464' has no valid host"),
        (lambda d: d.update(metrics={"enabled": "yes"}), "metrics.enabled: expected bool, got 'yes'"),
        (lambda d: d["outside"].update(register_expires=True), "outside.register_expires: expected int, got True"),
        (
            lambda d: d["outside"].update(identity_dir="~nosuchuser-vg/ids"),
            "outside.identity_dir: cannot expand ~ in '~nosuchuser-vg/ids'",
        ),
        (lambda d: d.update(gateway={"control_socket": "a\0b"}), "gateway.control_socket: a path cannot contain a NUL"),
        (lambda d: d["outside"].update(bind_call_id="no"), "outside.bind_call_id: expected bool, got 'no'"),
        (lambda d: d["outside"].update(register_expires=10), "outside.register_expires: must be at least 60"),
        (lambda d: d.update(gateway={"policy": "maybe"}), "gateway.policy: expected 'require' or 'opportunistic'"),
        (lambda d: d.update(gateway={"log_format": "xml"}), "gateway.log_format: expected 'text' or 'json', got"),
        (
            lambda d: d["users"]["alice"].pop("inside_password"),
            "users.alice.inside_password: missing (inside.auth is on by default",
        ),
        # The two zones: own sockets, own RTP ranges, auth off only with trusted networks.
        (
            lambda d: d.update(inside={"listen": "10.0.0.1:5070"}, outside={**d["outside"], "listen": "10.0.0.1:5070"}),
            "outside.listen: 10.0.0.1:5070 is inside.listen too; each zone needs its own socket",
        ),
        (
            lambda d: (
                d["inside"].update(tls_port=5080),
                d["outside"].update(transport="tls", listen="127.0.0.1:5080"),
            ),
            "inside.tls_port: 5080 is the outside TLS listener's port too (outside.listen's port number on the same",
        ),
        (
            lambda d: d["outside"].update(rtp_ports="30000-30010"),
            "outside.rtp_ports: 30000-30010 overlaps inside.rtp_ports 30000-39999 on 127.0.0.1",
        ),
        (
            lambda d: (d["inside"].update(rtp_ports="20000-20100"), d["outside"].update(rtp_ports="20100-20200")),
            "outside.rtp_ports: 20100-20200 overlaps inside.rtp_ports 20000-20100 on 127.0.0.1",
        ),
        (
            lambda d: d["outside"].update(rtp_address="127.0.0.1", rtp_ports="35000-35100"),
            "outside.rtp_ports: 35000-35100 overlaps inside.rtp_ports",
        ),
        (lambda d: d["inside"].update(rtp_ports="20000"), 'inside.rtp_ports: expected "LOW-HIGH"'),
        (lambda d: d["inside"].update(rtp_ports="9-2000"), "inside.rtp_ports: 9-2000 is not a range within"),
        (lambda d: d["inside"].update(rtp_ports="3000-3000"), "inside.rtp_ports: 3000-3000 is not a range within"),
        (lambda d: d["outside"].update(rtp_ports=20000), 'outside.rtp_ports: expected "LOW-HIGH"'),
        (lambda d: d["inside"].update(rtp_address="phones.lan"), "inside.rtp_address: 'phones.lan' is not an IP"),
        (lambda d: d["outside"].update(rtp_address="0.0.0.0"), "outside.rtp_address: 0.0.0.0 is not an address"),
        (lambda d: d["inside"].update(auth=False), "inside.auth: false needs inside.trusted_networks"),
        (
            lambda d: d["inside"].update(auth=False, trusted_networks=["10.0.0.0/33"]),
            "inside.trusted_networks: '10.0.0.0/33' is not a network",
        ),
        (
            lambda d: d["inside"].update(auth=False, trusted_networks="10.0.0.0/8"),
            "inside.trusted_networks: expected a list of CIDRs",
        ),
        (lambda d: d.update(inside=[1]), "[inside] must be a table"),
        (
            lambda d: d.update(destinations=[{"match": "*", "policy": "require", "users": ["carol"]}]),
            "destinations[1].users: unknown user 'carol' (no [users.carol] table)",
        ),
        (lambda d: d.update(destinations=[{"match": "*"}]), "destinations[1].policy: missing"),
        (
            lambda d: d["inside"].update(listen="0.0.0.0:5070"),
            "inside.listen: 0.0.0.0 is not an address peers can send to",
        ),
        (
            lambda d: d["outside"].update(listen="0.0.0.0:5080"),
            "outside.listen: 0.0.0.0 is not an address peers can send to",
        ),
        (lambda d: d["outside"].update(colour=1), "unknown setting 'outside.colour' (see config/gateway.example.toml)"),
    ],
)
def test_each_mistake_is_one_clear_line(mutate: Any, expected: str) -> None:
    data = minimal()
    mutate(data)
    message = error(data)
    assert message.startswith(expected), message


def test_config_error_is_the_cli_config_error() -> None:
    # The CLI already prints voipgw.config.ConfigError as one line; ours must be caught by the same handler.
    assert issubclass(ConfigError, BaseConfigError)


def test_ipv6_and_default_ports() -> None:
    data = minimal()
    data["outside"].update(registrar="[2001:db8::1]", proxy="sbc.test")
    data["users"]["alice"]["inside_contact"] = "[::1]:5062"
    config = gateway_config_from_mapping(data)
    assert config.outside.registrar == ("2001:db8::1", 5060) and config.outside.proxy == ("sbc.test", 5060)
    assert config.users["alice"].inside_contact == ("::1", 5062)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config file .*nope\.toml not found$"):
        load_gateway_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[inside\nlisten = 1\n")
    with pytest.raises(ConfigError, match=r"^config file .*bad\.toml: "):
        load_gateway_config(bad)
    rel = tmp_path / "rel.toml"
    rel.write_text(
        '[gateway]\ncontrol_socket = "run/gw.sock"\n[outside]\nregistrar = "127.0.0.1"\nidentity_dir = "ids"\n'
        '[users.a]\noutside_aor = "a@b.test"\ninside_password = "pw"\n'
    )
    config = load_gateway_config(rel)
    assert config.control_socket == tmp_path / "run" / "gw.sock" and config.outside.identity_dir == tmp_path / "ids"


def with_ports(inside: int, metrics: int | None = None) -> GatewayConfig:
    data = minimal(inside={"listen": f"127.0.0.1:{inside}"})
    if metrics is not None:
        data["metrics"] = {"enabled": True, "address": f"127.0.0.1:{metrics}"}
    return gateway_config_from_mapping(data)


def test_port_in_use_udp_and_tcp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", 0))
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(1)
        uport, tport = udp.getsockname()[1], tcp.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^inside\.listen: 127\.0\.0\.1:{uport} \(UDP\) is already in use"):
            preflight(with_ports(uport))
        with pytest.raises(ConfigError, match=rf"^metrics\.address: 127\.0\.0\.1:{tport} \(TCP\) is already in use"):
            preflight(with_ports(0, tport))
        # Failed checks close their probe sockets (re-using freed ports here could race with other processes).
        fds = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            with pytest.raises(ConfigError):
                preflight(with_ports(uport))
        assert len(os.listdir("/proc/self/fd")) == fds
    preflight(with_ports(0))


def test_unusable_listen_address_and_identity_dir(tmp_path: Path) -> None:
    data = minimal(inside={"listen": "pbx.example.org:5070"})
    with pytest.raises(ConfigError, match=r"^inside\.listen: 'pbx\.example\.org' is not a numeric IP address"):
        preflight(gateway_config_from_mapping(data))
    data = minimal(inside={"listen": "192.0.2.1:5070"})
    with pytest.raises(ConfigError, match=r"^inside\.listen: cannot listen on 192\.0\.2\.1:5070 \(UDP\): "):
        preflight(gateway_config_from_mapping(data))
    (tmp_path / "ids").write_text("")
    data = minimal()
    data["outside"]["identity_dir"] = str(tmp_path / "ids")
    with pytest.raises(ConfigError, match=r"^outside\.identity_dir: .* exists and is not a folder$"):
        preflight(gateway_config_from_mapping(data))


@contextlib.contextmanager
def fake_pbx() -> Iterator[int]:
    """A UDP port that answers every SIP request with 200 OK (echoing its Call-ID), on a thread, until the block
    ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            call_id = next((ln for ln in data.decode(errors="replace").split("\r\n") if ln.startswith("Call-ID")), "")
            sock.sendto(f"SIP/2.0 200 OK\r\n{call_id}\r\nContent-Length: 0\r\n\r\n".encode(), addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        done.set()
        thread.join(5)
        sock.close()


def test_pbx_probe_answered_refused_and_silent() -> None:
    with fake_pbx() as port:
        check_pbx_answers(("127.0.0.1", port), "outside.registrar")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^outside\.registrar: 127\.0\.0\.1:{port} does not answer SIP"):
            check_pbx_answers(("127.0.0.1", port), "outside.registrar", timeout_s=1.0)
    with pytest.raises(ConfigError, match=rf"^outside\.proxy: nothing listens on 127\.0\.0\.1:{port} "):
        check_pbx_answers(("127.0.0.1", port), "outside.proxy")


def test_checker_prints_one_line_and_never_a_traceback(tmp_path: Path) -> None:
    def run(text: str) -> subprocess.CompletedProcess[str]:
        f = tmp_path / "gw.toml"
        f.write_text(text)
        return subprocess.run(
            [sys.executable, "-m", "voipgw.ops.config", str(f)], capture_output=True, text=True, timeout=60, cwd=ROOT
        )

    with fake_pbx() as pbx:
        ok = run(
            f'[outside]\nregistrar = "127.0.0.1:{pbx}"\n[inside]\nlisten = "127.0.0.1:0"\n'
            '[users.a]\noutside_aor = "a@b.test"\ninside_password = "pw"\n'
        )
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 1 user(s), inside SIP on 127.0.0.1:0"), ok.stderr
    for text, line in [
        (
            '[outside]\nregistrar = "127.0.0.1"\n[users.a]\noutside_aor = "a@b.test"\ncolour = 1\n',
            "unknown setting 'users.a.colour'",
        ),
        ('[outside]\nregistrar = "127.0.0.1"\n', "users: no fronted user"),
        ("[outside\n", "config file"),
    ]:
        bad = run(text)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert bad.stderr.count("\n") == 1 and bad.stderr.startswith(f"voipgw: {line}"), bad.stderr


_KEYS = sorted(schema_keys() | {"alice", "x"})
_scalars = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["~", "~nosuchuser-vg", "a\0b", "\x00", "sip:", "@", "[::1", "*", "a@b:99999"]),
    st.sampled_from(["127.0.0.1:5070", "[::1]:0", "a@b.test", "require", "opportunistic", "json", ":", "h:99999"]),
    st.integers(-5, 70000),
    st.booleans(),
    st.floats(allow_nan=False),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _values, max_size=5))
def test_fuzz_any_document_is_a_config_or_one_config_error(data: dict[str, Any]) -> None:
    try:
        config = gateway_config_from_mapping(data)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert config.users


@settings(max_examples=400, deadline=None)
@given(
    table=st.sampled_from(["gateway", "inside", "outside", "metrics", "alice", "rule", "top"]),
    key=st.sampled_from(_KEYS),
    value=_values,
)
def test_fuzz_one_bad_value_in_a_valid_document(table: str, key: str, value: Any) -> None:
    data = minimal(destinations=[{"match": "*@x", "policy": "require", "users": ["alice"]}])
    data.setdefault("gateway", {})
    data.setdefault("metrics", {})
    target = {"alice": data["users"]["alice"], "rule": data["destinations"][0], "top": data}.get(table)
    (target if target is not None else data[table])[key] = value
    try:
        gateway_config_from_mapping(data)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)


def test_unresolvable_pbx_is_one_line() -> None:
    # A 64-character label can never resolve, and fails before any DNS query (no network needed).
    data = minimal()
    data["outside"]["proxy"] = "a" * 64 + ".test"
    with pytest.raises(ConfigError, match=r"^outside\.proxy: cannot resolve 'a{64}\.test' \(not a valid host name\)$"):
        preflight(gateway_config_from_mapping(data))
    preflight(gateway_config_from_mapping(data), resolve=False)
    data["outside"]["proxy"] = "localhost:5061"
    preflight(gateway_config_from_mapping(data))


def test_media_timeout_register_and_outside_transport_reach_the_b2bua(tmp_path: Path) -> None:
    from voipgw.gateway.runtime import b2bua_config

    base: dict[str, Any] = {
        "outside": {"registrar": "127.0.0.1:5060"},
        "users": {"a": {"outside_aor": "a@b", "inside_password": "phone-pw"}},
    }
    default = gateway_config_from_mapping(base)
    assert default.media_timeout_s == 30.0 and default.outside.register is True and default.outside.transport == "udp"
    cfg = gateway_config_from_mapping(
        {
            "gateway": {"media_timeout_s": 12},
            "outside": {"registrar": "127.0.0.1:5061", "register": False, "transport": "tls"},
            "users": {"a": {"outside_aor": "a@b", "inside_password": "phone-pw"}},
        }
    )
    b2bua = b2bua_config(cfg, tmp_path)
    assert b2bua.media_timeout_s == 12.0 and cfg.outside.register is False
    assert b2bua.outside_transport == "tls" and b2bua.outside_tls is not None
    for bad in (0, 4, 3601, True, "30"):
        with pytest.raises(ConfigError, match=r"gateway\.media_timeout_s"):
            gateway_config_from_mapping({**base, "gateway": {"media_timeout_s": bad}})
    with pytest.raises(ConfigError, match=r"outside\.register"):
        gateway_config_from_mapping({**base, "outside": {"registrar": "127.0.0.1", "register": "no"}})


def test_outside_require_hybrid_reaches_the_outside_leg_and_needs_a_stream_transport(tmp_path: Path) -> None:
    from voipgw.config import PhoneConfig
    from voipgw.gateway.b2bua import _outside_transport
    from voipgw.gateway.runtime import b2bua_config

    users = {"a": {"outside_aor": "a@b", "inside_password": "phone-pw"}}
    cfg = gateway_config_from_mapping(
        {"outside": {"registrar": "127.0.0.1:5060", "transport": "tcp", "require_hybrid": True}, "users": users}
    )
    assert cfg.outside.require_hybrid is True
    leg = PhoneConfig(aor="a@b", **_outside_transport(b2bua_config(cfg, tmp_path)))
    assert leg.handshake.require_hybrid is True and leg.offer_handshake.require_hybrid is True
    plain = gateway_config_from_mapping({"outside": {"registrar": "127.0.0.1", "transport": "tcp"}, "users": users})
    assert PhoneConfig(aor="a@b", **_outside_transport(b2bua_config(plain, tmp_path))).handshake.require_hybrid is False
    for transport in ("udp", "auto"):
        with pytest.raises(ConfigError, match=r"outside\.require_hybrid: needs outside\.transport"):
            gateway_config_from_mapping(
                {"outside": {"registrar": "127.0.0.1", "transport": transport, "require_hybrid": True}, "users": users}
            )
    with pytest.raises(ConfigError, match=r"outside\.require_hybrid: expected bool"):
        gateway_config_from_mapping({"outside": {"registrar": "127.0.0.1", "require_hybrid": 1}, "users": users})


@pytest.mark.parametrize(
    ("inside", "outside", "ok"),
    [
        ({}, {}, True),  # the documented defaults: 5070 / 5080, 30000-39999 / 20000-29999
        ({"listen": "10.0.0.1:5060"}, {"listen": "192.0.2.1:5060"}, True),  # same port, two interfaces
        ({"rtp_ports": "20000-29999"}, {"rtp_address": "192.0.2.1"}, True),  # same range, two addresses
        ({"rtp_ports": "40000-40001"}, {"rtp_ports": "40002-40003"}, True),  # adjacent, not overlapping
        ({"listen": "127.0.0.1:0"}, {"listen": "127.0.0.1:0"}, True),  # two ephemeral sockets are two sockets
        ({"auth": False, "trusted_networks": ["192.168.1.0/24", "fd00::/8"]}, {}, True),
        ({"listen": "127.0.0.1:5080"}, {}, False),  # the outside default
        ({"rtp_ports": "29999-30000"}, {}, False),
    ],
)
def test_zone_validation_table(inside: dict[str, Any], outside: dict[str, Any], ok: bool) -> None:
    data = minimal()
    data["inside"] = inside
    data["outside"] = {"registrar": "127.0.0.1:5060", **outside}
    if ok:
        config = gateway_config_from_mapping(data)
        assert config.inside.auth is (inside.get("auth", True))
        assert config.outside.rtp_ports == DEFAULT_OUTSIDE_RTP_PORTS or "rtp_ports" in outside
    else:
        error(data)


def test_zone_defaults_are_documented() -> None:
    config = gateway_config_from_mapping(minimal(inside={}, outside={"registrar": "pbx.test"}))
    assert config.inside.listen == DEFAULT_INSIDE_LISTEN and config.outside.listen == DEFAULT_OUTSIDE_LISTEN
    assert config.inside.rtp_ports == DEFAULT_INSIDE_RTP_PORTS == (30000, 39999)
    assert config.outside.rtp_ports == DEFAULT_OUTSIDE_RTP_PORTS == (20000, 29999)
    assert config.inside.auth is True and config.inside.trusted_networks == ()
    text = EXAMPLE.read_text()
    assert 'rtp_ports = "20000-29999"' in text and 'rtp_ports = "30000-39999"' in text
