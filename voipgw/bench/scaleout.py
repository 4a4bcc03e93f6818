"""``voipgw bench scaleout``: capacity of 1 and of 2 gateway processes behind Kamailio's dispatcher, side by side,
with every process's CPU share.

Topology (that of tests/gateway/test_scaleout.py): the synthetic phones place pass-through calls alice -> gateway A
-> Kamailio (dispatcher, round robin) -> gateway B1..BN -> bob. The N processes are the callee side behind the PBX,
where a dispatcher sits in a deployment: they share one home (one identity for bob, one contact store), so the
caller sees one safety number whichever process answers. A is a single process shared by every call (it costs what
one B process costs at N = 1, and at N = 2 it carries twice what each B carries); Kamailio only relays SIP
(record-routed, so BYEs pass it too) and the media goes A <-> Bi directly.

Built on ``voipgw.bench.gateway`` (the same processes, synthetic phones, windows and late/lost accounting); this
module adds the PBX, the N processes and the per-process CPU. The Kamailio configuration is generated here rather
than taken from ``tests/testbed/kamailio.py``: ``voipgw`` must not import ``tests`` (it ships without them), and the
bench needs only the dispatcher route (no registrar, auth or rtpengine). Loopback only; every process it starts
(Kamailio, the gateways) is stopped by PID.

What two shared cores can show: the load generator, A, Kamailio and the N processes all run on the same two cores,
so a second process adds no core and the calls held cannot double. The honest figure is capacity per process-core:
the calls a B process carried divided by the share of a core it used (and packets per CPU-second), per process,
and the same from the slope of their CPU over the steps (each process also pays a cost that does not grow with
calls: its CPU share with no call up is reported too).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from voipgw.bench.call import process_cpu_s
from voipgw.bench.common import BenchError, BenchProcess, free_udp_port
from voipgw.bench.gateway import (
    LATE_SLACK_MS,
    MAX_LOSS_PCT,
    PROCESS_LOG_TAIL,
    PROCESS_STOP_S,
    QUICK_BUDGET_S,
    QUICK_STEPS,
    READY_TIMEOUT_S,
    GatewayBench,
    Step,
)
from voipgw.sip import SipStack

MODE = "passthrough"
PROCESS_COUNTS = (1, 2)
KAMAILIO_BINARY = "/usr/sbin/kamailio"
KAMAILIO_MODULE_DIRS = "/usr/lib/*/kamailio/modules"
KAMAILIO_SHM_MB = 64
KAMAILIO_PKG_MB = 8
KAMAILIO_CHILDREN = 2
"""UDP worker processes: the signalling rate of a ramp is a few calls a second."""
FR_TIMER_MS = 3000
"""How long the PBX waits for a provisional answer before it tries the next gateway of the set."""
PING_INTERVAL_S = 5
PROBE_TIMEOUT_S = 0.3
CHECK_TIMEOUT_S = 20.0
DS_ROUND_ROBIN = 4
STEPS = (25, 50, 75, 100, 150, 200, 250, 300, 400)
"""Finer than ``bench gateway``'s between 25 and 100: what a shared two-core machine holds lies there."""
IDLE_S = 3.0
QUICK_IDLE_S = 1.0
BUDGET_S = 150.0
"""Per N: a ramp stops at its first failing step, or when the next step would end past this (longer than
``bench gateway``'s 45 s, whose ramp is one of several figures: here each N must reach its failing step)."""

# INVITEs for the PBX's own domain go to dispatcher set 1, round robin; a process that answers 408/5xx or nothing
# within fr_timer is marked and the next one is tried (what a dispatcher is for, though no process fails here).
# Every destination is probed with OPTIONS (ds_probing_mode 1: see tests/testbed/kamailio.py for why not mode 0).
_KAMAILIO_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
children={children}
listen=udp:127.0.0.1:{port}
alias="127.0.0.1:{port}"
mpath="{mpath}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "dispatcher.so"
modparam("rr", "enable_full_lr", 1)
modparam("dispatcher", "list_file", "{list_file}")
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "ds_ping_interval", {ping_s})
modparam("dispatcher", "ds_probing_mode", 1)
modparam("tm", "fr_timer", {fr_timer_ms})

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) t_relay(); exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) t_relay(); exit; }}
    if (is_method("OPTIONS") && uri==myself) {{ sl_send_reply("200", "OK"); exit; }}
    t_check_trans();
    if (!is_method("INVITE") || uri!=myself) {{ sl_send_reply("403", "Not relaying"); exit; }}
    record_route();
    if (!ds_select_dst("1", "{algorithm}")) {{ sl_send_reply("503", "No Gateway"); exit; }}
    t_on_failure("DS_NEXT");
    if (!t_relay()) sl_reply_error();
}}

