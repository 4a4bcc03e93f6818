"""``voipgw bench churn``: the call rate one gateway process holds. A real sipp UAC places PCMU calls (INVITE, key
exchange between the gateways, transcoded audio, BYE) through gateways A and B to a sipp UAS that echoes the RTP, at
rising rates, while N measured pass-through calls run alongside with exact late/lost accounting.

Built on ``voipgw.bench.gateway`` (the same gateway processes, synthetic phones and frame accounting). The sipp
scenarios and the audio pcap are generated here rather than taken from ``tests/testbed``: ``voipgw`` must not import
``tests`` (it ships without them), and the pcap must last as long as each run's hold time. Loopback only; every
process it starts (gateways, sipp) is stopped by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voipgw.bench.call import CLK_TCK, process_cpu_s
from voipgw.bench.common import BenchError, free_port_span, udp_ports_bound
from voipgw.bench.gateway import (
    LATE_SLACK_MS,
    MAX_LOSS_PCT,
    SETTLE_S,
    GatewayBench,
    LoadGen,
    Step,
    percentile,
    rss_kb,
    thread_cpu_s,
)
from voipgw.bench.sipp import (
    SippProcess,
    SippStats,
    parse_rtt_csv,
    parse_stat_csv,
    sipp_check,
    write_pcmu_pcap,
    write_uac_scenario,
    write_uas_scenario,
)

# How the figures are made:
# - Gateway A fronts "alice" (the synthetic phones of ``bench gateway``) and "sipp" (the sipp UAC); gateway B
#   fronts "bob" (the synthetic phones again) and "echo" (the sipp UAS, which echoes every call's RTP). A routes
#   bob and echo straight to B. sipp offers PCMU only, so both gateways transcode PCMU <-> Opus on the sipp calls.
# - First the N background calls are set up and measured alone (the reference: it also fixes the unloaded latency
#   that "late" is judged against). Then, per rate R, one sipp UAC places R*step_s calls at R calls/s, each held
#   H seconds, and exits when its last call has ended; the background is measured in back-to-back windows meanwhile.
# - A step is judged on the windows in its steady state (after the first H seconds, when R*H sipp calls are up,
#   until the last call is placed); it holds when sipp saw no failed or unfinished call, no background call dropped,
#   and the background's late + lost frames stay under 1 %. The search stops at the first step that does not hold.
# - CPU per call, split in two (what the machine can physically hold follows from it): before the background, the
#   setup probe places PROBE_CALLS sipp calls with no hold (INVITE, key exchange, 183/200, ACK, BYE) and charges each
#   gateway's CPU above its idle rate to them: ``setup_cpu_ms_per_call``. Per step, what each gateway spent above the
#   reference (the background alone), less the calls' setup, divided by the sipp call-seconds, is the media CPU per
#   call-second. ``projected_calls_per_s_per_core`` = 1000 / (setup + hold x media) for gateway A alone, and
#   ``projected_calls_per_s_machine`` divides the CPUs left beside the background by what A, B and sipp spend per call.

DEFAULT_RATES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0)
"""2.5 between 2 and 3: on the 2-core test machine the limit lies there (see the projected rates)."""
DEFAULT_HOLD_S = 10.0
DEFAULT_STEP_S = 30.0
DEFAULT_BACKGROUND = 60
DEFAULT_WINDOW_S = 2.0
REFERENCE_WINDOWS = 2
SERVICE = "echo"
"""The user sipp dials at A; A routes it to B, which fronts the sipp UAS as this user."""
SIPP_USER = "sipp"
"""The inside user A knows the sipp UAC as (the scenario's From user)."""
PROBE_USER = "sipp-probe"
"""The same UAC during the setup probe: its calls (no audio) stay out of the snapshot summary of the steps' calls."""
RECV_TIMEOUT_MS = 10_000
"""sipp fails a call that waits this long for an answer or for the BYE's 200 (a setup failure)."""
EXIT_MARGIN_S = 45.0
"""After the last call's hold: retransmissions and receive timeouts end every call well within this."""
LIMIT_MARGIN_S = 10.0
"""sipp's open-call limit is R * (H + this) + 10: high enough that it never throttles the rate by itself."""
READY_TIMEOUT_S = 10.0
MEDIA_PORT_STRIDE = 4
MEDIA_PORT_WRAP = 10_000
"""sipp's [auto_media_port] is -mp + 4 * (call - 1) % 10000 (sipp 3.6 call.cpp)."""
PROBE_CALLS = 40
"""Calls the setup probe places (0 skips it); enough that a few ms of noise per call stay small."""
PROBE_RATE = 2.0
"""Slow enough that setups do not queue behind each other (their CPU, not their latency, is measured)."""
IDLE_S = 3.0
"""How long the gateways' idle CPU rate (sippy's reactor ticks, timers) is measured before the probe."""


# --- processes and ports -------------------------------------------------------------------------------------


def machine_busy_s() -> float:
    """CPU seconds every core has spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat", encoding="ascii") as fh:
        f = [int(x) for x in fh.readline().split()[1:9]]
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / CLK_TCK


def _cpu_s(pid: int, default: float = 0.0) -> float:
    try:
        return process_cpu_s(pid)
    except (OSError, ValueError, IndexError):
        return default  # the process has just exited


@dataclass
class Config:
    rates: Sequence[float]
    hold_s: float
    step_s: float
    background: int
    window_s: float
    confirm_s: float
    probe_calls: int = PROBE_CALLS


@dataclass
class ChurnStep:
    rate: float
    step_s: float
    hold_s: float
    background: int
    sipp: SippStats
    sipp_exit: int
    unfinished: int
    setup_ms: list[float]
    windows: list[tuple[float, float, Step]]
    """(start, end) seconds after sipp started, and the background's figures, for every window."""
    judged: list[Step]
    background_dropped: int
    gw_a_cpu_s_step: float
    gw_b_cpu_s_step: float
    wall_s: float
    sipp_cpu_s_step: float = 0.0
    """sipp UAC + UAS (the UAC's as last sampled before it exited)."""
    loadgen_cpu_s_step: float = 0.0
    """This process: the background's phones and their SIP stack."""
    others_cpu_s_step: float = 0.0
    """Every other process on the machine (other tests, builds): what the step competed with."""
    load_average: float = 0.0
    rss_kb_start: int = 0
    base: Baseline | None = None
    """The background alone (reference) and the setup probe: what this step's CPU is compared against."""

    @property
    def sent(self) -> int:
        return sum(s.sent for s in self.judged)

    @property
    def bad(self) -> int:
        return sum(s.lost + s.late for s in self.judged)

    @property
    def bad_pct(self) -> float:
        return 100.0 * self.bad / self.sent if self.sent else 100.0

    @property
    def why_not(self) -> list[str]:
        why = []
        if self.sipp.created == 0:
            why.append("sipp placed no call")
        if self.sipp.failed:
            causes = ", ".join(f"{k} {v}" for k, v in sorted(self.sipp.failures.items()))
            why.append(f"{self.sipp.failed} sipp call(s) failed ({causes or 'cause not given'})")
        if self.unfinished:
            why.append(f"{self.unfinished} sipp call(s) unfinished when sipp was stopped")
        if self.background_dropped:
            why.append(f"{self.background_dropped} background call(s) dropped")
        if self.bad_pct >= MAX_LOSS_PCT:
            why.append(f"background {self.bad_pct:.2f} % late or lost")
        return why

    @property
    def holds(self) -> bool:
        return not self.why_not

    def cpu_split(self) -> dict[str, Any]:
        """Per sipp call: CPU of A, B and sipp above the background, the media share per call-second and what rate
        that projects to (None when there is no baseline or no call)."""
        n, base = self.sipp.created, self.base
        if base is None or n == 0:
            return {}
        wall = self.wall_s
        a_call = 1000.0 * (self.gw_a_cpu_s_step - base.a_cpu_per_s * wall) / n
        b_call = 1000.0 * (self.gw_b_cpu_s_step - base.b_cpu_per_s * wall) / n
        sipp_call = 1000.0 * self.sipp_cpu_s_step / n
        out: dict[str, Any] = {
            "gateway_a_cpu_ms_per_call": round(a_call, 1),
            "gateway_b_cpu_ms_per_call": round(b_call, 1),
            "sipp_cpu_ms_per_call": round(sipp_call, 1),
        }
        if base.setup_a_ms is None or base.setup_b_ms is None:
            return out
        media_a = max(0.0, a_call - base.setup_a_ms) / self.hold_s
        media_b = max(0.0, b_call - base.setup_b_ms) / self.hold_s
        per_call_a = base.setup_a_ms + self.hold_s * media_a
        spare_ms = 1000.0 * max(0.0, (os.cpu_count() or 1) - base.a_cpu_per_s - base.b_cpu_per_s - base.gen_cpu_per_s)
        per_call_all = max(1e-3, a_call + b_call + sipp_call)
        out |= {
            "setup_cpu_ms_per_call": round(base.setup_a_ms, 1),
            "media_cpu_ms_per_call_s": round(media_a, 1),
            "media_cpu_ms_per_call_s_b": round(media_b, 1),
            "projected_calls_per_s_per_core": round(1000.0 / max(1e-3, per_call_a), 2),
            "projected_calls_per_s_machine": round(spare_ms / per_call_all, 2),
        }
        return out

    def as_dict(self) -> dict[str, Any]:
        j = self.judged
        lat = [x for s in j for x in (s.latency_ms_p99,) if x is not None]
        cpu_pct = [100.0 * s.gw_cpu_s / s.window_s for s in j]
        p50s = [s.latency_ms_p50 for s in j if s.latency_ms_p50 is not None]
        wall = self.wall_s or 1.0
        return {
            "rate_per_s": self.rate,
            "step_s": self.step_s,
            "hold_s": self.hold_s,
            "concurrency_implied": round(self.rate * self.hold_s + self.background, 1),
            "sipp_calls_attempted": self.sipp.created,
            "sipp_calls_successful": self.sipp.successful,
            "sipp_calls_failed": self.sipp.failed,
            "sipp_calls_unfinished": self.unfinished,
            "sipp_failures": self.sipp.failures,
            "sipp_retransmissions": self.sipp.retransmissions,
            "sipp_concurrent_max": self.sipp.concurrent_max,
            "sipp_exit_status": self.sipp_exit,
            "setup_ms_p50": _r(percentile(self.setup_ms, 50)),
            "setup_ms_p99": _r(percentile(self.setup_ms, 99)),
            "setup_ms_samples": len(self.setup_ms),
            "setup_ms_mean_sipp": _r(self.sipp.response_time_ms_mean),
            "background_frames_sent": self.sent,
            "background_frames_received": sum(s.received for s in j),
            "background_frames_lost": sum(s.lost for s in j),
            "background_frames_late": sum(s.late for s in j),
            "background_late_or_lost_pct": round(self.bad_pct, 3),
            "background_worst_window_pct": round(max((s.bad_pct for s in j), default=100.0), 3),
            "background_latency_ms_p50": _r(percentile(p50s, 50)),
            "background_latency_ms_p99_worst_window": _r(max(lat, default=None)),
            "background_calls_dropped": self.background_dropped,
            "windows": [
                {
                    "t_s": a,
                    "late_or_lost_pct": round(s.bad_pct, 3),
                    "latency_ms_p99": _r(s.latency_ms_p99),
                    "gateway_a_cpu_pct": round(100.0 * s.gw_cpu_s / s.window_s, 1),
                    "gateway_a_event_loop_cpu_pct": round(100.0 * s.gw_loop_cpu_s / s.window_s, 1),
                    "gateway_a_rss_kb": s.rss_kb,
                    "judged": any(s is x for x in j),
                }
                for a, _b, s in self.windows
            ],
            "windows_judged": len(j),
            "windows_total": len(self.windows),
            "gateway_a_cpu_pct": round(sum(cpu_pct) / len(cpu_pct), 1) if cpu_pct else None,
            "gateway_a_cpu_pct_max": round(max(cpu_pct), 1) if cpu_pct else None,
            "gateway_a_event_loop_cpu_pct": round(
                100.0 * sum(s.gw_loop_cpu_s for s in j) / sum(s.window_s for s in j), 1
            )
            if j
            else None,
            "gateway_a_cpu_pct_whole_step": round(100.0 * self.gw_a_cpu_s_step / wall, 1),
            "gateway_b_cpu_pct_whole_step": round(100.0 * self.gw_b_cpu_s_step / wall, 1),
            "sipp_cpu_pct_whole_step": round(100.0 * self.sipp_cpu_s_step / wall, 1),
            "load_generator_cpu_pct_whole_step": round(100.0 * self.loadgen_cpu_s_step / wall, 1),
            "other_processes_cpu_pct_whole_step": round(100.0 * self.others_cpu_s_step / wall, 1),
            "load_average_1min_at_end": round(self.load_average, 2),
            "gateway_a_rss_kb_at_start": self.rss_kb_start,
            "gateway_a_rss_kb": j[-1].rss_kb if j else None,
            "gateway_a_rss_kb_at_end": self.windows[-1][2].rss_kb if self.windows else None,
            "wall_s": round(self.wall_s, 1),
            "holds": self.holds,
            "why_not": self.why_not,
            **self.cpu_split(),
        }


@dataclass
class Baseline:
    """CPU rates (seconds per second) of A, B and this process with the background alone, and the setup probe's
    CPU per call of A and B (None when the probe was skipped or placed no call)."""

    a_cpu_per_s: float
    b_cpu_per_s: float
    gen_cpu_per_s: float
    setup_a_ms: float | None = None
    setup_b_ms: float | None = None


def _r(x: float | None, nd: int = 2) -> float | None:
    return round(float(x), nd) if x is not None else None


class ChurnBench:
    """The sipp side of the benchmark; the gateways and the background come from ``GatewayBench``."""

    def __init__(self, workdir: Path, cfg: Config, log: Callable[[str], None]) -> None:
        self.workdir = workdir
        self.cfg = cfg
        self.log = log
        self.rng = random.Random()
        self.bench = GatewayBench(workdir, quick=False, log=log)
        self.bench.window_s = cfg.window_s
        taken: set[int] = set()
        self.uac_port = free_port_span(2, taken, self.rng)  # SIP, control
        taken |= {self.uac_port, self.uac_port + 1}
        self.probe_port = free_port_span(2, taken, self.rng)  # the setup probe's UAC: another inside phone
        taken |= {self.probe_port, self.probe_port + 1}
        self.uas_port = free_port_span(2, taken, self.rng)
        taken |= {self.uas_port, self.uas_port + 1}
        self.uas_media = free_port_span(4, taken, self.rng)  # -rtp_echo binds audio and video (+2)
        self.taken = taken | set(range(self.uas_media, self.uas_media + 4))
        self.snapshot_a = workdir / "gateway-a-snapshot.json"
        self.bench.extra_args["a"] += [
            "--user", f"{SIPP_USER}=sip:{SIPP_USER}@127.0.0.1:{self.uac_port}",
            "--user", f"{PROBE_USER}=sip:{PROBE_USER}@127.0.0.1:{self.probe_port}",
            "--route", f"{SERVICE}=sip:{SERVICE}@127.0.0.1:{self.bench.b_port}",
            "--snapshot-json", str(self.snapshot_a),
        ]  # fmt: skip
        self.bench.extra_args["b"] += ["--user", f"{SERVICE}=sip:{SERVICE}@127.0.0.1:{self.uas_port}"]
        self.pcap = write_pcmu_pcap(workdir / "speech-pcmu.pcap", cfg.hold_s)
        self.uas: SippProcess | None = None
        self.base: Baseline | None = None

    def start(self) -> None:
        scen = write_uas_scenario(self.workdir / "uas.xml")
        argv = [*self._argv(scen, self.uas_port, self.uas_media), "-rtp_echo"]
        self.uas = SippProcess("sipp-uas", argv, self.workdir / "uas")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self.uas_port not in udp_ports_bound():
            if not self.uas.alive or time.monotonic() > deadline:
                raise BenchError(f"the sipp UAS did not start:\n{self.uas.log_tail()}")
            time.sleep(0.05)
        self.bench.start_gateways()

    def stop(self) -> dict[str, Any]:
        """Stop sipp's UAS and the gateways; the UAS's totals."""
        out: dict[str, Any] = {}
        if self.uas is not None:
            rc = self.uas.stop()
            stats = parse_stat_csv(_read(self.uas.cwd / "stats.csv"))
            out = {"exit_status": rc, "calls": stats.created, "successful": stats.successful, "failed": stats.failed}
        self.bench.stop_processes()
        return out

    @staticmethod
    def _argv(scenario: Path, port: int, media: int) -> list[str]:
        return [
            "sipp", "-sf", str(scenario),
            "-i", "127.0.0.1", "-mi", "127.0.0.1",
            "-p", str(port), "-cp", str(port + 1), "-mp", str(media),
            "-nostdin",
            "-trace_stat", "-stf", "stats.csv", "-fd", "1",
            "-trace_err", "-error_file", "errors.log",
        ]  # fmt: skip

    def _uac_argv(
        self, cwd: Path, rate: float, calls: int, hold_s: float, wait_s: float, probe: bool = False
    ) -> list[str]:
        """sipp UAC arguments: ``calls`` calls at ``rate`` calls/s, each held ``hold_s``, all done within ``wait_s``."""
        span = min(MEDIA_PORT_WRAP, MEDIA_PORT_STRIDE * calls) + MEDIA_PORT_STRIDE
        media = free_port_span(span, self.taken, self.rng)
        cwd.mkdir(parents=True, exist_ok=True)
        scen = write_uac_scenario(cwd / "uac.xml", self.pcap, PROBE_USER if probe else SIPP_USER)
        limit = math.ceil(rate * (hold_s + LIMIT_MARGIN_S)) + 10
        port = self.probe_port if probe else self.uac_port
        argv = [*self._argv(scen, port, media), f"127.0.0.1:{self.bench.a_port}", "-s", SERVICE]
        argv += ["-r", f"{rate:g}", "-m", str(calls), "-l", str(limit), "-d", str(int(hold_s * 1000))]
        argv += ["-recv_timeout", str(RECV_TIMEOUT_MS), "-timeout", f"{math.ceil(wait_s)}s", "-timeout_error"]
        return [*argv, "-trace_rtt", "-rtt_freq", "1"]

    async def setup_probe(self, calls: int) -> dict[str, Any]:
        """Gateway CPU per call setup: the gateways' idle rate first, then ``calls`` sipp calls with no hold (INVITE
        to 200 OK, ACK, BYE at once), charged whatever A and B spent above idle. Run before the background exists."""
        bench = self.bench
        assert bench.a is not None and bench.b is not None and self.uas is not None
        pids = (bench.a.proc.pid, bench.b.proc.pid, self.uas.proc.pid)
        a = pids[0]
        cpu0, loop0, t0 = [_cpu_s(p) for p in pids], thread_cpu_s(a, a), time.monotonic()
        await asyncio.sleep(IDLE_S)
        idle_wall = time.monotonic() - t0
        idle = [(_cpu_s(p) - c) / idle_wall for p, c in zip(pids, cpu0, strict=True)]
        idle_loop = (thread_cpu_s(a, a) - loop0) / idle_wall
        cwd = self.workdir / "uac-setup-probe"
        wait_s = calls / PROBE_RATE + EXIT_MARGIN_S
        cpu0, loop0, t0 = [_cpu_s(p) for p in pids], thread_cpu_s(a, a), time.monotonic()
        uac = SippProcess("sipp-uac-probe", self._uac_argv(cwd, PROBE_RATE, calls, 0.0, wait_s, probe=True), cwd)
        uac_cpu = 0.0
        try:
            while uac.alive and time.monotonic() - t0 < wait_s:
                await asyncio.sleep(0.2)
                uac_cpu = _cpu_s(uac.proc.pid, uac_cpu)
        finally:
            rc = uac.proc.poll()
            if rc is None:
                rc = uac.stop()
        wall = time.monotonic() - t0
        spent = [_cpu_s(p, c) - c - rate * wall for p, c, rate in zip(pids, cpu0, idle, strict=True)]
        loop_spent = thread_cpu_s(a, a) - loop0 - idle_loop * wall  # A's event loop (main thread): the rest is SIP
        stats = parse_stat_csv(_read(cwd / "stats.csv"))
        setup: list[float] = []
        for path in sorted(cwd.glob("*_rtt.csv")):
            setup += parse_rtt_csv(_read(path))
        n = stats.created
        per_call = [round(1000.0 * x / n, 1) if n else None for x in spent]
        return {
            "calls": n,
            "successful": stats.successful,
            "failed": stats.failed,
            "exit_status": rc,
            "rate_per_s": PROBE_RATE,
            "setup_ms_p50": _r(percentile(setup, 50)),
            "gateway_a_idle_cpu_pct": round(100.0 * idle[0], 1),
            "gateway_b_idle_cpu_pct": round(100.0 * idle[1], 1),
            "setup_cpu_ms_per_call": per_call[0],
            "setup_cpu_ms_per_call_b": per_call[1],
            "setup_cpu_ms_per_call_event_loop": round(1000.0 * loop_spent / n, 1) if n else None,
            "setup_cpu_ms_per_call_other_threads": round(1000.0 * (spent[0] - loop_spent) / n, 1) if n else None,
            "sipp_cpu_ms_per_call": round(1000.0 * (uac_cpu + spent[2] + idle[2] * wall) / n, 1) if n else None,
            "wall_s": round(wall, 1),
            "ok": n > 0 and stats.failed == 0 and stats.successful == n,
        }

    async def step(self, index: int, rate: float, step_s: float) -> ChurnStep:
        bench, cfg = self.bench, self.cfg
        assert bench.a is not None and bench.b is not None
        calls = max(1, round(rate * step_s))
        cwd = self.workdir / f"uac-{index:02d}-{rate:g}cps"
        wait_s = step_s + cfg.hold_s + EXIT_MARGIN_S
        argv = self._uac_argv(cwd, rate, calls, cfg.hold_s, wait_s)
        dropped0 = sum(1 for c in bench.calls if c.ended)
        assert self.uas is not None
        pids = (bench.a.proc.pid, bench.b.proc.pid, os.getpid(), self.uas.proc.pid)
        cpu0 = [_cpu_s(pid) for pid in pids]
        rss0 = rss_kb(bench.a.proc.pid)
        busy0 = machine_busy_s()
        t0 = time.monotonic()
        uac = SippProcess(f"sipp-uac-{index}", argv, cwd)
        uac_cpu = 0.0
        windows: list[tuple[float, float, Step]] = []
        try:
            while uac.alive and time.monotonic() - t0 < wait_s:
                start = time.monotonic() - t0
                s = await bench._window(cfg.background)
                windows.append((round(start, 2), round(start + cfg.window_s, 2), s))
                uac_cpu = _cpu_s(uac.proc.pid, uac_cpu)
        finally:
            rc = uac.proc.poll()
            if rc is None:
                uac_cpu = _cpu_s(uac.proc.pid, uac_cpu)
                rc = uac.stop()
        wall = time.monotonic() - t0
        a_cpu, b_cpu, me_cpu, uas_cpu = (_cpu_s(pid, c) - c for pid, c in zip(pids, cpu0, strict=True))
        others = max(0.0, machine_busy_s() - busy0 - a_cpu - b_cpu - me_cpu - uas_cpu - uac_cpu)
        stats = parse_stat_csv(_read(cwd / "stats.csv"))
        if stats.created == 0 and rc != 0:
            raise BenchError(f"sipp UAC exited with status {rc} before placing a call:\n{uac.log_tail()}")
        setup: list[float] = []
        for path in sorted(cwd.glob("*_rtt.csv")):
            setup += parse_rtt_csv(_read(path))
        steady = [s for (a, b, s) in windows if a >= cfg.hold_s + SETTLE_S and b <= step_s + 0.5]
        judged = steady or [s for (_a, _b, s) in windows]
        return ChurnStep(
            rate=rate,
            step_s=step_s,
            hold_s=cfg.hold_s,
            background=cfg.background,
            sipp=stats,
            sipp_exit=rc,
            unfinished=max(0, stats.created - stats.successful - stats.failed),
            setup_ms=setup,
            windows=windows,
            judged=judged,
            background_dropped=sum(1 for c in bench.calls if c.ended) - dropped0,
            gw_a_cpu_s_step=a_cpu,
            gw_b_cpu_s_step=b_cpu,
            wall_s=wall,
            sipp_cpu_s_step=uac_cpu + uas_cpu,
            loadgen_cpu_s_step=me_cpu,
            others_cpu_s_step=others,
            load_average=os.getloadavg()[0],
            rss_kb_start=rss0,
            base=self.base,
        )

    async def reference(self) -> dict[str, Any]:
        """The background alone (this also fixes the unloaded latency that "late" is measured from)."""
        bench = self.bench
        assert bench.a is not None and bench.b is not None and self.uas is not None
        pids = (bench.a.proc.pid, bench.b.proc.pid, os.getpid(), self.uas.proc.pid)
        cpu0, busy0, t0 = [_cpu_s(p) for p in pids], machine_busy_s(), time.monotonic()
        steps = [await bench._window(self.cfg.background) for _ in range(REFERENCE_WINDOWS)]
        spent = [_cpu_s(p, c) - c for p, c in zip(pids, cpu0, strict=True)]
        others = machine_busy_s() - busy0 - sum(spent)
        wall = time.monotonic() - t0
        self.base = Baseline(spent[0] / wall, spent[1] / wall, spent[2] / wall)
        sent = sum(s.sent for s in steps)
        bad = sum(s.lost + s.late for s in steps)
        return {
            "background_calls": self.cfg.background,
            "background_frames_sent": sent,
            "background_late_or_lost_pct": round(100.0 * bad / sent, 3) if sent else 100.0,
            "background_latency_ms_p50": _r(steps[-1].latency_ms_p50),
            "background_latency_ms_p99": _r(steps[-1].latency_ms_p99),
            "gateway_a_cpu_pct": round(100.0 * sum(s.gw_cpu_s for s in steps) / (len(steps) * self.cfg.window_s), 1),
            "gateway_b_cpu_pct": round(100.0 * spent[1] / wall, 1),
            "load_generator_cpu_pct": round(100.0 * spent[2] / wall, 1),
            "other_processes_cpu_pct": round(100.0 * max(0.0, others) / wall, 1),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "ok": sent > 0 and 100.0 * bad / sent < MAX_LOSS_PCT,
        }

    async def main(self) -> dict[str, Any]:
        from voipgw.sip import SipStack

        bench, cfg = self.bench, self.cfg
        bench.stack = SipStack("127.0.0.1", bench.sip_port, asyncio.get_running_loop())
        await bench.stack.start()
        bench._bob_task = asyncio.get_running_loop().create_task(bench._bob_loop())
        bench.gen = LoadGen("passthrough")
        bench.gen.start()
        steps: list[ChurnStep] = []
        confirm: ChurnStep | None = None
        stopped = ""
        probe: dict[str, Any] | None = None
        try:
            if cfg.probe_calls > 0:
                probe = await self.setup_probe(cfg.probe_calls)
                self.log(
                    f"  setup probe: {probe['successful']}/{probe['calls']} calls, setup p50 {probe['setup_ms_p50']} "
                    f"ms, CPU per call setup: A {probe['setup_cpu_ms_per_call']} ms (event loop "
                    f"{probe['setup_cpu_ms_per_call_event_loop']} ms), B "
                    f"{probe['setup_cpu_ms_per_call_b']} ms, sipp {probe['sipp_cpu_ms_per_call']} ms"
                )
            await bench.grow(cfg.background)
            await asyncio.sleep(SETTLE_S)
            up = sum(1 for c in bench.calls if not c.ended)
            ref = await self.reference()
            if self.base is not None and probe is not None and probe["ok"]:
                self.base.setup_a_ms = probe["setup_cpu_ms_per_call"]
                self.base.setup_b_ms = probe["setup_cpu_ms_per_call_b"]
            self.log(
                f"  background alone: {up} calls, {ref['background_late_or_lost_pct']:.2f} % late/lost, "
                f"p50 {ref['background_latency_ms_p50']} ms, gateway A CPU {ref['gateway_a_cpu_pct']} %, "
                f"other processes {ref['other_processes_cpu_pct']} %"
            )
            if ref["ok"] and up == cfg.background:
                for i, rate in enumerate(cfg.rates):
                    st = await self.step(i, rate, cfg.step_s)
                    steps.append(st)
                    self.log(_line(st))
                    if not st.holds:
                        stopped = f"{rate:g} calls/s did not hold"
                        break
                held = [s for s in steps if s.holds]
                if cfg.confirm_s > 0 and held:
                    self.log(f"  confirming {held[-1].rate:g} calls/s for {cfg.confirm_s:g} s")
                    confirm = await self.step(len(steps), held[-1].rate, cfg.confirm_s)
                    self.log(_line(confirm))
            else:
                stopped = "the background did not hold on its own, or not every background call was set up"
            with_audio = sum(1 for c in bench.calls if c.alice.audio_frames > 0)
        finally:
            await bench.hang_up_all()
            await bench.gen.stop()
            bench._bob_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bench._bob_task
            await bench.stack.stop()
        held = [s for s in steps if s.holds]
        best = held[-1] if held else None
        # The projection from the most loaded step that measured one (the most call-seconds: the least noise).
        split = next((d for d in (s.cpu_split() for s in reversed(steps)) if "projected_calls_per_s_machine" in d), {})
        return {
            "setup_probe": probe,
            "setup_cpu_ms_per_call": probe["setup_cpu_ms_per_call"] if probe else None,
            "media_cpu_ms_per_call_s": split.get("media_cpu_ms_per_call_s"),
            "projected_calls_per_s_per_core": split.get("projected_calls_per_s_per_core"),
            "projected_calls_per_s_machine": split.get("projected_calls_per_s_machine"),
            "background_calls": cfg.background,
            "background_calls_established": up,
            "background_calls_with_audio": with_audio,
            "reference": ref,
            "steps": [s.as_dict() for s in steps],
            "max_rate_held_per_s": best.rate if best else 0.0,
            "concurrency_at_max_rate": round(best.rate * cfg.hold_s + cfg.background, 1) if best else None,
            "sipp_concurrent_max_at_max_rate": best.sipp.concurrent_max if best else None,
            "gateway_a_cpu_pct_at_max_rate": best.as_dict()["gateway_a_cpu_pct"] if best else None,
            "first_failing_step": steps[-1].as_dict() if steps and not steps[-1].holds else None,
            "confirm": confirm.as_dict() if confirm is not None else None,
            "confirmed": confirm.holds if confirm is not None else None,
            "stopped_because": stopped or "every rate held",
        }


def _line(st: ChurnStep) -> str:
    d = st.as_dict()
    verdict = "holds" if st.holds else "FAILS: " + "; ".join(st.why_not)
    return (
        f"  {st.rate:>5g} calls/s x {st.hold_s:g} s: sipp {d['sipp_calls_successful']}/{d['sipp_calls_attempted']} ok, "
        f"{d['sipp_calls_failed']} failed, up to {d['sipp_concurrent_max']} at once, setup p50/p99 "
        f"{d['setup_ms_p50']}/{d['setup_ms_p99']} ms; background {d['background_late_or_lost_pct']:.2f} % late/lost "
        f"(worst window {d['background_worst_window_pct']:.2f} %); A CPU {d['gateway_a_cpu_pct']} %, other "
        f"processes {d['other_processes_cpu_pct_whole_step']} %; A CPU per call "
        f"{d.get('gateway_a_cpu_ms_per_call')} ms (media {d.get('media_cpu_ms_per_call_s')} ms/call-s), projected "
        f"{d.get('projected_calls_per_s_machine')} calls/s on this machine: {verdict}"
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def summarize_snapshot(path: Path) -> dict[str, Any]:
    """What gateway A's exit snapshot says about the last sipp calls it finished (it keeps the last 100 calls)."""
    try:
        snap = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"available": False}
    calls = [c for c in snap.get("finished", []) if c.get("user") == SIPP_USER]
    return {
        "available": True,
        "sipp_calls_in_snapshot": len(calls),
        "secure": sum(1 for c in calls if str(c.get("security", "")).startswith("secure")),
        "inside_codec_pcmu": sum(1 for c in calls if c.get("inside_codec") == "pcmu"),
        "outside_codec_opus": sum(1 for c in calls if c.get("outside_codec") == "opus"),
        "with_audio_from_sipp": sum(1 for c in calls if int(c.get("inside_frames_in") or 0) > 0),
        "with_audio_back_through_b": sum(1 for c in calls if int(c.get("outside_frames_opened") or 0) > 0),
        "outside_frames_sealed": sum(int(c.get("outside_frames_sealed") or 0) for c in calls),
        "outside_frames_opened": sum(int(c.get("outside_frames_opened") or 0) for c in calls),
        "outside_frames_refused": sum(int(c.get("outside_frames_refused") or 0) for c in calls),
    }


def parse_rates(text: str) -> list[float]:
    """``"1,2,4"`` -> ``[1.0, 2.0, 4.0]`` (positive, ascending, no duplicates)."""
    rates = sorted({float(x) for x in text.replace(" ", "").split(",") if x})
    if not rates or rates[0] <= 0:
        raise ValueError("rates must be positive numbers, e.g. 1,2,4,8")
    return rates


def run(
    rates: Sequence[float] = DEFAULT_RATES,
    hold_s: float = DEFAULT_HOLD_S,
    step_s: float = DEFAULT_STEP_S,
    background: int = DEFAULT_BACKGROUND,
    window_s: float = DEFAULT_WINDOW_S,
    confirm_s: float = 0.0,
    workdir: Path | None = None,
    log: Callable[[str], None] | None = None,
    probe_calls: int = PROBE_CALLS,
) -> dict[str, Any]:
    """Search the largest sipp call rate that gateway A holds beside ``background`` measured calls; JSON-ready."""
    import uvloop

    if not rates or min(rates) <= 0:
        raise ValueError("rates must be positive")
    if hold_s <= 0 or step_s <= 0 or window_s <= 0 or background < 1 or confirm_s < 0 or probe_calls < 0:
        raise ValueError("hold, step and window must be positive, and at least one background call")
    version = sipp_check()
    say = log or (lambda _m: None)
    tmp = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="voipgw-bench-churn-"))
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = Config(sorted(rates), hold_s, step_s, background, window_s, confirm_s, probe_calls)
    t0 = time.monotonic()
    load0 = os.getloadavg()[0]
    churn = ChurnBench(tmp, cfg, say)
    uas: dict[str, Any] = {}
    try:
        churn.start()
        out = dict(uvloop.run(churn.main()))
    finally:
        uas = churn.stop()
        snapshot = summarize_snapshot(churn.snapshot_a)
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    out.update(
        {
            "rates_tried": list(cfg.rates),
            "hold_s": hold_s,
            "step_s": step_s,
            "window_s": window_s,
            "late_slack_ms": LATE_SLACK_MS,
            "max_late_or_lost_pct": MAX_LOSS_PCT,
            "sipp_uas": uas,
            "gateway_a_snapshot": snapshot,
            "sipp_version": version,
            "elapsed_s": round(time.monotonic() - t0, 1),
            "load_average_1min_at_start": round(load0, 2),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
        }
    )
    return out


