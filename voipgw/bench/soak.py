"""``voipgw bench soak``: hold N calls through gateways A and B for a long time and record, every few seconds,
late/lost frames, one-way latency, gateway A's memory, file descriptors, threads and CPU; then judge whether it
held (< 1 % late or lost in every sample, no call lost) and whether anything grew (least-squares slopes).

Built on ``voipgw.bench.gateway`` (the same gateway processes, synthetic phones and frame accounting); it adds only
the long hold, the time series and the growth verdict. Loopback only; it stops every process it starts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from voipgw.bench.gateway import MAX_LOSS_PCT, MODES, SETTLE_S, GatewayBench, LoadGen

SAMPLE_S = 5.0
WARMUP_FRACTION = 0.5
"""The first half of the series is left out of the growth fit: allocator arenas, caches and the SIP stack's 32 s
transaction timers settle there (measured: RSS flat after about 3 minutes at 200 calls)."""
MAX_RSS_GROWTH_KB_PER_MIN = 100.0
"""3 MB over a 30-minute soak: far below one call's ~240 KB per minute of a real leak at 80 % load."""
MAX_FD_GROWTH_PER_MIN = 0.1


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def slope_per_min(ts: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` over ``ts`` (seconds), per minute; 0 for fewer than two points."""
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    if var == 0:
        return 0.0
    return 60.0 * sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var


async def _hold(
    bench: GatewayBench, mode: str, calls: int, duration_s: float, log: Callable[[str], None]
) -> dict[str, Any]:
    assert bench.a is not None
    pid = bench.a.proc.pid
    bench.gen = LoadGen(mode)
    bench.gen.start()
    bench.calls, bench.bob_calls = [], []
    bench.baseline_ms.pop(mode, None)
    samples: list[dict[str, Any]] = []
    try:
        await bench.grow(calls)
        await asyncio.sleep(SETTLE_S)
        up = sum(1 for c in bench.calls if not c.ended)
        t0 = time.monotonic()
        while time.monotonic() - t0 < duration_s:
            s = await bench._window(calls)
            row = {
                "t_s": round(time.monotonic() - t0, 1),
                "calls_up": sum(1 for c in bench.calls if not c.ended),
                "late_or_lost_pct": round(s.bad_pct, 3),
                "latency_ms_p50": s.latency_ms_p50,
                "latency_ms_p99": s.latency_ms_p99,
                "rss_kb": s.rss_kb,
                "fds": fd_count(pid),
                "threads": thread_count(pid),
                "cpu_pct": round(100.0 * s.gw_cpu_s / s.window_s, 1),
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
            samples.append(row)
            log(
                f"  t={row['t_s']:>6}s calls {row['calls_up']:>4}  late/lost {row['late_or_lost_pct']:6.2f}%  "
                f"p99 {row['latency_ms_p99'] or 0:.1f} ms  RSS {row['rss_kb']} KB  fds {row['fds']}  "
                f"CPU {row['cpu_pct']}%"
            )
        with_audio = sum(1 for c in bench.calls if c.alice.audio_frames > 0)
    finally:
        await bench.hang_up_all()
        await bench.gen.stop()
    fit = samples[int(len(samples) * WARMUP_FRACTION) :] or samples
    ts = [r["t_s"] for r in fit]
    rss_slope = slope_per_min(ts, [r["rss_kb"] for r in fit])
    fd_slope = slope_per_min(ts, [r["fds"] for r in fit])
    worst = max((r["late_or_lost_pct"] for r in samples), default=100.0)
    lost_calls = up - min((r["calls_up"] for r in samples), default=0)
    holds = bool(samples) and worst < MAX_LOSS_PCT and lost_calls == 0 and up == calls
    grows = rss_slope > MAX_RSS_GROWTH_KB_PER_MIN or fd_slope > MAX_FD_GROWTH_PER_MIN
    return {
        "mode": mode,
        "calls": calls,
        "calls_established": up,
        "calls_with_audio": with_audio,
        "calls_lost_during_hold": lost_calls,
        "duration_s": round(samples[-1]["t_s"], 1) if samples else 0.0,
        "sample_s": bench.window_s,
        "worst_sample_late_or_lost_pct": worst,
        "median_sample_late_or_lost_pct": sorted(r["late_or_lost_pct"] for r in samples)[len(samples) // 2]
        if samples
        else None,
        "holds": holds,
        "rss_kb_growth_per_min": round(rss_slope, 1),
        "fds_growth_per_min": round(fd_slope, 3),
        "grows": grows,
        "limits": {
            "max_late_or_lost_pct": MAX_LOSS_PCT,
            "max_rss_kb_growth_per_min": MAX_RSS_GROWTH_KB_PER_MIN,
            "max_fds_growth_per_min": MAX_FD_GROWTH_PER_MIN,
        },
        "samples": samples,
    }


async def _main(bench: GatewayBench, mode: str, calls: int, duration_s: float, log: Callable[[str], None]) -> Any:
    from voipgw.sip import SipStack

    bench.stack = SipStack("127.0.0.1", bench.sip_port, asyncio.get_running_loop())
    await bench.stack.start()
    bench._bob_task = asyncio.get_running_loop().create_task(bench._bob_loop())
    try:
        return await _hold(bench, mode, calls, duration_s, log)
    finally:
        bench._bob_task.cancel()
        try:
            await bench._bob_task
        except asyncio.CancelledError:
            pass
        await bench.stack.stop()


def run(
    mode: str = "passthrough",
    calls: int = 40,
    duration_s: float = 300.0,
    sample_s: float = SAMPLE_S,
    workdir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Hold ``calls`` calls in ``mode`` for ``duration_s`` through two real gateway processes; JSON-ready."""
    import uvloop

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    if calls < 1 or duration_s <= 0 or sample_s <= 0:
        raise ValueError("calls, duration and sample period must be positive")
    tmp = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="voipgw-bench-soak-"))
    tmp.mkdir(parents=True, exist_ok=True)
    bench = GatewayBench(tmp, quick=False, log=log or (lambda _m: None))
    bench.window_s = sample_s
    try:
        bench.start_gateways()
        t0 = time.monotonic()
        out = dict(uvloop.run(_main(bench, mode, calls, duration_s, log or (lambda _m: None))))
        out["wall_s"] = round(time.monotonic() - t0, 1)
        return out
    finally:
        bench.stop_processes()
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