failure_route[DS_NEXT] {{
    if (t_is_canceled()) exit;
    if (t_check_status("408|5[0-9][0-9]") || t_branch_timeout()) {{
        ds_mark_dst("ip");
        if (ds_next_dst()) {{ t_on_failure("DS_NEXT"); t_relay(); }}
    }}
}}
"""


def kamailio_config(port: int, list_file: Path, mpath: str) -> str:
    return _KAMAILIO_CFG.format(
        children=KAMAILIO_CHILDREN,
        port=port,
        mpath=mpath,
        list_file=list_file,
        ping_s=PING_INTERVAL_S,
        fr_timer_ms=FR_TIMER_MS,
        algorithm=DS_ROUND_ROBIN,
    )


def _kamailio_modules() -> str:
    for path in sorted(glob.glob(KAMAILIO_MODULE_DIRS)):
        if os.path.exists(os.path.join(path, "dispatcher.so")):
            return path + "/"
    raise BenchError(f"no Kamailio dispatcher module under {KAMAILIO_MODULE_DIRS} (apt install kamailio)")


def sip_answers(port: int) -> bool:
    """True when something on 127.0.0.1:port answers an OPTIONS with a SIP status line."""
    tag = secrets.token_hex(4)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        me = sock.getsockname()[1]
        msg = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{tag}\r\n"
            f"From: <sip:bench@127.0.0.1>;tag={tag}\r\nTo: <sip:127.0.0.1:{port}>\r\nCall-ID: bench-{tag}\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        sock.settimeout(PROBE_TIMEOUT_S)
        try:
            sock.sendto(msg.encode(), ("127.0.0.1", port))
            return sock.recv(65535).startswith(b"SIP/2.0 ")
        except OSError:
            return False


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Kamailio's workers, timers and supervisor), from /proc."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                stat = fh.read()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found


def _cpu_s(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += process_cpu_s(pid)
    return total


class ScaleoutBench(GatewayBench):
    """``GatewayBench`` with the PBX and N callee-side processes; every window also samples every process's CPU."""

    def __init__(self, workdir: Path, quick: bool, log: Callable[[str], None], processes: int) -> None:
        super().__init__(workdir, quick, log)
        self.processes = processes
        self.pbx_port = free_udp_port()
        self.b_ports = [free_udp_port() for _ in range(processes)]
        self.farm: list[BenchProcess] = []
        self.pbx: BenchProcess | None = None
        self.pids: dict[str, list[int]] = {}
        self._samples: list[dict[str, float]] = []
        self.extras: dict[int, dict[str, Any]] = {}
        """Per step (by call count): the CPU shares and each B process's calls."""

    # --- processes ---------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> BenchProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return BenchProcess.spawn(
            name, argv, self.workdir / f"{name}.log", env, stop_timeout_s=PROCESS_STOP_S, tail_chars=PROCESS_LOG_TAIL
        )

    def _gateway(self, name: str, home: Path, port: int, *args: str) -> BenchProcess:
        argv = [sys.executable, "-m", "voipgw.cli.main", "--home", str(home), "gateway"]
        argv += ["--listen", f"127.0.0.1:{port}", "--speak-sas", "off", *args]
        proc = self._spawn(name, argv)
        try:
            proc.wait_for("gateway listening on", READY_TIMEOUT_S)
        except BaseException:  # not yet in self.farm or self.a: stop_processes would not know it
            proc.stop()
            raise
        return proc

    def _start_pbx(self) -> None:
        if not os.access(KAMAILIO_BINARY, os.X_OK):
            raise BenchError(f"{KAMAILIO_BINARY} not found (apt install kamailio)")
        run = self.workdir / "kamailio-run"
        run.mkdir(parents=True, exist_ok=True)
        ds_list = self.workdir / "dispatcher.list"
        ds_list.write_text("".join(f"1 sip:127.0.0.1:{p}\n" for p in self.b_ports))
        cfg = self.workdir / "kamailio.cfg"
        cfg.write_text(kamailio_config(self.pbx_port, ds_list, _kamailio_modules()))
        check = subprocess.run(
            [KAMAILIO_BINARY, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=CHECK_TIMEOUT_S
        )
        if check.returncode != 0:
            raise BenchError(f"kamailio rejected {cfg}:\n{check.stderr[-2000:]}")
        argv = [KAMAILIO_BINARY, "-f", str(cfg), "-DD", "-E", "-m", str(KAMAILIO_SHM_MB), "-M", str(KAMAILIO_PKG_MB)]
        argv += ["-Y", str(run), "-P", str(run / "kamailio.pid")]
        self.pbx = self._spawn("kamailio", argv)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not sip_answers(self.pbx_port):
            if self.pbx.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"kamailio did not start:\n{self.pbx.log_tail()}")
            time.sleep(0.05)

    def start_gateways(self) -> None:
        """B1..BN one after the other (the first creates the shared identity), then Kamailio, then A.

        The processes are up before Kamailio: its first OPTIONS probe would otherwise find a process still
        starting, mark it inactive, and send it nothing until the next probe (measured: a 21/4 split at 25 calls)."""
        shared_home = self.workdir / "b-home"
        bob = f"bob=sip:bob@127.0.0.1:{self.sip_port}"
        for i, port in enumerate(self.b_ports, start=1):
            self.farm.append(self._gateway(f"gateway-b{i}", shared_home, port, "--user", bob))
        self.b = self.farm[0]
        self._start_pbx()
        assert self.pbx is not None
        self.a = self._gateway(
            "gateway-a",
            self.workdir / "gateway-a-home",
            self.a_port,
            "--user",
            f"alice=sip:alice@127.0.0.1:{self.sip_port}",
            "--route",
            f"bob=sip:bob@127.0.0.1:{self.pbx_port}",
        )
        self.pids = {
            "gateway_a": [self.a.proc.pid],
            **{f"gateway_b{i}": [p.proc.pid] for i, p in enumerate(self.farm, start=1)},
            "kamailio": [self.pbx.proc.pid, *child_pids(self.pbx.proc.pid)],
            "load_generator": [os.getpid()],
        }

    def stop_processes(self) -> None:
        for p in (self.a, *self.farm, self.pbx):
            if p is not None:
                p.stop()

    # --- measurement -------------------------------------------------------------------------------------

    def _cpu(self) -> dict[str, float]:
        return {name: _cpu_s(pids) for name, pids in self.pids.items()}

    async def _window(self, n: int) -> Step:
        """The gateway bench's window, with every process's CPU sampled around it (shares of one core)."""
        t0, cpu0 = time.monotonic(), self._cpu()
        step = await super()._window(n)
        elapsed, cpu1 = time.monotonic() - t0, self._cpu()
        self._samples.append({name: (cpu1[name] - cpu0[name]) / elapsed for name in cpu0})
        return step

    def calls_per_process(self) -> list[int]:
        """Calls each B process rang bob with (the INVITE's source port is the process's SIP port)."""
        ports = [c.source_addr[1] for c in self.bob_calls]
        return [ports.count(p) for p in self.b_ports]

    async def _measured_step(self, n: int) -> tuple[Step, dict[str, Any]]:
        self._samples = []
        s = await super().step(n)
        shares = {name: statistics.fmean(w[name] for w in self._samples) for name in self._samples[0]}
        return s, {"cpu_share": shares, "calls_per_gateway_b": self.calls_per_process()}

    async def step(self, n: int) -> Step:
        """The gateway bench's step (grow, settle, median of the windows); a failing step is measured once more
        with the same calls up, and the better of the two kept (``remeasured`` says so): on two cores shared with
        other work, a few seconds of someone else's burst fail a step of this ramp as easily as the gateway does."""
        s, extra = await self._measured_step(n)
        if not s.ok and not self.quick:
            self.log(f"    N={self.processes} {n:>4} calls: {s.bad_pct:.2f}% late/lost, measuring the step again")
            again, extra_again = await self._measured_step(n)
            extra_again["remeasured"] = extra["remeasured"] = True
            if again.bad_pct < s.bad_pct:
                s, extra = again, extra_again
        self.extras[n] = extra
        self.log(
            f"    N={self.processes} {n:>4} calls: calls per B {extra['calls_per_gateway_b']}, CPU share "
            + ", ".join(f"{k} {100 * v:.0f}%" for k, v in extra["cpu_share"].items())
        )
        return s

    async def idle_shares(self, span_s: float) -> dict[str, float]:
        """Every process's CPU share with no call up (what one more process costs before it carries anything)."""
        t0, cpu0 = time.monotonic(), self._cpu()
        await asyncio.sleep(span_s)
        elapsed, cpu1 = time.monotonic() - t0, self._cpu()
        return {name: (cpu1[name] - cpu0[name]) / elapsed for name in cpu0}

    async def measure(self) -> dict[str, Any]:
        steps = QUICK_STEPS[MODE] if self.quick else STEPS
        budget = QUICK_BUDGET_S[MODE] if self.quick else BUDGET_S
        self.stack = SipStack("127.0.0.1", self.sip_port, asyncio.get_running_loop())
        await self.stack.start()
        self._bob_task = asyncio.get_running_loop().create_task(self._bob_loop())
        idle = await self.idle_shares(QUICK_IDLE_S if self.quick else IDLE_S)
        pbx_cpu0 = _cpu_s(self.pids["kamailio"])
        try:
            ramp = await self.ramp(MODE, steps, budget)
            pbx_cpu = _cpu_s(self.pids["kamailio"]) - pbx_cpu0  # every call's INVITE, ACK and BYE, and the probes
        finally:
            self._bob_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._bob_task
            await self.stack.stop()
        best: Step = ramp.pop("_best")
        ramp.pop("_ratio_step")
        out = summarize_processes(self.processes, ramp, best, self.extras)
        out["kamailio_processes"] = len(self.pids["kamailio"])
        out["cpu_share_idle"] = {k: round(v, 3) for k, v in idle.items()}
        out["cpu_share_idle_gateway_b"] = [round(idle[f"gateway_b{i}"], 3) for i in range(1, self.processes + 1)]
        calls = ramp["calls_total"]
        out["kamailio_cpu_ms_per_call"] = round(1e3 * pbx_cpu / calls, 2) if calls else None
        return out