TABLE_COLUMNS = (
    ("rate_per_s", "calls/s", "{:g}"),
    ("concurrency_implied", "R*H+N", "{:g}"),
    ("sipp_calls_successful", "sipp ok", "{}"),
    ("sipp_calls_failed", "failed", "{}"),
    ("sipp_concurrent_max", "up max", "{}"),
    ("setup_ms_p50", "setup p50", "{}"),
    ("setup_ms_p99", "setup p99", "{}"),
    ("background_late_or_lost_pct", "bg bad %", "{:.2f}"),
    ("background_worst_window_pct", "worst %", "{:.2f}"),
    ("background_latency_ms_p99_worst_window", "bg p99 ms", "{}"),
    ("gateway_a_cpu_pct", "A CPU %", "{}"),
    ("gateway_a_event_loop_cpu_pct", "A loop %", "{}"),
    ("other_processes_cpu_pct_whole_step", "others %", "{}"),
    ("media_cpu_ms_per_call_s", "A media", "{}"),
    ("projected_calls_per_s_per_core", "A proj/s", "{}"),
    ("projected_calls_per_s_machine", "mach /s", "{}"),
    ("holds", "holds", "{}"),
)


def format_table(results: dict[str, Any]) -> str:
    """The steps as a table, then the verdict (what ``voipgw bench churn`` prints without ``--json``)."""
    ref = results["reference"]
    lines = [
        f"voipgw bench churn: sipp PCMU calls (INVITE, key exchange, transcoded audio, BYE) through gateways A and B, "
        f"held {results['hold_s']:g} s, each rate placed for {results['step_s']:g} s, beside "
        f"{results['background_calls']} measured pass-through calls (late = {results['late_slack_ms']:.0f} ms past "
        f"the unloaded median; a step holds with 0 failed sipp calls and < {results['max_late_or_lost_pct']:g} % "
        f"late/lost)",
        f"  background alone: {ref['background_late_or_lost_pct']:.2f} % late/lost, p50 "
        f"{ref['background_latency_ms_p50']} ms, gateway A CPU {ref['gateway_a_cpu_pct']} %, other processes "
        f"{ref['other_processes_cpu_pct']} % ('others %' below: CPU of processes outside the benchmark, % of one core)",
        "  " + " ".join(f"{title:>9}" for _k, title, _f in TABLE_COLUMNS),
    ]
    probe = results.get("setup_probe")
    if probe:
        lines.insert(
            2,
            f"  setup probe ({probe['calls']} calls at {probe['rate_per_s']:g}/s, no hold, before the background): "
            f"CPU per call setup A {probe['setup_cpu_ms_per_call']} ms (event loop "
            f"{probe.get('setup_cpu_ms_per_call_event_loop')} ms, SIP stack and other threads "
            f"{probe.get('setup_cpu_ms_per_call_other_threads')} ms), B {probe['setup_cpu_ms_per_call_b']} ms, "
            f"sipp {probe['sipp_cpu_ms_per_call']} ms; setup p50 {probe['setup_ms_p50']} ms ('A media': A's CPU ms "
            f"per call-second; 'A proj/s': calls/s one core of A holds = 1000 / (setup + hold x media); 'mach /s': "
            f"the CPUs left beside the background / CPU per call of A + B + sipp)",
        )
    rows = list(results["steps"])
    if results.get("confirm"):
        rows.append(results["confirm"])
    for row in rows:
        cells = [fmt.format(row[k]) if row.get(k) is not None else "-" for k, _t, fmt in TABLE_COLUMNS]
        lines.append("  " + " ".join(f"{c:>9}" for c in cells))
        if not row["holds"]:
            lines.append(f"  {'':>9} why not: {'; '.join(row['why_not'])}")
    best = results["max_rate_held_per_s"]
    if best:
        lines.append(
            f"  largest rate held: {best:g} calls/s x {results['hold_s']:g} s + {results['background_calls']} "
            f"background = {results['concurrency_at_max_rate']:g} concurrent calls (sipp saw up to "
            f"{results['sipp_concurrent_max_at_max_rate']} of its own at once); gateway A CPU "
            f"{results['gateway_a_cpu_pct_at_max_rate']} %"
        )
    else:
        lines.append(f"  no rate held ({results.get('stopped_because') or 'see the steps'})")
    if results.get("projected_calls_per_s_machine") is not None:
        lines.append(
            f"  CPU per {results['hold_s']:g} s call at A: setup {results['setup_cpu_ms_per_call']} ms + "
            f"{results['media_cpu_ms_per_call_s']} ms per call-second: one core of A holds "
            f"{results['projected_calls_per_s_per_core']} calls/s; this machine (A, B and sipp) about "
            f"{results['projected_calls_per_s_machine']} calls/s"
        )
    if results.get("confirm"):
        c = results["confirm"]
        lines.append(f"  confirmation, {c['rate_per_s']:g} calls/s for {c['step_s']:g} s: holds = {c['holds']}")
    snap = results["gateway_a_snapshot"]
    if snap.get("available"):
        lines.append(
            f"  gateway A's last {snap['sipp_calls_in_snapshot']} sipp calls: {snap['secure']} secure, "
            f"{snap['with_audio_from_sipp']} with sipp's audio in, {snap['with_audio_back_through_b']} with the echo "
            f"back through B, {snap['outside_frames_refused']} frames refused"
        )
    lines.append(
        f"  ({results['elapsed_s']:.0f} s; load average {results['load_average_1min_at_start']:.1f} at start, "
        f"{results['load_average_1min']:.1f} at end on {results['cpus']} CPUs shared by A, B, sipp and the phones; "
        f"{results['sipp_version']})"
    )
    return "\n".join(lines)
