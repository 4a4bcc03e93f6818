"""The gateway's two trust zones against an attacker on the PBX's side (issue 12): real Kamailio with digest auth,
baresip phones, one gateway whose phone registers to it with digest. The attacker sends from the PBX's host
address (127.0.0.1: Kamailio's own socket is taken by Kamailio, so requests Kamailio relays stand for it: a call
"as alice" with alice's PBX credentials to the outside listener, a call to the inside listener) and from a third
address, 127.0.0.66. Each attack is refused, counted by reason (status and metrics) and logged, and the real phone
keeps its calls."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.config_gateway import (
    PASSWORDS,
    GatewayProc,
    sip_exchange,
    start_config_gateway,
    udp_ports_of,
    wait_idle,
    zone_port_ranges,
)
from tests.support.requires import requires
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from tests.testbed.kamailio import Kamailio

pytestmark = [
    pytest.mark.integration,
    pytest.mark.interop,
    pytest.mark.hardening,
    requires("kamailio", "baresip", "sox"),
]

ATTACKER = "127.0.0.66"
PBX_HOST = "127.0.0.1"
INSIDE_PW = "alice-phone-pw"
CALL_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech.make_variant(tmp_path_factory.mktemp("zones") / "speech8k.wav", 8000)


def _alice(inside_contact: int | None = None) -> dict[str, Any]:
    table: dict[str, Any] = {
        "outside_aor": "alice@127.0.0.1",
        "password": PASSWORDS["alice"],
        "inside_password": INSIDE_PW,
    }
    if inside_contact is not None:
        table["inside_contact"] = f"127.0.0.1:{inside_contact}"
    return table


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Kamailio, GatewayProc]]:
    """Kamailio (digest auth) and a gateway fronting alice with inside auth on (the default), opportunistic so
    that carol, a plain phone at the PBX, can call alice."""
    with Kamailio(tmp_path, users=PASSWORDS, auth=True) as pbx:
        extra = {"inside": {"auth": True, "realm": "office"}, "gateway": {"policy": "opportunistic"}}
        gw = start_config_gateway(tmp_path, "gwa", pbx.addr, {"alice": _alice()}, metrics=True, extra=extra)
        try:
            yield pbx, gw
        finally:
            gw.stop()


def _carol_calls_alice(carol: Baresip, alice: Baresip, pbx: Kamailio, gw: GatewayProc) -> None:
    """carol dials alice at the PBX: the PBX routes her to the gateway's outside listener, which rings alice. While
    the call is up, every UDP socket of the gateway is one of its listeners or in its zone's RTP range."""
    carol.dial(f"sip:alice@127.0.0.1:{pbx.port}")
    alice.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
    carol.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
    deadline = time.monotonic() + CALL_TIMEOUT_S
    while len(gw.status_json()["calls"]) != 1:
        assert time.monotonic() < deadline, gw.status_json()
        time.sleep(0.1)
    inside_rtp, outside_rtp = zone_port_ranges(gw)
    ports = udp_ports_of(gw.proc.pid) - {gw.sip_port, gw.outside_port}
    assert ports and all(p in inside_rtp or p in outside_rtp for p in ports), (ports, inside_rtp, outside_rtp)
    assert any(p in inside_rtp for p in ports) and any(p in outside_rtp for p in ports), ports
    carol.hangup()
    carol.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
    alice.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)