# --- figures -----------------------------------------------------------------------------------------------


def _ratio(num: float, den: float) -> float | None:
    return round(num / den) if den > 0 else None


def summarize_processes(
    processes: int, ramp: dict[str, Any], best: Step, extras: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    """One N's figures at its best step (the most calls with < 1 % late or lost; the first step when none held).

    A B process's frames are its calls' share of all frames sent (every frame of a call passes exactly one B)."""
    for row in ramp["steps"]:
        extra = extras.get(row["calls"], {})
        row["remeasured"] = extra.get("remeasured", False)
        row["cpu_share"] = {k: round(v, 3) for k, v in extra.get("cpu_share", {}).items()}
        row["calls_per_gateway_b"] = extra.get("calls_per_gateway_b", [])
    extra = extras[best.calls]
    share: dict[str, float] = extra["cpu_share"]
    per_b: list[int] = extra["calls_per_gateway_b"]
    b_shares = [share[f"gateway_b{i}"] for i in range(1, processes + 1)]
    frames_per_s = best.sent / best.window_s
    farm_share = sum(b_shares)
    gateways_share = farm_share + share["gateway_a"]
    return {
        "processes": processes,
        **ramp,
        "held": best.ok,
        "at_calls": best.calls,
        "late_or_lost_pct": round(best.bad_pct, 3),
        "calls_per_gateway_b": per_b,
        "cpu_share": {k: round(v, 3) for k, v in share.items()},
        "cpu_share_gateway_b": [round(s, 3) for s in b_shares],
        "cpu_share_gateway_b_total": round(farm_share, 3),
        "cpu_share_gateway_a": round(share["gateway_a"], 3),
        "cpu_share_kamailio": round(share["kamailio"], 3),
        "cpu_share_load_generator": round(share["load_generator"], 3),
        "cpu_share_all": round(sum(share.values()), 3),
        "packets_per_cpu_s_gateway_b": [
            _ratio(frames_per_s * calls / best.calls, s) for calls, s in zip(per_b, b_shares, strict=True)
        ],
        "packets_per_cpu_s_gateway_b_total": _ratio(frames_per_s, farm_share),
        "packets_per_cpu_s_gateway_a": _ratio(frames_per_s, share["gateway_a"]),
        "calls_per_core_gateway_b": [_ratio(calls, s) for calls, s in zip(per_b, b_shares, strict=True)],
        "calls_per_core_gateway_b_total": _ratio(best.calls, farm_share),
        "calls_per_core_both_gateway_ends": _ratio(best.calls, gateways_share),
        "marginal_calls_per_core_gateway_b_total": marginal_calls_per_core(ramp["steps"], processes),
    }


def marginal_calls_per_core(steps: Sequence[dict[str, Any]], processes: int) -> int | None:
    """Calls per core of the B processes together from the slope of their CPU share between the first step and the
    most loaded one that delivered its frames (< 1 % lost; late frames cost their CPU too): the per-process cost
    that does not grow with calls (timers, the SIP thread, polling) is left out, which the figure at one step is not.
    None without two such steps or with a slope that is not positive (noise larger than the difference)."""
    names = [f"gateway_b{i}" for i in range(1, processes + 1)]
    delivered = [s for s in steps if s["frames_sent"] and 100.0 * s["frames_lost"] / s["frames_sent"] < MAX_LOSS_PCT]
    delivered = [s for s in delivered if all(name in s["cpu_share"] for name in names)]
    if len(delivered) < 2:
        return None
    first, last = delivered[0], delivered[-1]
    d_share = sum(last["cpu_share"][n] for n in names) - sum(first["cpu_share"][n] for n in names)
    d_calls = last["calls"] - first["calls"]
    return round(d_calls / d_share) if d_calls > 0 and d_share > 0 else None


def run(
    quick: bool = False,
    workdir: Path | None = None,
    log: Callable[[str], None] | None = None,
    process_counts: Sequence[int] = PROCESS_COUNTS,
) -> dict[str, Any]:
    """Ramp pass-through calls through N = 1, then N = 2 callee-side processes behind the dispatcher (a fresh
    Kamailio, A and farm for each N); return JSON-ready results (``SCALEOUT_ROWS`` in the CLI say what each means)."""
    import uvloop

    say = log or (lambda _m: None)
    tmp = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="voipgw-bench-scaleout-"))
    t0 = time.monotonic()
    load_start = os.getloadavg()[0]
    by_n: dict[str, Any] = {}
    try:
        for n in process_counts:
            sub = tmp / f"n{n}"
            sub.mkdir(parents=True, exist_ok=True)
            bench = ScaleoutBench(sub, quick, say, n)
            say(f"  N = {n} gateway process{'es' if n > 1 else ''} behind the dispatcher")
            try:
                bench.start_gateways()
                by_n[str(n)] = uvloop.run(bench.measure())
            finally:
                bench.stop_processes()
    finally:
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    first, last = by_n[str(process_counts[0])], by_n[str(process_counts[-1])]
    per_core_first, per_core_last = first["calls_per_core_gateway_b_total"], last["calls_per_core_gateway_b_total"]
    return {
        "quick": quick,
        "topology": "phones -> gateway A -> Kamailio dispatcher (round robin) -> gateways B1..BN -> phones",
        "mode": MODE,
        "late_slack_ms": LATE_SLACK_MS,
        "max_late_or_lost_pct": MAX_LOSS_PCT,
        "processes": by_n,
        "ratio_max_calls": round(last["max_calls"] / first["max_calls"], 2) if first["max_calls"] else None,
        "ratio_calls_per_core_gateway_b": (
            round(per_core_last / per_core_first, 2) if per_core_first and per_core_last else None
        ),
        "all_calls_carried_audio": all(r["all_calls_carried_audio"] for r in by_n.values()),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "load_average_1min_at_start": round(load_start, 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
