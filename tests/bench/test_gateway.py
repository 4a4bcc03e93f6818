"""``voipgw bench gateway --quick --json`` as a real process: the report has every figure, in both modes, and
every benchmark call carried audio both ways. No timing assertions: the figures themselves are the benchmark's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH_TIMEOUT_S = 240.0
MODE_KEYS = {
    "steps", "max_calls", "calls_total", "calls_with_audio_both_ways", "all_calls_carried_audio",
    "latency_ms_p50", "latency_ms_p99", "memory_kb_per_call", "gateway_a_cpu_ms_per_call_s",
}  # fmt: skip
TRANSCODE_KEYS = {
    "bridge_rate_hz", "calls_per_core", "libopus_ms_per_call_s", "libopus_share", "overhead_beyond_libopus_pct",
    "gateway_a_idle_cpu_ms_per_s", "gateway_a_cpu_ms_per_call_s_beyond_idle", "calls_per_core_projected",
    "gateway_a_cpu_ms_per_added_call_s",
}  # fmt: skip
STEP_KEYS = {
    "calls", "window_s", "frames_sent", "frames_received", "frames_lost", "frames_late", "late_or_lost_pct", "ok",
    "latency_ms_p50", "latency_ms_p99", "gateway_a_cpu_s", "gateway_a_cpu_pct", "packets_through_a_per_cpu_s",
    "gateway_a_rss_kb", "gateway_a_event_loop_cpu_s", "windows_late_or_lost_pct",
}  # fmt: skip
TOP_KEYS = {
    "quick", "window_s", "late_slack_ms", "max_late_or_lost_pct", "passthrough", "transcode", "forwarder",
    "ratio_calls", "packets_per_cpu_s_gateway", "packets_per_cpu_s_forwarder", "ratio_gateway_vs_forwarder",
    "goal_ratio", "meets_ratio_goal", "added_latency_ms_p50_per_gateway", "added_latency_ms_p99_per_gateway",
    "passthrough_calls_per_core_projected", "memory_kb_per_call", "all_calls_carried_audio", "elapsed_s",
    "packets_per_cpu_s_gateway_event_loop", "ratio_gateway_event_loop_vs_forwarder", "gateway_a_sip_thread_cpu_share",
    "load_average_1min", "load_average_1min_at_start", "cpus",
}  # fmt: skip


def test_bench_gateway_quick_json_reports_every_figure_and_every_call_carried_audio(tmp_path: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "voipgw.cli.main",
        "bench",
        "gateway",
        "--quick",
        "--json",
        "--workdir",
        str(tmp_path),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout)
    assert set(r) >= TOP_KEYS, sorted(TOP_KEYS - set(r))
    assert r["quick"] is True
    for mode in ("passthrough", "transcode"):
        m = r[mode]
        assert set(m) >= MODE_KEYS, (mode, sorted(MODE_KEYS - set(m)))
        assert m["steps"], m
        for step in m["steps"]:
            assert set(step) >= STEP_KEYS, (mode, sorted(STEP_KEYS - set(step)))
            assert step["frames_sent"] > 0 and step["frames_received"] > 0, step
        assert m["calls_total"] == m["steps"][-1]["calls"] > 0, m
        assert m["calls_with_audio_both_ways"] == m["calls_total"], m
        assert m["all_calls_carried_audio"] is True, m
        assert m["latency_ms_p50"] is not None and m["latency_ms_p99"] >= m["latency_ms_p50"] > 0, m
    t = r["transcode"]
    assert set(t) >= TRANSCODE_KEYS, sorted(TRANSCODE_KEYS - set(t))
    assert t["bridge_rate_hz"] == 8000  # PCMU phones inside: the bridge codes narrowband
    assert t["libopus_share"] > 0 and t["libopus_ms_per_call_s"] > 0 and t["gateway_a_idle_cpu_ms_per_s"] >= 0, t
    assert t["calls_per_core"] == pytest.approx(1000 / t["gateway_a_cpu_ms_per_call_s"], rel=0.01), t
    fwd = r["forwarder"]
    assert fwd["calls"] == r["ratio_calls"] > 0
    assert fwd["frames_received"] > 0 and fwd["latency_ms_p50"] is not None, fwd
    assert r["all_calls_carried_audio"] is True
    # Both gateways' logs stay: the calls were end-to-end encrypted on the A -> B leg.
    assert "secure, unverified, outside" in (tmp_path / "gateway-a.log").read_text()