def test_the_pbx_side_cannot_register_or_call_as_an_inside_user(
    site: tuple[Kamailio, GatewayProc], tmp_path: Path, clip: Path
) -> None:
    pbx, gw = site
    outside = ("127.0.0.1", gw.outside_port)
    inside = ("127.0.0.1", gw.sip_port)
    carol_dir = tmp_path / "carol"
    carol_dir.mkdir()
    with (
        Baresip(tmp_path, user="alice", play=clip, registrar=f"127.0.0.1:{gw.sip_port}", password=INSIDE_PW) as alice,
        Baresip(
            carol_dir,
            user="carol",
            play=clip,
            registrar=f"127.0.0.1:{pbx.port}",
            password=PASSWORDS["carol"],
            # Every request through the PBX, even to a URI that names the gateway's inside listener.
            extra_account_params=f';outbound="sip:127.0.0.1:{pbx.port}"',
        ) as carol,
    ):
        alice.wait_registered()
        carol.wait_registered()
        gw.wait_registered()
        phone = gw.status_json()["inside"][0]
        assert phone["state"] == "registered" and phone["source"] == f"127.0.0.1:{alice.sip_port}", phone
        _carol_calls_alice(carol, alice, pbx, gw)  # the baseline: the PBX's calls to alice ring her
        wait_idle(gw, 1)

        for source in (PBX_HOST, ATTACKER):
            # REGISTER for alice on the outside listener: refused whatever the source, with the reason.
            reply = sip_exchange(outside, "REGISTER", f"sip:alice@127.0.0.1:{gw.outside_port}", "alice", source=source)
            assert reply.startswith("SIP/2.0 403 "), reply
            assert "Warning: 399" in reply and "outside listener" in reply, reply
            # An INVITE from "alice" on the outside listener is a call *to* its To user, never alice's call out.
            reply = sip_exchange(outside, "INVITE", f"sip:carol@127.0.0.1:{pbx.port}", "alice", source=source)
            assert reply.startswith("SIP/2.0 404 "), reply
        # From the third address on the inside listener: no credentials, nothing bound and nothing placed.
        reply = sip_exchange(inside, "REGISTER", f"sip:alice@127.0.0.1:{gw.sip_port}", "alice", source=ATTACKER)
        assert reply.startswith("SIP/2.0 401 "), reply
        reply = sip_exchange(inside, "INVITE", f"sip:carol@127.0.0.1:{gw.sip_port}", "alice", source=ATTACKER)
        assert reply.startswith("SIP/2.0 401 "), reply
        # The PBX itself sending to the inside listener (carol's call relayed by Kamailio to it): refused.
        carol.dial(f"sip:alice@127.0.0.1:{gw.sip_port}")
        closed = carol.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
        assert closed.param.startswith("403 "), closed

        # The PBX itself, with alice's own PBX credentials, calling out "as alice" through the outside listener
        # (a baresip alice that never registers, relayed by Kamailio from its own socket): a call *to* carol at
        # this gateway, which fronts no carol: 404, and nothing is placed as alice.
        pbx_dir = tmp_path / "pbx-as-alice"
        pbx_dir.mkdir()
        with Baresip(
            pbx_dir,
            user="alice",
            play=clip,
            extra_account_params=f';auth_pass={PASSWORDS["alice"]};outbound="sip:127.0.0.1:{pbx.port}"',
        ) as pbx_alice:
            pbx_alice.dial(f"sip:carol@127.0.0.1:{gw.outside_port}")
            closed = pbx_alice.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
            assert closed.param.startswith("404 "), closed

        # A second phone with alice's own inside password, from another address: the binding is not replaced.
        other_dir = tmp_path / "other"
        other_dir.mkdir()
        with Baresip(
            other_dir, user="alice", play=clip, registrar=f"127.0.0.1:{gw.sip_port}", password=INSIDE_PW
        ) as other:
            other.wait_reg_state("ERR", timeout=15.0)
        phone = gw.status_json()["inside"][0]
        assert phone["source"] == f"127.0.0.1:{alice.sip_port}", phone

        snap = gw.status_json()
        assert len(snap["finished"]) == 1, "no attack placed or rang a call"
        assert not any(e.type == "CALL_INCOMING" for e in carol.ctrl.history), "carol never rang"
        # The real phone keeps its calls: the PBX's next call for alice still rings alice.
        _carol_calls_alice(carol, alice, pbx, gw)

    refused = gw.status_json()["zone_refusals"]
    assert refused["register_on_outside"] == 2, refused
    assert refused["pbx_on_inside"] >= 1, refused
    assert refused["binding_other_source"] >= 1, refused
    text = gw.status().stdout
    assert "zone rules:" in text and "register_on_outside 2" in text, text
    metrics = gw.metrics()
    assert metrics['voipgw_zone_refusals_total{reason="register_on_outside"}'] == 2, metrics
    assert metrics['voipgw_zone_refusals_total{reason="binding_other_source"}'] >= 1, metrics
    log = gw.log()
    assert "on the outside listener refused (403)" in log and "binding_other_source" in log, log[-3000:]


def test_a_static_phone_authenticates_its_calls_too(tmp_path: Path, clip: Path) -> None:
    """``inside_contact`` no longer identifies a phone by its address: its INVITE is challenged like a registered
    phone's, and without the password it places nothing."""
    with (
        Kamailio(tmp_path, users=PASSWORDS, auth=True) as pbx,
        Baresip(tmp_path, user="alice", play=clip, extra_account_params=f";auth_pass={INSIDE_PW}") as alice,
    ):
        extra = {"inside": {"auth": True}, "gateway": {"policy": "opportunistic"}}
        gw = start_config_gateway(
            tmp_path, "gwa", pbx.addr, {"alice": _alice(inside_contact=alice.sip_port)}, extra=extra
        )
        carol_dir = tmp_path / "carol"
        carol_dir.mkdir()
        try:
            with Baresip(
                carol_dir, user="carol", play=clip, registrar=f"127.0.0.1:{pbx.port}", password=PASSWORDS["carol"]
            ) as carol:
                carol.wait_registered()
                gw.wait_registered()
                # From alice's own address but without credentials (the raw request carries none): challenged.
                reply = sip_exchange(
                    ("127.0.0.1", gw.sip_port), "INVITE", f"sip:carol@127.0.0.1:{gw.sip_port}", "alice"
                )
                assert reply.startswith("SIP/2.0 401 "), reply
                # The phone with its password: the call reaches carol through the PBX.
                alice.dial(f"sip:carol@127.0.0.1:{gw.sip_port}")
                carol.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
                alice.hangup()
                carol.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
                wait_idle(gw, 1)
        finally:
            gw.stop()
