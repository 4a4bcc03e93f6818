"""Scale-out: two gateway processes for the same user behind Kamailio's dispatcher (round robin). A sipp UAC inside
gateway A places calls to bob through the PBX; the dispatcher spreads them over gateways B1 and B2 (one identity,
one contact store shared by both processes); every call completes sealed. When B2 is SIGKILLed the PBX fails its
call over to B1 after one fr_timer and marks it inactive; when B2 is back, the PBX's OPTIONS probe finds it and
the calls are shared again.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.phones import PhoneProc, voipgw_argv
from tests.support.requires import requires
from tests.testbed.capture import RawCapture
from tests.testbed.gateway_proc import spawn_gateway, stop_with_snapshot
from tests.testbed.kamailio import Kamailio
from tests.testbed.ports import PortBlock, reserve_block
from tests.testbed.sipp import BLOCK_SIZE, SippUas, run_uac
from tests.testbed.sipp_speech import pcmu_speech_scenario

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.interop, requires("kamailio", "sipp")]

CALLS = 12
"""Spread over the two B gateways: 6 each under exact round robin."""
FAILOVER_CALLS = 4
BACK_CALLS = 4
PROBE_TIMEOUT_S = 15.0
CALL_MS = 2500
SPEECH_S = 1.5
SIPP_TIMEOUT_S = 90.0
FR_TIMER_MS = 2000
"""How long the PBX waits for a provisional answer before it tries the next gateway of the set."""


def _gateway(workdir: Path, name: str, home: Path, port: PortBlock, *args: str) -> tuple[PhoneProc, Path]:
    return spawn_gateway(workdir, name, home, port, *args, owns_port=True)


def _probe_answered(payload: bytes, pbx_port: int) -> bool:
    """A 200 to the dispatcher's OPTIONS keepalive (``ds_ping_interval``), sent by the gateway to the PBX."""
    head = payload[:2000].decode(errors="replace")
    return head.startswith("SIP/2.0 200") and "OPTIONS" in head and f":{pbx_port}" in head


def _check_inbound(calls: list[dict[str, Any]]) -> None:
    for call in calls:
        assert call["direction"] == "inbound" and call["state"] == "ended", call
        assert call["security"] == "secure, unverified" and call["outside_codec"] == "opus", call
        assert call["outside_frames_opened"] > 0 and call["outside_frames_refused"] == 0, call


