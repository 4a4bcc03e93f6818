"""``voipgw bench call``: call setup time, SIP messages per setup and CPU per call-second, secure against plain,
interleaved in one run over the same stack (the real ``voipgw call``/``listen`` processes on loopback).

Owns the processes it starts (stopped by PID) and a two-party SIP relay that timestamps and counts every message;
never leaves 127.0.0.1 and never reads key material.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voipgw.audio.sources import speech_sample
from voipgw.bench.common import BenchError, BenchProcess, free_udp_port
from voipgw.call import Security

MODES = ("secure", "plain")
INBAND = "inband"
"""A secure call through a relay that deletes ``a=voipgw`` (a B2BUA PBX): keyed in the media path (§C.6). Its
setup is measured beside the others; its CPU per call-second is the secure mode's once keyed."""
SETUP_MODES = (*MODES, INBAND)
SECURE = {Security.SECURE_UNVERIFIED.value, Security.SECURE_VERIFIED.value}
READY_TIMEOUT_S = 15.0
CALL_TIMEOUT_S = 30.0
SETUP_CALL_S = 0.2
"""How long each setup-time call stays up: only INVITE -> 200 OK -> ACK is measured."""
RELAY_POLL_S = 0.05
CLK_TCK = os.sysconf("SC_CLK_TCK")
GOAL_ADDED_MS = 3.0
GOAL_EXTRA_ROUND_TRIPS = 0

_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_CSEQ = re.compile(rb"^cseq[ \t]*:[ \t]*\d+[ \t]+(\w+)", re.IGNORECASE | re.MULTILINE)
_TO_TAG = re.compile(rb"^(?:to|t)[ \t]*:[^\r\n]*;[ \t]*tag=", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class SipMessage:
    """One datagram the relay forwarded."""

    t: float
    """time.monotonic() when the relay received it"""
    from_caller: bool
    first_line: str
    method: str
    """the CSeq method (INVITE for its responses too)"""
    size: int
    """bytes as the sender put them on the wire (before the relay's Record-Route)"""

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0 ")


class SipTap:
    """A two-party SIP relay: datagrams from the callee go to the last caller, everything else to the callee.

    It record-routes initial INVITEs through itself so ACK and BYE pass too, and keeps every message per Call-ID.
    ``on_mark(call_id, "ack" | "bye")`` runs in the relay thread as the caller's ACK or BYE arrives.
    """

    def __init__(self, callee: tuple[str, int], *, strip: bool = False) -> None:
        self.callee = callee
        self.strip = strip
        """Delete ``a=voipgw`` from every SDP it relays (what a B2BUA PBX does)."""
        self.caller: tuple[str, int] | None = None
        self.calls: dict[str, list[SipMessage]] = {}
        self.on_mark: Callable[[str, str], None] | None = None
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._route = f"<sip:127.0.0.1:{self.port};lr>".encode()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="sip-tap", daemon=True)

    def __enter__(self) -> SipTap:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def messages(self, call_id: str) -> list[SipMessage]:
        with self._lock:
            return list(self.calls.get(call_id, ()))

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], RELAY_POLL_S)
            if not ready:
                continue
            try:
                data, addr = self._sock.recvfrom(65535)
            except OSError:
                continue
            now = time.monotonic()
            from_caller = addr != self.callee
            msg = self._record(data, now, from_caller)
            if from_caller:
                self.caller = addr
                if msg is not None and msg.is_request:
                    data = self._route_requests_through_us(data, msg)
                target: tuple[str, int] | None = self.callee
            else:
                target = self.caller
            if self.strip:
                data = _strip_voipgw(data)
            if target is not None:
                with contextlib.suppress(OSError):
                    self._sock.sendto(data, target)

    def _record(self, data: bytes, now: float, from_caller: bool) -> SipMessage | None:
        call_id, cseq = _CALL_ID.search(data), _CSEQ.search(data)
        if call_id is None or cseq is None:
            return None  # keep-alives and garbage are forwarded but not counted
        first = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        msg = SipMessage(now, from_caller, first, cseq.group(1).decode().upper(), len(data))
        cid = call_id.group(1).decode("utf-8", "replace")
        with self._lock:
            self.calls.setdefault(cid, []).append(msg)
        if self.on_mark is not None and from_caller and msg.is_request and msg.method in ("ACK", "BYE"):
            self.on_mark(cid, msg.method.lower())
        return msg

    def _route_requests_through_us(self, data: bytes, msg: SipMessage) -> bytes:
        head, sep, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        # our own Route entry was for us; the callee must not see it
        lines = [ln for ln in lines if not (ln.lower().startswith((b"route:", b"route :")) and self._route in ln)]
        if msg.method == "INVITE" and _TO_TAG.search(head) is None:
            lines.insert(1, b"Record-Route: " + self._route)
        return b"\r\n".join(lines) + sep + body


