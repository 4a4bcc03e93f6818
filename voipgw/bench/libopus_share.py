"""How much of a transcoded call's CPU is libopus itself, measured by ``voipgw bench gateway`` in every run.

Gateway A, per transcoded call-second, encodes 50 frames (the inside phone's, to the sealed Opus leg) and decodes 50
(the other gateway's, to the inside phone), at the bridge's rate (``voipgw.gateway.pipes.bridge_rate``: 8 kHz for a
G.711 phone). The bench does the same number of encodes and decodes in its own process, on the same audio its load
generator sends (a tone burst, then silence) and with the settings a sealed leg uses (CBR, 60-byte packets), right
after the transcoding ramp; that CPU time divided by what one call adds to gateway A's CPU (the slope between the
ramp's first and last steps; with one step, its CPU per call less the idle cost measured before the first call)
is the libopus share. An in-process timing rather
than ``perf``: it needs no privileges and runs every time; a ``perf record`` of gateway A (``perf report --sort
dso``) is the cross-check (issue 17's closing note). Never opens a socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voipgw.audio.codecs import PCMU, ResamplingDecoder
from voipgw.audio.opus import DEFAULT_BITRATE as OPUS_BITRATE
from voipgw.audio.opus import OpusDecoder, OpusEncoder, cbr_packet_bytes
from voipgw.bench.call import process_cpu_s

FRAMES_PER_S = 50
BRIDGE_RATE = 8000
"""The rate gateway A's transcoding bridge runs at (a PCMU phone inside: voipgw.gateway.pipes.bridge_rate)."""
REPEATS = 5
"""Seconds of audio timed; the fastest counts (another process taking the core only ever adds time)."""


@dataclass(frozen=True)
class TranscodeCost:
    """One transcoded call-second's CPU at gateway A, split into the process's idle cost, libopus and the rest."""

    cpu_ms_per_call_s: float
    """Gateway A's whole process (both legs, its SIP thread) at the step measured, divided by its calls."""
    passthrough_cpu_ms_per_call_s: float | None
    """The same for pass-through calls in the same run (the same packets, no codec work)."""
    libopus_ms_per_call_s: float
    idle_ms_per_s: float = 0.0
    """Gateway A's CPU with no call up (its SIP reactor thread): a process's cost, not a call's."""
    calls: int = 1
    """Transcoded calls at the step measured."""
    passthrough_calls: int = 1
    added_call_ms_per_s: float | None = None
    """The slope between the ramp's first and last steps: what one more call costs once a few are up (the
    per-wake-up costs of the first calls are then shared by more packets). None with a single step."""

    @property
    def call_ms_per_s(self) -> float:
        """What one transcoded call adds: the process's CPU beyond its idle cost, per call."""
        return self.cpu_ms_per_call_s - self.idle_ms_per_s / self.calls

    @property
    def per_call_ms_per_s(self) -> float:
        """One transcoded call's cost for projections: the slope between steps when there is one (the pass-through
        figure it is compared with is taken at many calls, where per-wake-up costs are shared too), else the cost
        beyond the idle process at the step measured."""
        return self.added_call_ms_per_s if self.added_call_ms_per_s else self.call_ms_per_s

    @property
    def calls_per_core(self) -> float:
        """Calls a core carried at the step measured (the idle cost shared among them)."""
        return 1000.0 / self.cpu_ms_per_call_s

    @property
    def calls_per_core_projected(self) -> float:
        """Calls one core would carry: what is left of it beyond the idle cost, divided by one more call's cost
        (the slope between steps, as memory per call is a slope; else one call's cost beyond the idle process)."""
        return (1000.0 - self.idle_ms_per_s) / self.per_call_ms_per_s

    @property
    def libopus_share(self) -> float:
        """Of what one transcoded call adds to gateway A's CPU, the part libopus itself takes."""
        return self.libopus_ms_per_call_s / self.per_call_ms_per_s

    @property
    def overhead_beyond_libopus_pct(self) -> float | None:
        """What transcoding adds to a call beyond a pass-through call's cost and beyond libopus, relative to libopus
        (the issue's goal is <= 30 %): G.711, the bridge's per-frame Python, the pacing ticks, the heavier SIP."""
        if self.passthrough_cpu_ms_per_call_s is None:
            return None
        passthrough = self.passthrough_cpu_ms_per_call_s - self.idle_ms_per_s / self.passthrough_calls
        added = self.per_call_ms_per_s - passthrough
        return 100.0 * (added - self.libopus_ms_per_call_s) / self.libopus_ms_per_call_s

    def as_dict(self) -> dict[str, float | None]:
        overhead = self.overhead_beyond_libopus_pct
        return {
            "gateway_a_idle_cpu_ms_per_s": round(self.idle_ms_per_s, 2),
            "gateway_a_cpu_ms_per_call_s_beyond_idle": round(self.call_ms_per_s, 3),
            "gateway_a_cpu_ms_per_added_call_s": (
                round(self.added_call_ms_per_s, 3) if self.added_call_ms_per_s is not None else None
            ),
            "calls_per_core": round(self.calls_per_core, 1),
            "calls_per_core_projected": round(self.calls_per_core_projected, 1),
            "libopus_ms_per_call_s": round(self.libopus_ms_per_call_s, 3),
            "libopus_share": round(self.libopus_share, 3),
            "overhead_beyond_libopus_pct": round(overhead, 1) if overhead is not None else None,
        }