def test_two_gateways_behind_the_dispatcher_share_the_calls_and_fail_over(tmp_path: Path) -> None:
    _, scenario = pcmu_speech_scenario(tmp_path, SPEECH_S)
    uac_ports = reserve_block(BLOCK_SIZE)
    b_ports = [reserve_block(1), reserve_block(1)]
    shared_home = tmp_path / "b-home"  # both B processes: one identity for bob, one contact store
    a_port: list[PortBlock] = []
    gws: list[PhoneProc] = []
    try:
        with (
            SippUas(tmp_path, rtp_echo=True, scenario_name="uas_lower_transport") as uas,
            Kamailio(tmp_path, dispatcher=[f"sip:127.0.0.1:{p[0]}" for p in b_ports], fr_timer_ms=FR_TIMER_MS) as pbx,
        ):
            bob = ("--user", f"bob=sip:bob@127.0.0.1:{uas.sip_port}")
            b1, snap_b1 = _gateway(tmp_path, "gateway-b1", shared_home, b_ports[0], *bob)
            gws.append(b1)
            b2, _ = _gateway(tmp_path, "gateway-b2", shared_home, b_ports[1], *bob)
            gws.append(b2)
            a_port.append(reserve_block(1))
            gw_a, snap_a = _gateway(
                tmp_path, "gateway-a", tmp_path / "a-home", a_port[0],
                "--user", f"sipp=sip:sipp@127.0.0.1:{uac_ports[0]}",
                "--route", f"bob=sip:bob@127.0.0.1:{pbx.port}",
            )  # fmt: skip
            gws.append(gw_a)
            spread = run_uac(
                tmp_path, f"127.0.0.1:{gw_a.sip_port}", calls=CALLS, rate=4, limit=CALLS, service="bob",
                duration_ms=CALL_MS, timeout=SIPP_TIMEOUT_S, ports=uac_ports, scenario_file=scenario,
            )  # fmt: skip
            assert spread.all_ok and spread.successful == CALLS, spread.log[-3000:]

            # One of the two dies without a word: the PBX times it out once per call and takes the other.
            killed_at = time.time()
            b2.proc.kill()
            b2.proc.wait(10)
            failover = run_uac(
                tmp_path, f"127.0.0.1:{gw_a.sip_port}", calls=FAILOVER_CALLS, rate=2, limit=FAILOVER_CALLS,
                service="bob", duration_ms=CALL_MS, timeout=SIPP_TIMEOUT_S, ports=uac_ports, scenario_file=scenario,
            )  # fmt: skip
            assert failover.all_ok and failover.successful == FAILOVER_CALLS, failover.log[-3000:]
            back_at = time.time()

            # B2 restarted on its port: the PBX's OPTIONS probe finds it, and the calls are shared again.
            with RawCapture(b_ports[1][0], b_ports[1][0]) as probes:
                b2, snap_b2 = _gateway(tmp_path, "gateway-b2-restarted", shared_home, b_ports[1], *bob)
                gws.append(b2)
                deadline = time.monotonic() + PROBE_TIMEOUT_S
                while not any(_probe_answered(pkt.payload, pbx.port) for pkt in probes.packets):
                    assert time.monotonic() < deadline, "the PBX never probed the restarted gateway"
                    time.sleep(0.1)
            time.sleep(0.5)  # the 200 is on its way to the PBX: let it mark the destination active
            shared = run_uac(
                tmp_path, f"127.0.0.1:{gw_a.sip_port}", calls=BACK_CALLS, rate=2, limit=BACK_CALLS,
                service="bob", duration_ms=CALL_MS, timeout=SIPP_TIMEOUT_S, ports=uac_ports, scenario_file=scenario,
            )  # fmt: skip
            assert shared.all_ok and shared.successful == BACK_CALLS, shared.log[-3000:]
            a, s1, s2 = (
                stop_with_snapshot(gw_a, snap_a),
                stop_with_snapshot(b1, snap_b1),
                stop_with_snapshot(b2, snap_b2),
            )
    finally:
        for gw in gws:
            gw.stop()
        uac_ports.release()
        for p in [*b_ports, *a_port]:
            p.release()

    total = CALLS + FAILOVER_CALLS + BACK_CALLS
    assert a["calls"] == [] and len(a["finished"]) == total, a
    assert all(c["security"] == "secure, unverified" for c in a["finished"]), a["finished"]
    # B2 was killed, so it wrote no snapshot: what it carried is what A placed minus what B1 took.
    assert s1["calls"] == []
    _check_inbound(s1["finished"])
    before = [c for c in s1["finished"] if c["started_at"] < killed_at]
    after = [c for c in s1["finished"] if killed_at <= c["started_at"] < back_at]
    again = [c for c in s1["finished"] if c["started_at"] >= back_at]
    _check_inbound(s2["finished"])
    on_b2 = CALLS - len(before)
    print(
        f"dispatcher: {len(before)} calls on B1, {on_b2} on B2 of {CALLS}; after B2 died {len(after)} on B1; "
        f"B2 back: {len(again)} on B1, {len(s2['finished'])} on B2"
    )
    assert len(after) == FAILOVER_CALLS, after
    assert len(again) + len(s2["finished"]) == BACK_CALLS and len(again) >= 1 and len(s2["finished"]) >= 1
    # Round robin: each process took a fair share (exactly half when the PBX's counter is not raced).
    assert CALLS // 3 <= on_b2 <= CALLS - CALLS // 3, (len(before), on_b2)

    # Both processes wrote the same contact store: the caller is one contact, every call counted.
    contacts = subprocess.run(
        voipgw_argv(shared_home / "users" / "bob", "contacts", "--json"),
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    (known,) = json.loads(contacts.stdout)
    assert known["aor"] == "sipp@127.0.0.1" and known["calls"] == total, known
    sas_numbers = {c["safety_number"] for c in a["finished"]}
    assert len(sas_numbers) == 1, "one identity behind both processes: one safety number"
