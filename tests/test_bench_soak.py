"""``voipgw bench soak --json``: a short hold through two real gateways gives a complete time series and verdicts
(structure and audio only: the figures themselves belong to ``make soak``, not to a test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from voipgw.bench.soak import slope_per_min

pytestmark = pytest.mark.integration

CALLS = 3


def test_bench_soak_json_has_a_time_series_and_verdicts(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "voipgw.cli.main", "bench", "soak", "--json", "--calls", str(CALLS)]
    argv += ["--duration", "6", "--sample", "2", "--workdir", str(tmp_path), "--out", str(tmp_path / "soak.json")]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode in (0, 1), run.stderr[-3000:]
    data = json.loads(run.stdout)
    assert json.loads((tmp_path / "soak.json").read_text()) == data
    assert data["calls"] == data["calls_established"] == data["calls_with_audio"] == CALLS, data
    assert data["calls_lost_during_hold"] == 0
    assert len(data["samples"]) >= 3
    for row in data["samples"]:
        assert row["calls_up"] == CALLS and row["rss_kb"] > 0 and row["fds"] > 0 and row["threads"] >= 1, row
        assert 0.0 <= row["late_or_lost_pct"] <= 100.0
    assert isinstance(data["holds"], bool) and isinstance(data["grows"], bool)
    assert run.returncode == (0 if data["holds"] and not data["grows"] else 1)


def test_growth_slope_is_per_minute_and_ignores_flat_series() -> None:
    assert slope_per_min([0, 60, 120], [100, 200, 300]) == pytest.approx(100.0)
    assert slope_per_min([0, 30, 60], [5, 5, 5]) == 0.0
    assert slope_per_min([10], [1]) == 0.0