_VOIPGW_LINE = re.compile(rb"a=voipgw:[^\r\n]*\r\n")


def _strip_voipgw(data: bytes) -> bytes:
    head, sep, body = data.partition(b"\r\n\r\n")
    new_body, n = _VOIPGW_LINE.subn(b"", body)
    if not n:
        return data
    head = re.sub(rb"(?im)^(content-length|l)[ \t]*:[ \t]*\d+", b"Content-Length: %d" % len(new_body), head)
    return head + sep + new_body


@dataclass
class CallSample:
    """What one benchmark call measured."""

    mode: str
    call_id: str
    setup_ms: float
    """the caller's own clock: building the INVITE (the offer's key generation included) until the 200 OK"""
    handshake_ms: float | None
    """the caller's CPU for the key exchange (offer + checking the answer)"""
    wire_ms: float
    """at the relay: the INVITE arriving until the callee's 200 OK arriving"""
    setup_messages: int
    """SIP datagrams from the INVITE up to and including the ACK of the 200 OK"""
    setup_requests: int
    invite_bytes: int
    ok_bytes: int
    inband_ms: float | None = None
    """the caller's key exchange in the media path, first offer burst to the verified answer (inband mode)"""


@dataclass
class CpuSample:
    mode: str
    call_s: float
    caller_cpu_s: float
    callee_cpu_s: float


def _mode_args(mode: str) -> list[str]:
    return ["--plain", "--policy", "opportunistic"] if mode == "plain" else []


