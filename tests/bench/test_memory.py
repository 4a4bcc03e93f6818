"""``voipgw bench memory --trace --json`` as a real process, on a few calls: every step held its calls with audio,
the per-call figure and the tracemalloc breakdown are there. No figure is asserted (the benchmark reports them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH_TIMEOUT_S = 240.0


def test_bench_memory_reports_memory_per_call_and_where_it_goes(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "voipgw.cli.main", "bench", "memory", "--steps", "4,10", "--trace", "--json"]
    out = subprocess.run(
        [*argv, "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=BENCH_TIMEOUT_S, check=False
    )
    assert out.returncode in (0, 1), out.stderr[-3000:]  # 1: the goal was not met, which is a figure, not a failure
    r = json.loads(out.stdout)
    assert [s["calls"] for s in r["steps"]] == [4, 10]
    assert r["all_calls_carried_audio"] is True, r["steps"]
    assert r["max_calls"] == 10 and isinstance(r["memory_kb_per_call"], float)
    assert r["fds_per_call"] > 0
    assert r["meets_goal"] == (r["memory_kb_per_call"] <= r["goal_kb_per_call"])
    trace = r["tracemalloc"]
    assert trace["traced_kb_per_call"] > 0 and trace["by_file_bytes_per_call"], trace
    assert any(name.startswith("voipgw/") for name in trace["by_file_bytes_per_call"]), trace


def test_bench_memory_refuses_steps_that_do_not_grow() -> None:
    from voipgw.bench import memory

    with pytest.raises(ValueError, match="increasing"):
        memory.run([10, 10])
