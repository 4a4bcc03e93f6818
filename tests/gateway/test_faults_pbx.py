"""The PBX (Kamailio, digest auth, 4 s registrations) goes away mid-call and comes back. Media is end to end, so
the running call keeps flowing both ways while the PBX is down; the registrations recover when it is back (its
location table was lost); a hang-up after the return reaches the far end through the restarted PBX (BYE), and a
hang-up while it is down ends the far side by its media timeout instead of leaving it up silent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.config_gateway import (
    PASSWORDS,
    REGISTER_RECOVERY_S,
    GatewayProc,
    options_status,
    start_config_gateway,
    user,
    wait_idle,
    wait_live_call,
)
from tests.support.faults import long_speech, wait_until
from tests.support.requires import requires
from tests.support.restartable_kamailio import RestartableKamailio
from tests.testbed.baresip import Baresip
from voipgw.gateway.model import B2buaSettings

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.interop, requires("kamailio", "baresip")]

CALL_TIMEOUT_S = 30.0
MEDIA_TIMEOUT_S = B2buaSettings(home=Path(), users=()).media_timeout_s
"""The gateway's dead-media timeout (its default: neither the TOML file nor the flags set it)."""
OUTAGE_FRAMES = 100
"""Frames each gateway must open while the PBX is down (2 s of 20 ms frames)."""


def opened(gw: GatewayProc) -> int:
    calls = gw.status_json()["calls"]
    return int(calls[0]["outside_frames_opened"]) if calls else -1


def last_finished(gw: GatewayProc) -> dict[str, Any]:
    return dict(gw.status_json()["finished"][-1])


def test_a_pbx_outage_mid_call_keeps_the_media_and_the_registrations_recover(tmp_path: Path) -> None:
    clip = long_speech(tmp_path / "speech-long.wav")
    pbx = RestartableKamailio(tmp_path, users=PASSWORDS, auth=True, max_expires=4)
    pbx.start()
    gws: list[GatewayProc] = []
    try:
        with (
            Baresip(tmp_path, user="alice", play=clip) as alice,
            Baresip(tmp_path, user="bob", play=clip) as bob,
        ):
            gws.append(start_config_gateway(tmp_path, "gwa", pbx.addr, {"alice": user("alice", alice)}))
            gws.append(start_config_gateway(tmp_path, "gwb", pbx.addr, {"bob": user("bob", bob)}))
            gwa, gwb = gws
            gwa.wait_registered()
            gwb.wait_registered()

            # 1. Down and back during the call; the hang-up afterwards crosses the restarted PBX.
            alice.dial(f"sip:bob@127.0.0.1:{gwa.sip_port}")
            bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
            wait_live_call(gwa)
            wait_live_call(gwb)
            pbx.halt()
            t_down = time.monotonic()
            a0, b0 = opened(gwa), opened(gwb)
            wait_until(
                lambda: opened(gwa) >= a0 + OUTAGE_FRAMES and opened(gwb) >= b0 + OUTAGE_FRAMES,
                "media both ways with the PBX down",
                20.0,
            )
            down_s = time.monotonic() - t_down
            a1, b1 = opened(gwa), opened(gwb)
            pbx.start()  # same port, empty location table
            back = wait_until(
                lambda: options_status(pbx.addr, "alice") == 200 and options_status(pbx.addr, "bob") == 200,
                "both users routable at the PBX again",
                REGISTER_RECOVERY_S,
            )
            gwa.wait_registered(REGISTER_RECOVERY_S)
            gwb.wait_registered(REGISTER_RECOVERY_S)
            print(
                f"PBX down {down_s:.1f} s: A opened {a1 - a0}, B opened {b1 - b0} frames meanwhile; "
                f"both users routable again {back:.1f} s after the PBX came back"
            )
            assert opened(gwa) > a1 and opened(gwb) > b1, "the media stopped after the PBX came back"
            alice.hangup()
            alice.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
            bob.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
            wait_idle(gwb, 1)
            first_b = last_finished(gwb)
            assert first_b["reason"].startswith("outside"), first_b  # the BYE, not the media timeout
            assert first_b["security"] == "secure, unverified" and first_b["outside_frames_refused"] == 0

            # 2. A new call through the restarted PBX; it goes away again and alice hangs up meanwhile.
            alice.dial(f"sip:bob@127.0.0.1:{gwa.sip_port}")
            bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
            assert wait_live_call(gwa)["security"] == "secure, unverified"
            wait_live_call(gwb)
            pbx.halt()
            alice.hangup()
            alice.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)  # gateway A answers alice's BYE itself
            t_hangup = time.monotonic()
            bob.wait_event("CALL_CLOSED", timeout=MEDIA_TIMEOUT_S + CALL_TIMEOUT_S)
            print(f"with the PBX down, bob's side ended {time.monotonic() - t_hangup:.1f} s after alice hung up")
            wait_idle(gwa, 2)
            wait_idle(gwb, 2)
            second_b = last_finished(gwb)
            assert second_b["reason"] == f"no media from the outside leg for {MEDIA_TIMEOUT_S:g} s", second_b
            pbx.start()
            gwa.wait_registered(REGISTER_RECOVERY_S)
            gwb.wait_registered(REGISTER_RECOVERY_S)
            for gw in gws:
                assert gw.proc.poll() is None and "Traceback" not in gw.log(), gw.log()[-3000:]
    finally:
        for gw in gws:
            gw.stop()
        pbx.stop()