def _want(mode: str) -> set[str]:
    return {Security.NOT_SECURE.value} if mode == "plain" else SECURE


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of every thread of ``pid`` so far (/proc, clock-tick resolution)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class _Bench:
    workdir: Path
    speech: Path
    env: dict[str, str] = field(default_factory=lambda: {**os.environ, "PYTHONUNBUFFERED": "1"})
    listeners: dict[tuple[str, str], BenchProcess] = field(default_factory=dict)
    taps: dict[tuple[str, str], SipTap] = field(default_factory=dict)
    seq: int = 0

    def spawn(self, name: str, home: str, *args: str) -> BenchProcess:
        argv = [sys.executable, "-m", "voipgw.cli.main", "--home", str(self.workdir / home), *args]
        return BenchProcess.spawn(name, argv, self.workdir / f"{name}.log", self.env)

    def start_listener(self, mode: str, purpose: str) -> None:
        """A long-lived callee for ``mode``. For setup timing it sends silence: the CLI loads and resamples a
        --play file per incoming call before answering (about 40 ms here), which would swamp the key exchange."""
        port = free_udp_port()
        name = f"bob-{mode}-{purpose}"
        audio = ["--play", str(self.speech)] if purpose == "cpu" else ["--record", str(self.workdir / f"{name}.wav")]
        p = self.spawn(
            name,
            f"{name}-home",
            "listen",
            "--listen",
            f"127.0.0.1:{port}",
            "--aor",
            "bob@127.0.0.1",
            "--auto-answer",
            *audio,
            *_mode_args(mode),
        )
        self.listeners[(mode, purpose)] = p
        p.wait_for("listening as", READY_TIMEOUT_S, f"the {mode} callee")
        tap = SipTap(("127.0.0.1", port), strip=mode == INBAND)
        tap.__enter__()
        self.taps[(mode, purpose)] = tap

    def stop(self) -> None:
        for tap in self.taps.values():
            tap.__exit__()
        for p in self.listeners.values():
            p.stop()

    def call(
        self, mode: str, purpose: str, duration_s: float, on_mark: Callable[[str, str, int], None] | None = None
    ) -> str:
        """Place one call to the (mode, purpose) callee through its relay; returns the caller's summary path."""
        self.seq += 1
        tap = self.taps[(mode, purpose)]
        summary = self.workdir / f"alice-{mode}-{self.seq}.json"
        caller_pid: list[int] = []
        if on_mark is not None:  # armed before the caller exists, so no ACK can slip past
            tap.on_mark = lambda cid, what: on_mark(cid, what, caller_pid[0]) if caller_pid else None
        p = self.spawn(
            f"alice-{mode}-{self.seq}",
            f"alice-{mode}-home",
            "call",
            f"sip:bob@127.0.0.1:{tap.port}",
            "--listen",
            f"127.0.0.1:{free_udp_port()}",
            "--aor",
            "alice@127.0.0.1",
            "--duration",
            str(duration_s),
            "--play",
            str(self.speech),
            "--summary-json",
            str(summary),
            *_mode_args(mode),
        )
        caller_pid.append(p.proc.pid)
        try:
            rc = p.proc.wait(CALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.stop()
            raise BenchError(f"{mode} call did not finish within {CALL_TIMEOUT_S} s:\n{p.log_tail()}") from None
        finally:
            tap.on_mark = None
        if rc != 0:
            raise BenchError(f"{mode} call failed (exit {rc}):\n{p.log_tail()}")
        with contextlib.suppress(OSError):
            p.log.unlink()
        return str(summary)

    def setup_sample(self, mode: str) -> CallSample:
        data = json.loads(Path(self.call(mode, "setup", SETUP_CALL_S)).read_text())
        if data["security"] not in _want(mode):
            raise BenchError(f"a {mode} call ended up {data['security']!r}")
        if (data.get("key_exchange") == "media") != (mode == INBAND):
            raise BenchError(f"a {mode} call was keyed in {data.get('key_exchange')!r}")
        msgs = self.taps[(mode, "setup")].messages(data["call_id"])
        return _setup_from_wire(mode, data, msgs)

    def cpu_sample(self, mode: str, call_s: float) -> CpuSample:
        marks: dict[str, tuple[float, float, float]] = {}
        callee_pid = self.listeners[(mode, "cpu")].proc.pid

        def mark(_cid: str, what: str, caller_pid: int) -> None:
            if what not in marks:
                with contextlib.suppress(OSError):
                    marks[what] = (time.monotonic(), process_cpu_s(caller_pid), process_cpu_s(callee_pid))

        self.call(mode, "cpu", call_s, mark)
        if "ack" not in marks or "bye" not in marks:
            raise BenchError(f"the {mode} CPU call was not seen from ACK to BYE ({sorted(marks)})")
        (t0, a0, b0), (t1, a1, b1) = marks["ack"], marks["bye"]
        return CpuSample(mode, t1 - t0, a1 - a0, b1 - b0)


def _setup_from_wire(mode: str, summary: dict[str, Any], msgs: list[SipMessage]) -> CallSample:
    invite = next((m for m in msgs if m.from_caller and m.first_line.startswith("INVITE ")), None)
    ok = next(
        (m for m in msgs if not m.from_caller and m.first_line.startswith("SIP/2.0 200") and m.method == "INVITE"),
        None,
    )
    if invite is None or ok is None:
        raise BenchError(f"the relay did not see the {mode} call's INVITE and 200 OK")
    ack = next((m for m in msgs if m.t >= ok.t and m.from_caller and m.first_line.startswith("ACK ")), None)
    if ack is None:
        raise BenchError(f"the relay did not see the {mode} call's ACK")
    setup = [m for m in msgs if m.t <= ack.t]
    return CallSample(
        mode=mode,
        call_id=summary["call_id"],
        setup_ms=float(summary["setup_ms"]),
        handshake_ms=summary.get("handshake_ms"),
        wire_ms=(ok.t - invite.t) * 1e3,
        setup_messages=len(setup),
        setup_requests=sum(1 for m in setup if m.is_request),
        invite_bytes=invite.size,
        ok_bytes=ok.size,
        inband_ms=summary.get("inband_ms"),
    )


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[max(0, -(-9 * len(ordered) // 10) - 1)]


def run(calls: int = 20, cpu_call_s: float = 5.0, cpu_rounds: int = 2, workdir: Path | None = None) -> dict[str, Any]:
    """Run the benchmark and return flat results (see ``ROWS`` in the CLI for what each key means)."""
    if calls < 1 or cpu_rounds < 1 or cpu_call_s <= 0:
        raise ValueError("calls and cpu_rounds must be >= 1 and cpu_call_s > 0")
    tmp = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="voipgw-bench-call-"))
    tmp.mkdir(parents=True, exist_ok=True)
    bench = _Bench(tmp, speech_sample())
    samples: dict[str, list[CallSample]] = {m: [] for m in SETUP_MODES}
    cpu: dict[str, list[CpuSample]] = {m: [] for m in MODES}
    try:
        for mode in SETUP_MODES:
            for purpose in ("setup", "cpu") if mode in MODES else ("setup",):
                bench.start_listener(mode, purpose)
        for mode in SETUP_MODES:  # warm-up: first-contact work, page cache, the callee's first call
            bench.setup_sample(mode)
        for i in range(calls):
            for mode in SETUP_MODES if i % 2 == 0 else SETUP_MODES[::-1]:
                samples[mode].append(bench.setup_sample(mode))
        for i in range(cpu_rounds):
            for mode in MODES if i % 2 == 0 else MODES[::-1]:
                cpu[mode].append(bench.cpu_sample(mode, cpu_call_s))
    finally:
        bench.stop()
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return summarize(samples, cpu)


def summarize(samples: dict[str, list[CallSample]], cpu: dict[str, list[CpuSample]]) -> dict[str, Any]:
    out: dict[str, Any] = {"calls_per_mode": len(samples["secure"]), "cpu_rounds": len(cpu["secure"])}
    for mode in MODES:
        s = samples[mode]
        setup = [c.setup_ms for c in s]
        wire = [c.wire_ms for c in s]
        out[f"setup_ms_median_{mode}"] = statistics.median(setup)
        out[f"setup_ms_p90_{mode}"] = p90(setup)
        out[f"wire_invite_to_200_ms_median_{mode}"] = statistics.median(wire)
        out[f"wire_invite_to_200_ms_p90_{mode}"] = p90(wire)
        out[f"setup_messages_{mode}"] = sorted({c.setup_messages for c in s})
        out[f"setup_requests_{mode}"] = sorted({c.setup_requests for c in s})
        out[f"invite_bytes_{mode}"] = statistics.median(c.invite_bytes for c in s)
        out[f"ok_bytes_{mode}"] = statistics.median(c.ok_bytes for c in s)
        c_s = cpu[mode]
        call_s = sum(c.call_s for c in c_s)
        out[f"cpu_call_s_{mode}"] = call_s / len(c_s)
        out[f"cpu_ms_per_call_s_caller_{mode}"] = 1e3 * sum(c.caller_cpu_s for c in c_s) / call_s
        out[f"cpu_ms_per_call_s_callee_{mode}"] = 1e3 * sum(c.callee_cpu_s for c in c_s) / call_s
        out[f"cpu_ms_per_call_s_{mode}"] = (
            out[f"cpu_ms_per_call_s_caller_{mode}"] + out[f"cpu_ms_per_call_s_callee_{mode}"]
        )
    inb = samples.get(INBAND, [])
    if inb:
        setup = [c.setup_ms for c in inb]
        out["setup_ms_median_inband"] = statistics.median(setup)
        out["setup_ms_p90_inband"] = p90(setup)
        out["setup_messages_inband"] = sorted({c.setup_messages for c in inb})
        keyed = [c.inband_ms for c in inb if c.inband_ms is not None]
        out["inband_ms_median"] = statistics.median(keyed) if keyed else None
        out["inband_ms_p90"] = p90(keyed) if keyed else None
        out["setup_ms_added_median_inband"] = out["setup_ms_median_inband"] - out["setup_ms_median_plain"]
    hs = [c.handshake_ms for c in samples["secure"] if c.handshake_ms is not None]
    out["handshake_cpu_ms_median_secure"] = statistics.median(hs) if hs else None
    out["setup_ms_added_median"] = out["setup_ms_median_secure"] - out["setup_ms_median_plain"]
    out["setup_ms_added_p90"] = out["setup_ms_p90_secure"] - out["setup_ms_p90_plain"]
    out["wire_ms_added_median"] = out["wire_invite_to_200_ms_median_secure"] - out["wire_invite_to_200_ms_median_plain"]
    most = {m: max(out[f"setup_messages_{m}"]) for m in MODES}
    out["extra_round_trips"] = (most["secure"] - most["plain"]) / 2
    out["cpu_ratio_secure_vs_plain"] = out["cpu_ms_per_call_s_secure"] / out["cpu_ms_per_call_s_plain"]
    out["cpu_tick_s"] = 1 / CLK_TCK
    out["goal_setup_ms_added"] = GOAL_ADDED_MS
    out["goal_extra_round_trips"] = GOAL_EXTRA_ROUND_TRIPS
    out["meets_setup_goal"] = out["setup_ms_added_median"] <= GOAL_ADDED_MS
    out["meets_round_trip_goal"] = out["setup_messages_secure"] == out["setup_messages_plain"]
    # Key continuity on the setup path: what the contact store adds for a cached, a known and a first contact.
    from voipgw.trust import bench_evaluate

    out.update(bench_evaluate(rounds=200))
    return out
