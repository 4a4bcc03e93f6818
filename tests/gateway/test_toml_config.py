"""The TOML configuration as the B2BUA sees it: users, contacts, policies, the PBX as next hop, per-user folders."""

from __future__ import annotations

from pathlib import Path

from voipgw.config import Policy
from voipgw.gateway.runtime import b2bua_config, user_dir
from voipgw.ops.config import DestinationRule, gateway_config_from_mapping


def test_the_config_maps_onto_the_b2bua() -> None:
    ops = gateway_config_from_mapping(
        {
            "gateway": {"policy": "opportunistic"},
            "inside": {"listen": "10.0.0.2:5070"},
            "outside": {"registrar": "pbx.test:5080", "bind_call_id": False},
            "users": {
                "alice": {
                    "outside_aor": "alice@pbx.test",
                    "inside_password": "phone-pw",
                    "inside_contact": "10.0.0.7:5062",
                    "display_name": "Al",
                },
                "bob": {"outside_aor": "bob@pbx.test", "inside_password": "phone-pw", "policy": "require"},
            },
            "destinations": [{"match": "*@legacy.test", "policy": "opportunistic", "users": ["bob"]}],
        }
    )
    cfg = b2bua_config(ops, Path("/srv/gw"), no_answer_timeout_s=12.0)
    assert (cfg.listen_host, cfg.listen_port) == ("10.0.0.2", 5070)
    assert cfg.outside_proxy == ("pbx.test", 5080), "without outside.proxy the registrar is the next hop"
    assert cfg.bind_call_id is False and cfg.no_answer_timeout_s == 12.0 and cfg.routes == {}
    alice, bob = cfg.users
    assert (alice.name, alice.contact, alice.outside_aor, alice.display_name) == (
        "alice", "sip:alice@10.0.0.7:5062", "alice@pbx.test", "Al"
    )  # fmt: skip
    assert bob.contact == "" and bob.display_name is None, "a registering phone's contact comes per call"
    assert cfg.policy is Policy.OPPORTUNISTIC and alice.policy is None and bob.policy is Policy.REQUIRE
    assert cfg.destinations == (DestinationRule("*@legacy.test", Policy.OPPORTUNISTIC, frozenset({"bob"})),)
    assert cfg.policy_for("bob", "carol@legacy.test") is Policy.OPPORTUNISTIC
    assert cfg.policy_for("bob", "carol@pbx.test") is Policy.REQUIRE
    assert cfg.policy_for("alice", "carol@legacy.test") is Policy.OPPORTUNISTIC  # the gateway default
    proxied = gateway_config_from_mapping(
        {
            "outside": {"registrar": "pbx.test", "proxy": "sbc.test:5062"},
            "users": {"a": {"outside_aor": "a@pbx.test", "inside_password": "phone-pw"}},
        }
    )
    assert b2bua_config(proxied, Path("/srv/gw")).outside_proxy == ("sbc.test", 5062)
    assert user_dir(proxied, Path("/srv/gw"), "a") == Path("/srv/gw/users/a")
    own = gateway_config_from_mapping(
        {
            "outside": {"registrar": "pbx.test", "identity_dir": "/keys"},
            "users": {"a": {"outside_aor": "a@pbx.test", "inside_password": "phone-pw"}},
        }
    )
    assert user_dir(own, Path("/srv/gw"), "a") == Path("/keys/a")
