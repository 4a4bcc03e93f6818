"""20 concurrent calls from a sipp UAC inside gateway A to a sipp UAS behind gateway B, A routing straight to B:
every call completes, each is sealed between the gateways, and the PCMU speech the UAC plays comes back to it
through both gateways and the UAS's RTP echo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.phones import PhoneProc
from tests.support.requires import requires
from tests.testbed.capture import RawCapture, decode_g711
from tests.testbed.gateway_proc import spawn_gateway, stop_with_snapshot
from tests.testbed.ports import reserve_block
from tests.testbed.sipp import BLOCK_SIZE, MEDIA_OFFSET, SippUas, run_uac
from tests.testbed.sipp_speech import pcmu_speech_scenario
from voipgw.audio.compare import compare_audio

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("sipp")]

CALLS = 20
SPEECH_S = 3.0
CALL_MS = 4000
"""ACK to BYE: the speech, plus the round trip of its end through both gateways and the echo."""
SIPP_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 15.0
UAS_EXIT_TIMEOUT_S = 30.0
LOUD_RMS = 0.02
"""A 20 ms frame this loud (-34 dBFS) is speech; the gateways' silence and Opus comfort noise are far below."""
MIN_LOUD_FRAMES = 25
"""Half a second of the three seconds of speech, back at the UAC, per call."""
MIN_MEDIAN_CORRELATION = 0.3
"""Median over the calls of the windowed correlation with the speech played: measured 0.62-0.88 per call after
PCMU -> Opus -> PCMA -> echo and back (the gateway's security cue opens what the UAC hears), down to 0.23 for
single calls while other test suites loaded both cores; a tone or noise scores about 0.02."""


def _gateway(workdir: Path, name: str, *args: str) -> tuple[PhoneProc, Path]:
    home, port = workdir / f"{name}-home", reserve_block(1)
    return spawn_gateway(workdir, name, home, port, *args, owns_port=True, ready_timeout_s=READY_TIMEOUT_S)


def _most_at_once(calls: list[dict[str, Any]]) -> int:
    edges = sorted([(c["started_at"], 1) for c in calls] + [(c["ended_at"], -1) for c in calls])
    most = now = 0
    for _t, step in edges:
        now += step
        most = max(most, now)
    return most


def test_twenty_concurrent_sipp_calls_through_two_gateways_echo_the_speech(tmp_path: Path) -> None:
    pcm, scenario = pcmu_speech_scenario(tmp_path, SPEECH_S)
    uac_ports = reserve_block(BLOCK_SIZE)
    media_lo, media_hi = uac_ports[MEDIA_OFFSET], uac_ports[BLOCK_SIZE - 1]
    gw_a = gw_b = None
    try:
        with SippUas(tmp_path, rtp_echo=True, calls=CALLS) as uas:  # its Contact says transport=UDP
            gw_b, snap_b = _gateway(tmp_path, "gateway-b", "--user", f"bob=sip:bob@127.0.0.1:{uas.sip_port}")
            gw_a, snap_a = _gateway(
                tmp_path,
                "gateway-a",
                "--user",
                f"sipp=sip:sipp@127.0.0.1:{uac_ports[0]}",
                "--route",
                f"bob=sip:bob@127.0.0.1:{gw_b.sip_port}",
            )
            with RawCapture(media_lo, media_hi) as cap:
                result = run_uac(
                    tmp_path, f"127.0.0.1:{gw_a.sip_port}", calls=CALLS, rate=CALLS, limit=CALLS, service="bob",
                    duration_ms=CALL_MS, timeout=SIPP_TIMEOUT_S, ports=uac_ports, scenario_file=scenario,
                )  # fmt: skip
            uas_result = uas.wait(UAS_EXIT_TIMEOUT_S)  # it exits once B's BYE ended its 20th call
            a, b = stop_with_snapshot(gw_a, snap_a), stop_with_snapshot(gw_b, snap_b)
    finally:
        for gw in (gw_a, gw_b):
            if gw is not None:
                gw.stop()
        uac_ports.release()
    assert result.all_ok, result.log[-3000:]
    assert (result.created, result.successful, result.failed) == (CALLS, CALLS, 0)
    assert uas_result.successful == CALLS, uas_result.log[-3000:]

    # Every call was sealed between the gateways, PCMU on A's inside leg, and all 20 were up at once.
    for snap, direction in ((a, "outbound"), (b, "inbound")):
        assert snap["calls"] == [] and len(snap["finished"]) == CALLS, snap
        for call in snap["finished"]:
            assert call["direction"] == direction and call["state"] == "ended", call
            assert call["security"] == "secure, unverified" and call["outside_codec"] == "opus", call
            assert call["outside_frames_refused"] == 0, call
    assert {c["inside_codec"] for c in a["finished"]} == {"pcmu"}
    assert _most_at_once(a["finished"]) == CALLS, a["finished"]

    # The speech came back to each call's own media port, decoded from the PCMU the gateway sent the UAC.
    back: dict[int, list[bytes]] = {}
    for p in cap.packets:
        rtp = p.rtp()
        if rtp is not None and media_lo <= p.dst_port <= media_hi and not media_lo <= p.src_port <= media_hi:
            assert rtp.payload_type == 0, rtp
            back.setdefault(p.dst_port, []).append(rtp.payload)
    assert len(back) == CALLS, sorted(back)
    reference = pcm.astype(np.float64) / 32768.0
    correlations = []
    for port, payloads in sorted(back.items()):
        samples = np.concatenate([decode_g711(x, "PCMU") for x in payloads])
        rms = np.sqrt(np.mean(samples.reshape(-1, 160) ** 2, axis=1))
        loud = int(np.sum(rms >= LOUD_RMS))
        match = compare_audio(reference, samples, rate=8000)
        print(f"call on port {port}: {len(payloads)} packets back, {loud} loud frames, corr {match.windowed:.2f}")
        assert loud >= MIN_LOUD_FRAMES, (port, loud, len(payloads))
        correlations.append(match.windowed)
    assert float(np.median(correlations)) >= MIN_MEDIAN_CORRELATION, correlations
