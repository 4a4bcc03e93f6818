"""``voipgw bench soak --json``: a short hold through two real gateways gives a complete time series and verdicts
(structure and audio only: the figures themselves belong to ``make soak``, not to a test)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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


def _children(pid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_stops_the_benchmark_and_every_process_it_started(tmp_path: Path) -> None:
    """``kill`` (or a CI runner's timeout) must not leave the gateways running: SIGTERM is handled like Ctrl-C."""
    argv = [sys.executable, "-m", "voipgw.cli.main", "bench", "soak", "--calls", "2", "--duration", "120"]
    bench = subprocess.Popen([*argv, "--workdir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    kids: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(kids) < 2:  # gateways A and B
            assert bench.poll() is None and time.monotonic() < deadline, "the gateways never started"
            kids = _children(bench.pid)
            time.sleep(0.1)
        time.sleep(1.0)
        bench.terminate()
        assert bench.wait(60) == 130
        deadline = time.monotonic() + 20
        while any(_alive(k) for k in kids):
            assert time.monotonic() < deadline, [k for k in kids if _alive(k)]
            time.sleep(0.1)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(10)
        for k in kids:
            if _alive(k):
                os.kill(k, signal.SIGKILL)
