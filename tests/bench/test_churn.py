"""``voipgw bench churn``: a short search through two real gateways driven by a real sipp UAC and UAS (structure,
completed calls and audio: the figures themselves belong to ``make churn``, not to a test), and its parsers on
real sipp output."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from voipgw.audio.g711 import ulaw_decode
from voipgw.bench.churn import parse_rates
from voipgw.bench.common import free_port_span, udp_ports_bound
from voipgw.bench.sipp import SippStats, parse_rtt_csv, parse_stat_csv, write_pcmu_pcap, write_uac_scenario

BACKGROUND = 3
HOLD_S = 2
STEP_S = 4
RATES = (1, 2)
PROBE_CALLS = 3


@pytest.mark.integration
def test_bench_churn_places_sipp_calls_with_audio_through_both_gateways(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "voipgw.cli.main", "bench", "churn", "--json", "--background", str(BACKGROUND)]
    argv += ["--hold", str(HOLD_S), "--step-s", str(STEP_S), "--rates", ",".join(map(str, RATES)), "--window", "1"]
    argv += ["--workdir", str(tmp_path), "--out", str(tmp_path / "churn.json"), "--probe-calls", str(PROBE_CALLS)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=150, check=False)
    assert run.returncode in (0, 1), run.stderr[-3000:]
    data = json.loads(run.stdout)
    assert json.loads((tmp_path / "churn.json").read_text()) == data
    assert data["background_calls_established"] == data["background_calls_with_audio"] == BACKGROUND, data
    assert data["reference"]["background_frames_sent"] > 0

    # The lowest rate: every call sipp placed was answered through A and B, held and hung up.
    first = data["steps"][0]
    calls = RATES[0] * STEP_S
    assert first["rate_per_s"] == RATES[0]
    assert (first["sipp_calls_attempted"], first["sipp_calls_successful"]) == (calls, calls), first
    assert first["sipp_calls_failed"] == first["sipp_calls_unfinished"] == 0, first
    assert first["sipp_exit_status"] == 0, first
    assert first["setup_ms_samples"] == calls and first["setup_ms_p50"] > 0, first
    assert first["background_frames_sent"] > 0 and first["background_frames_received"] > 0, first
    assert first["background_calls_dropped"] == 0
    for step in data["steps"]:
        assert step["holds"] == (step["why_not"] == []), step
        assert 0.0 <= step["background_late_or_lost_pct"] <= 100.0
    assert data["max_rate_held_per_s"] in (0.0, *RATES)
    assert run.returncode == (0 if data["max_rate_held_per_s"] > 0 else 1)

    # The setup probe placed its calls (from its own inside phone) and charged A and B some CPU for each; every step
    # splits A's CPU per call into setup and media per call-second and projects a rate from them.
    probe = data["setup_probe"]
    assert (probe["calls"], probe["successful"], probe["failed"]) == (PROBE_CALLS, PROBE_CALLS, 0), probe
    assert probe["ok"] and data["setup_cpu_ms_per_call"] == probe["setup_cpu_ms_per_call"], probe
    assert isinstance(probe["setup_cpu_ms_per_call"], float) and isinstance(probe["setup_cpu_ms_per_call_b"], float)
    loop_ms, other_ms = probe["setup_cpu_ms_per_call_event_loop"], probe["setup_cpu_ms_per_call_other_threads"]
    assert loop_ms + other_ms == pytest.approx(probe["setup_cpu_ms_per_call"], abs=0.2), probe
    for step in data["steps"]:
        assert step["setup_cpu_ms_per_call"] == probe["setup_cpu_ms_per_call"], step
        assert step["media_cpu_ms_per_call_s"] >= 0.0 and step["projected_calls_per_s_per_core"] > 0.0, step
        assert step["projected_calls_per_s_machine"] > 0.0 and step["gateway_a_cpu_ms_per_call"] is not None, step
    assert data["projected_calls_per_s_machine"] == data["steps"][-1]["projected_calls_per_s_machine"]

    # Gateway A's own record of the sipp calls: sealed to B, PCMU from sipp in, the UAS's echo back out through B.
    snap = data["gateway_a_snapshot"]
    n = snap["sipp_calls_in_snapshot"]
    assert snap["available"] and n >= calls, snap
    assert snap["secure"] == snap["inside_codec_pcmu"] == snap["outside_codec_opus"] == n, snap
    assert snap["with_audio_from_sipp"] == snap["with_audio_back_through_b"] == n, snap
    assert snap["outside_frames_refused"] == 0, snap
    total = sum(s["sipp_calls_successful"] for s in data["steps"]) + PROBE_CALLS
    assert data["sipp_uas"]["successful"] == total and data["sipp_uas"]["failed"] == 0, data["sipp_uas"]

    # The parsers agree with the files sipp wrote.
    stats = parse_stat_csv((tmp_path / "uac-00-1cps" / "stats.csv").read_text())
    assert (stats.created, stats.successful, stats.failed) == (calls, calls, 0)
    rtts = [x for p in (tmp_path / "uac-00-1cps").glob("*_rtt.csv") for x in parse_rtt_csv(p.read_text())]
    assert len(rtts) == calls and all(x > 0 for x in rtts)


def test_pcap_is_the_speech_as_pcmu_every_20_ms(tmp_path: Path) -> None:
    data = write_pcmu_pcap(tmp_path / "s.pcap", 1.0).read_bytes()
    magic, _major, _minor, _tz, _sig, _snap, linktype = struct.unpack_from("<IHHiIII", data)
    assert (magic, linktype) == (0xA1B2C3D4, 1)
    offset, stamps, payloads = 24, [], []
    while offset < len(data):
        sec, usec, incl, _orig = struct.unpack_from("<IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + incl]
        rtp = frame[14 + 20 + 8 :]
        assert rtp[0] == 0x80 and rtp[1] & 0x7F == 0, rtp[:2]
        stamps.append(sec * 1_000_000 + usec)
        payloads.append(rtp[12:])
        offset += 16 + incl
    assert len(payloads) == 50 and all(len(p) == 160 for p in payloads)
    assert np.diff(stamps).tolist() == [20_000] * 49
    pcm = np.concatenate([ulaw_decode(p) for p in payloads]).astype(np.float64)
    assert np.sqrt(np.mean(pcm * pcm)) > 300  # speech, not silence


def test_uac_scenario_plays_an_absolute_pcap(tmp_path: Path) -> None:
    pcap = tmp_path / "x.pcap"
    text = write_uac_scenario(tmp_path / "uac.xml", pcap, "sipp").read_text(encoding="iso-8859-1")
    assert f'play_pcap_audio="{pcap.resolve()}"' in text
    assert "From: sipp <sip:sipp@" in text and "m=audio [auto_media_port] RTP/AVP 0" in text
    assert "{" not in text


def test_rates_are_positive_ascending_and_unique() -> None:
    assert parse_rates("4, 1,2,2") == [1.0, 2.0, 4.0]
    assert parse_rates("0.5,1") == [0.5, 1.0]
    with pytest.raises(ValueError):
        parse_rates("0,1")
    with pytest.raises(ValueError):
        parse_rates("")


def test_free_port_span_has_nothing_bound(tmp_path: Path) -> None:
    import random

    base = free_port_span(40, {20_000}, random.Random(7))
    assert base % 2 == 0 and not set(range(base, base + 40)) & (udp_ports_bound() | {20_000})


SIPP_OUTPUT = Path(__file__).resolve().parents[1] / "sipp_output"


def test_stat_csv_of_a_completed_run() -> None:
    stats = parse_stat_csv((SIPP_OUTPUT / "uac_stats_4_ok.csv").read_text())
    assert (stats.created, stats.successful, stats.failed) == (4, 4, 0)
    assert stats.concurrent_max == 3 and stats.retransmissions == 0 and stats.failures == {}
    assert stats.response_time_ms_mean == 32.0
    assert stats.rows == 9


def test_stat_csv_of_calls_that_timed_out() -> None:
    stats = parse_stat_csv((SIPP_OUTPUT / "uac_stats_2_timed_out.csv").read_text())
    assert (stats.created, stats.successful, stats.failed) == (2, 0, 2)
    assert stats.failures == {"TimeoutOnRecv": 2}
    assert stats.retransmissions == 3
    assert stats.response_time_ms_mean is None


def test_stat_csv_without_rows_is_empty() -> None:
    header = (SIPP_OUTPUT / "uac_stats_4_ok.csv").read_text().splitlines()[0]
    assert parse_stat_csv(header) == parse_stat_csv("") == SippStats()


def test_rtt_csv_gives_each_calls_setup_time() -> None:
    assert parse_rtt_csv((SIPP_OUTPUT / "uac_rtt_4.csv").read_text()) == [56.0, 16.0, 24.0, 32.0]
