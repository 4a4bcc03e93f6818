"""``voipgw bench scaleout --quick --json`` as a real process, with a real Kamailio: both N report every figure side
by side, the dispatcher spread the calls over both processes at N = 2, every call carried audio both ways and was
end-to-end encrypted, and every process it started is gone. No timing assertions: the figures are the benchmark's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.requires import requires

pytestmark = [pytest.mark.integration, requires("kamailio")]

BENCH_TIMEOUT_S = 240.0
TOP_KEYS = {
    "quick", "topology", "mode", "late_slack_ms", "max_late_or_lost_pct", "processes", "ratio_max_calls",
    "ratio_calls_per_core_gateway_b", "all_calls_carried_audio", "elapsed_s", "load_average_1min",
    "load_average_1min_at_start", "cpus",
}  # fmt: skip
N_KEYS = {
    "processes", "steps", "max_calls", "calls_total", "calls_with_audio_both_ways", "all_calls_carried_audio",
    "latency_ms_p50", "latency_ms_p99", "held", "at_calls", "late_or_lost_pct", "calls_per_gateway_b", "cpu_share",
    "cpu_share_gateway_b", "cpu_share_gateway_b_total", "cpu_share_gateway_a", "cpu_share_kamailio",
    "cpu_share_load_generator", "cpu_share_all", "packets_per_cpu_s_gateway_b", "packets_per_cpu_s_gateway_b_total",
    "packets_per_cpu_s_gateway_a", "calls_per_core_gateway_b", "calls_per_core_gateway_b_total",
    "calls_per_core_both_gateway_ends", "kamailio_processes", "kamailio_cpu_ms_per_call",
    "cpu_share_idle", "cpu_share_idle_gateway_b", "marginal_calls_per_core_gateway_b_total",
}  # fmt: skip
SECURE_LINE = "secure, unverified, outside"
"""Gateway A's log line for a call it placed end-to-end encrypted."""
SHOWN_SECURE = re.compile(r"shown as '\[(NEW|E2E) ")
"""A B process's log line for a call it received encrypted (bob's display name carries the SAS)."""


def _still_running(workdir: Path) -> list[str]:
    """Processes whose command line names the bench's workdir (Kamailio's config, the gateways' homes)."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=30, check=True)
    return [line for line in out.stdout.splitlines() if str(workdir) in line]


def test_bench_scaleout_quick_json_compares_one_and_two_processes_behind_kamailio(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "voipgw.cli.main", "bench", "scaleout", "--quick", "--json"]
    out = subprocess.run(
        [*argv, "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=BENCH_TIMEOUT_S, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout)
    assert set(r) >= TOP_KEYS, sorted(TOP_KEYS - set(r))
    assert r["quick"] is True and r["all_calls_carried_audio"] is True
    assert sorted(r["processes"]) == ["1", "2"]
    for n_text, m in r["processes"].items():
        n = int(n_text)
        assert set(m) >= N_KEYS, (n, sorted(N_KEYS - set(m)))
        assert m["processes"] == n and m["steps"], m
        for step in m["steps"]:
            assert step["frames_sent"] > 0 and step["frames_received"] > 0, step
            # Every call bob answered came from one of the N processes (none from elsewhere, none lost).
            assert len(step["calls_per_gateway_b"]) == n and sum(step["calls_per_gateway_b"]) == step["calls"], step
            assert set(step["cpu_share"]) == {"gateway_a", "kamailio", "load_generator"} | {
                f"gateway_b{i}" for i in range(1, n + 1)
            }, step
        assert m["calls_with_audio_both_ways"] == m["calls_total"] == m["steps"][-1]["calls"] > 0, m
        assert len(m["cpu_share_gateway_b"]) == len(m["calls_per_core_gateway_b"]) == n, m
        assert len(m["cpu_share_idle_gateway_b"]) == n and set(m["cpu_share_idle"]) == set(m["cpu_share"]), m
        # Every process that carried media used CPU (a zero would mean the wrong PID was sampled).
        assert all(share > 0 for share in m["cpu_share_gateway_b"]) and m["cpu_share_gateway_a"] > 0, m
        assert m["packets_per_cpu_s_gateway_b_total"] > 0 and m["calls_per_core_gateway_b_total"] > 0, m
        assert m["kamailio_processes"] > 1, m  # the main process and its workers are all counted
        workdir = tmp_path / f"n{n}"
        assert (workdir / "gateway-a.log").read_text().count(SECURE_LINE) == m["calls_total"]
        for i in range(1, n + 1):
            assert SHOWN_SECURE.search((workdir / f"gateway-b{i}.log").read_text()), i
    # Round robin: at N = 2 the dispatcher gave each process a share of the calls.
    two = r["processes"]["2"]
    assert all(calls >= 1 for calls in two["calls_per_gateway_b"]), two["calls_per_gateway_b"]
    assert _still_running(tmp_path) == []