def slope_ms_per_call_s(steps: Sequence[dict[str, float]]) -> float | None:
    """CPU milliseconds per second that one more call adds, between the first and the last of the ramp's steps
    (``calls``, ``gateway_a_cpu_s`` over ``window_s`` each); None with fewer than two steps."""
    if len(steps) < 2 or steps[-1]["calls"] <= steps[0]["calls"]:
        return None
    first, last = steps[0], steps[-1]
    rise = last["gateway_a_cpu_s"] / last["window_s"] - first["gateway_a_cpu_s"] / first["window_s"]
    return 1e3 * rise / (last["calls"] - first["calls"])


def libopus_ms_per_call_s(second: Sequence[bytes], rate: int) -> float:
    """CPU milliseconds of one call-second's libopus work at gateway A: ``second`` is one second of the inside
    phone's G.711 frames (50); the far gateway's packets are that audio encoded the same way."""
    if len(second) != FRAMES_PER_S:
        raise ValueError(f"one second is {FRAMES_PER_S} frames, not {len(second)}")
    phone = PCMU.new_decoder()
    if isinstance(phone, ResamplingDecoder):
        phone.use_rate(rate)  # frames at the bridge's rate, as gateway A's inside leg decodes them
    pcm = [phone.decode(frame) for frame in second]
    size = cbr_packet_bytes(OPUS_BITRATE)
    far = OpusEncoder(cbr=True, rate=rate)
    packets = [far.encode(frame, size) for frame in pcm]
    encoder, decoder = OpusEncoder(cbr=True, rate=rate), OpusDecoder(rate)
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.thread_time()  # this thread only: the bench's SIP stack has its own
        for frame in pcm:
            encoder.encode(frame, size)
        for packet in packets:
            decoder.decode(packet)
        best = min(best, time.thread_time() - t0)
    return 1e3 * best


async def idle_cpu_ms_per_s(pid: int, window_s: float) -> float:
    """The CPU of process ``pid`` (gateway A with no call up: its SIP reactor thread mostly), in ms per second:
    paid once per process, not per call."""
    cpu0, t0 = process_cpu_s(pid), time.monotonic()
    await asyncio.sleep(window_s)
    return 1e3 * (process_cpu_s(pid) - cpu0) / (time.monotonic() - t0)


def transcode_cost(modes: dict[str, Any], idle_ms_per_s: float, second: Sequence[bytes]) -> dict[str, Any]:
    """``bench gateway``'s transcoding figures from its two ramps (``modes``), gateway A's idle CPU and one
    second of what a phone sends (``second``): calls per core, the libopus share, the overhead beyond it."""
    transcode, passthrough = modes["transcode"], modes["passthrough"]
    cost = TranscodeCost(
        transcode["gateway_a_cpu_ms_per_call_s"],
        passthrough["gateway_a_cpu_ms_per_call_s"],
        libopus_ms_per_call_s(second, BRIDGE_RATE),
        idle_ms_per_s,
        transcode["max_calls"] or transcode["calls_total"],
        passthrough["max_calls"] or passthrough["calls_total"],
        slope_ms_per_call_s(transcode["steps"]),
    )
    return {"bridge_rate_hz": BRIDGE_RATE, **cost.as_dict()}
