"""Two gateways with baresip phones behind PBXs that break what the SDP key exchange relies on (issue 16):

- the Sippy B2BUA (tests/testbed/sippy_b2bua.py) as gateway A's outbound proxy, Kamailio as the registrar behind
  it: ``a=voipgw`` arrives but bob's leg has its own Call-ID, so gateway B runs with ``[outside] bind_call_id =
  false``; keyed in the SDP; DTMF crosses sealed;
- Kamailio stripping ``a=voipgw`` (sdpops), masking the Call-ID (topoh) and relaying the media through rtpengine:
  nothing configured, the gateways key the call in the media path; hold and resume still work.

Each: secure at both gateways with the same SAS and safety number, and the PBX side carries nothing that decodes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.config_gateway import (
    PASSWORDS,
    GatewayProc,
    start_config_gateway,
    user,
    wait_idle,
    wait_live_call,
    zone_port_ranges,
)
from tests.support.eavesdrop import assert_nothing_decodes
from tests.support.faults import long_speech, wait_until
from tests.support.requires import requires
from tests.testbed.baresip import Baresip
from tests.testbed.capture import RawCapture
from tests.testbed.kamailio import Kamailio
from tests.testbed.rtpengine import Rtpengine
from tests.testbed.sippy_b2bua import SippyB2bua

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "rtpengine", "baresip", "sox")]

CALL_TIMEOUT_S = 30.0
MEDIA_PATH_LABEL = "key exchange in the media path"
MIN_PBX_PACKETS = 150
DIGITS = "159#"  # not *0 or *1: those are the gateway's SAS keys (not relayed)


@contextmanager
def _gateways(
    tmp_path: Path,
    registrar: tuple[str, int],
    alice: Baresip,
    bob: Baresip,
    *,
    a_outside: dict[str, Any],
    b_outside: dict[str, Any],
) -> Iterator[tuple[GatewayProc, GatewayProc]]:
    gws: list[GatewayProc] = []
    try:
        outside_a, outside_b = {"outside": a_outside}, {"outside": b_outside}
        gws.append(start_config_gateway(tmp_path, "gwa", registrar, {"alice": user("alice", alice)}, extra=outside_a))
        gws.append(start_config_gateway(tmp_path, "gwb", registrar, {"bob": user("bob", bob)}, extra=outside_b))
        for gw in gws:
            gw.wait_registered()
        yield gws[0], gws[1]
    finally:
        for gw in gws:
            gw.stop()


def _assert_secure_pair(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["security"] == b["security"] == "secure, unverified", (a, b)
    assert a["sas"] is not None and a["sas"] == b["sas"]
    assert a["safety_number"] is not None and a["safety_number"] == b["safety_number"]


def _hang_up(alice: Baresip, bob: Baresip, gwa: GatewayProc, gwb: GatewayProc) -> tuple[dict[str, Any], ...]:
    alice.hangup()
    alice.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
    bob.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
    return wait_idle(gwa, 1)["finished"][-1], wait_idle(gwb, 1)["finished"][-1]


def test_gateways_through_the_sippy_b2bua_key_in_the_sdp_with_the_call_id_unbound(tmp_path: Path) -> None:
    clip = long_speech(tmp_path / "speech-long.wav")
    with (
        Kamailio(tmp_path, users=PASSWORDS) as registrar,
        SippyB2bua(tmp_path, next_hop=registrar.addr) as pbx,
        Baresip(tmp_path, user="alice", play=clip) as alice,
        Baresip(tmp_path, user="bob", play=clip) as bob,
        _gateways(
            tmp_path,
            registrar.addr,
            alice,
            bob,
            a_outside={"proxy": f"127.0.0.1:{pbx.port}"},
            b_outside={"bind_call_id": False},
        ) as (gwa, gwb),
        RawCapture(*_span(zone_port_ranges(gwa)[1])) as pbx_side,
    ):
        alice.dial(f"sip:bob@127.0.0.1:{gwa.sip_port}")
        bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
        alice.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
        live_a, live_b = wait_live_call(gwa), wait_live_call(gwb)
        time.sleep(0.6)  # past the security cue: the call is in its steady state
        alice.send_dtmf(DIGITS)
        wait_until(lambda: len(bob.received_dtmf()) >= len(DIGITS), "alice's digits at bob", CALL_TIMEOUT_S)
        got = bob.received_dtmf()
        out, inn = _hang_up(alice, bob, gwa, gwb)

    _assert_secure_pair(live_a, live_b)
    assert live_a["key_exchange"] == live_b["key_exchange"] == "sdp", (live_a, live_b)
    assert live_b["call_id_bound"] is False
    assert got == DIGITS
    assert out["dtmf"]["to_outside"] == len(DIGITS) and inn["dtmf"]["to_inside"] == len(DIGITS), (out, inn)
    assert out["outside_frames_refused"] == inn["outside_frames_refused"] == 0
    # The B2BUA relays no media: the PBX side is gateway A's outside RTP, to and from gateway B.
    assert_nothing_decodes(pbx_side.packets, clip, min_packets=MIN_PBX_PACKETS)


def test_gateways_through_kamailio_stripping_the_attribute_key_in_the_media_path_and_hold(tmp_path: Path) -> None:
    clip = long_speech(tmp_path / "speech-long.wav")
    with (
        Rtpengine(tmp_path) as relay,
        Kamailio(
            tmp_path, users=PASSWORDS, auth=True, rtpengine_ng=relay.ng_socket, strip_voipgw=True, topoh=True
        ) as pbx,
        Baresip(tmp_path, user="alice", play=clip) as alice,
        Baresip(tmp_path, user="bob", play=clip) as bob,
        _gateways(tmp_path, pbx.addr, alice, bob, a_outside={}, b_outside={}) as (gwa, gwb),
        RawCapture(*relay.rtp_range) as pbx_side,
    ):
        alice.dial(f"sip:bob@127.0.0.1:{gwa.sip_port}")
        bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
        alice.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
        live_a, live_b = wait_live_call(gwa), wait_live_call(gwb)
        alice.hold()
        wait_until(lambda: _live(gwa)["hold"]["inside"], "alice's hold at gateway A", CALL_TIMEOUT_S)
        wait_until(lambda: _live(gwb)["hold"]["outside"], "alice's hold at gateway B", CALL_TIMEOUT_S)
        alice.resume()
        wait_until(lambda: not _live(gwb)["hold"]["outside"], "alice's resume at gateway B", CALL_TIMEOUT_S)
        before = _live(gwb)["outside_frames_opened"], _live(gwa)["outside_frames_opened"]
        wait_until(
            lambda: (
                _live(gwb)["outside_frames_opened"] > before[0] + 25
                and _live(gwa)["outside_frames_opened"] > before[1] + 25
            ),
            "sealed audio both ways after the resume",
            CALL_TIMEOUT_S,
        )
        out, inn = _hang_up(alice, bob, gwa, gwb)
        logs = gwa.log() + gwb.log()

    _assert_secure_pair(live_a, live_b)
    assert live_a["key_exchange"] == live_b["key_exchange"] == "media", (live_a, live_b)
    assert live_a["call_id_bound"] is False and live_b["call_id_bound"] is False
    assert MEDIA_PATH_LABEL in logs
    assert out["sas"] == inn["sas"] == live_a["sas"]  # the same sealed session through hold and resume
    assert out["hold"]["reinvites"] >= 2 and inn["hold"]["reinvites"] >= 2, (out, inn)
    assert out["outside_frames_refused"] == inn["outside_frames_refused"] == 0
    assert_nothing_decodes(pbx_side.packets, clip, min_packets=MIN_PBX_PACKETS)


def _live(gw: GatewayProc) -> dict[str, Any]:
    calls = gw.status_json()["calls"]
    assert len(calls) == 1, calls
    return dict(calls[0])


def _span(ports: range) -> tuple[int, int]:
    return ports.start, ports.stop - 1
