"""``voipgw bench memory``: gateway A's memory per call at up to 1,000 concurrent pass-through calls, and with
``--trace`` where it goes (tracemalloc, by source line).

Built on ``voipgw.bench.gateway`` (the same gateway processes A and B and synthetic phones). The media is thin: each
leg sends one frame per second (``MEDIA_PERIOD_S``), enough to keep every call alive (the gateway's media timeout)
and its relay direct, so that two shared cores can set up and hold a thousand calls (at 50 frames a second each,
gateway A alone would need about four cores: ``bench gateway`` measures the relay's cost). What a call keeps does
not depend on its packet rate: pass-through holds no frame. Memory per call is the RSS slope between the first and
the last step (the first calls also pay one-off costs: imports, allocator arenas, caches). Loopback only; it stops
every process it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from voipgw.bench.gateway import GatewayBench, LoadGen, rss_kb
from voipgw.sip import SipStack

MEDIA_PERIOD_S = 1.0
DEFAULT_STEPS = (100, 250, 500, 1000)
SETUP_CONCURRENCY = 16
SETTLE_S = 5.0
"""After a step's last call is up: setup garbage is collected."""
SETTLE_SLOPE_S = 35.0
"""Before the first and the last step are measured (the slope's ends): the SIP transactions of their setup expire
(32 s timers), so the figure is what a call keeps, not what its INVITE left for half a minute."""
GOAL_KB_PER_CALL = 100.0
TRACE_FRAMES = 1
TRACE_TOP = 25
SNAPSHOT_WAIT_S = 60.0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _ramp(bench: GatewayBench, steps: Sequence[int], snapshot: Path | None, log: Callable[[str], None]) -> Any:
    assert bench.a is not None
    pid = bench.a.proc.pid
    bench.stack = SipStack("127.0.0.1", bench.sip_port, asyncio.get_running_loop())
    await bench.stack.start()
    bob = asyncio.get_running_loop().create_task(bench._bob_loop())
    bench.gen = LoadGen("passthrough", period_s=MEDIA_PERIOD_S)
    bench.gen.start()
    bench.calls, bench.bob_calls = [], []
    rows: list[dict[str, Any]] = []
    try:
        for i, n in enumerate(steps):
            t0 = time.monotonic()
            await bench.grow(n)
            setup_s = time.monotonic() - t0
            await asyncio.sleep(SETTLE_SLOPE_S if i in (0, len(steps) - 1) else SETTLE_S)
            with_audio = sum(1 for c in bench.calls if c.alice.audio_frames > 0)
            row: dict[str, Any] = {
                "calls": n,
                "calls_with_audio": with_audio,
                "rss_kb": rss_kb(pid),
                "fds": fd_count(pid),
            }
            row["setup_s"] = round(setup_s, 1)
            rows.append(row)
            log(f"  {n:>5} calls ({with_audio} with audio, setup {setup_s:.0f} s): gateway A RSS {row['rss_kb']} KB")
            if snapshot is not None and i in (0, len(steps) - 1):
                # The first signal starts tracing, the second writes what was allocated since and is still alive.
                os.kill(pid, signal.SIGUSR1)
                if i:
                    deadline = time.monotonic() + SNAPSHOT_WAIT_S
                    while not snapshot.exists() and time.monotonic() < deadline:
                        await asyncio.sleep(0.5)
    finally:
        await bench.hang_up_all()
        await bench.gen.stop()
        bob.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bob
        await bench.stack.stop()
    return rows


def breakdown(path: Path, calls: int, top: int = TRACE_TOP) -> dict[str, Any]:
    """What a tracemalloc snapshot of the gateway holds per call, by source line (the growth between two steps)."""
    snap = tracemalloc.Snapshot.load(str(path))
    stats = snap.statistics("lineno")
    total = sum(s.size for s in stats)
    by_file: dict[str, int] = {}
    for s in stats:
        name = s.traceback[0].filename
        by_file[name] = by_file.get(name, 0) + s.size
    return {
        "traced_kb_per_call": round(total / calls / 1024, 1),
        "by_file_bytes_per_call": {
            _short(f): round(b / calls) for f, b in sorted(by_file.items(), key=lambda kv: -kv[1])[:top]
        },
        "by_line_bytes_per_call": {
            f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}": round(s.size / calls) for s in stats[:top]
        },
    }


def _short(filename: str) -> str:
    for marker in ("/voipgw/", "/ratchet/", "/sippy/", "/asyncio/"):
        if marker in filename:
            return marker.strip("/") + "/" + filename.split(marker, 1)[1]
    return os.path.basename(filename)


def run(
    steps: Sequence[int] = DEFAULT_STEPS,
    trace: bool = False,
    workdir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    import uvloop

    if len(steps) < 2 or list(steps) != sorted(set(steps)) or steps[0] < 1:
        raise ValueError("steps must be at least two increasing call counts")
    tmp = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="voipgw-bench-mem-"))
    tmp.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _m: None)
    bench = GatewayBench(tmp, False, say)
    bench.setup_concurrency = SETUP_CONCURRENCY
    snapshot = tmp / "gateway-a.tracemalloc" if trace else None
    if snapshot is not None:
        bench.a_module = "voipgw.bench.memory"
        bench.extra_args["a"] = []
        os.environ["VOIPGW_BENCH_SNAPSHOT"] = str(snapshot)
    t0 = time.monotonic()
    try:
        bench.start_gateways()
        rows = uvloop.run(_ramp(bench, steps, snapshot, say))
    finally:
        bench.stop_processes()
        os.environ.pop("VOIPGW_BENCH_SNAPSHOT", None)
    first, last = rows[0], rows[-1]
    per_call = (last["rss_kb"] - first["rss_kb"]) / (last["calls"] - first["calls"])
    out: dict[str, Any] = {
        "steps": rows,
        "media_period_s": MEDIA_PERIOD_S,
        "max_calls": last["calls"],
        "all_calls_carried_audio": all(r["calls_with_audio"] == r["calls"] for r in rows),
        "memory_kb_per_call": round(per_call, 1),
        "goal_kb_per_call": GOAL_KB_PER_CALL,
        "meets_goal": per_call <= GOAL_KB_PER_CALL,
        "fds_per_call": round((last["fds"] - first["fds"]) / (last["calls"] - first["calls"]), 2),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if snapshot is not None and snapshot.exists():
        out["tracemalloc"] = breakdown(snapshot, last["calls"] - first["calls"])
    if workdir is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _traced_gateway() -> None:
    """``python -m voipgw.bench.memory --home … gateway …``: gateway A as usual, plus SIGUSR1 (the first starts
    tracemalloc, the second writes a snapshot of what is alive since to $VOIPGW_BENCH_SNAPSHOT)."""
    target = Path(os.environ["VOIPGW_BENCH_SNAPSHOT"])

    def on_signal(_sig: int, _frame: object) -> None:
        gc.collect()
        if not tracemalloc.is_tracing():
            tracemalloc.start(TRACE_FRAMES)
            return
        snap = tracemalloc.take_snapshot()
        tmp = target.with_suffix(".part")
        snap.dump(str(tmp))
        tmp.rename(target)

    signal.signal(signal.SIGUSR1, on_signal)
    from voipgw.cli.main import main

    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    _traced_gateway()
