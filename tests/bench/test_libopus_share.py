"""The libopus share of a transcoded call: the arithmetic of the figures, and a timing that is real libopus work
at either rate. No timing thresholds."""

from __future__ import annotations

import pytest

from voipgw.bench.gateway import BURST_FRAMES, SILENCE, TONE
from voipgw.bench.libopus_share import FRAMES_PER_S, TranscodeCost, libopus_ms_per_call_s, slope_ms_per_call_s


def test_figures_from_cpu_per_call_second() -> None:
    cost = TranscodeCost(
        cpu_ms_per_call_s=24.0,
        passthrough_cpu_ms_per_call_s=5.0,
        libopus_ms_per_call_s=8.0,
        idle_ms_per_s=40.0,
        calls=10,
        passthrough_calls=40,
    )
    assert cost.call_ms_per_s == 20.0  # 4 of the 24 ms were the idle process's, shared by 10 calls
    assert cost.calls_per_core == pytest.approx(41.667, abs=0.001)
    assert cost.calls_per_core_projected == 48.0  # (1000 - 40) / 20
    assert cost.libopus_share == 0.4
    assert cost.overhead_beyond_libopus_pct == 100.0  # 20 - (5 - 1) = 16 ms added by transcoding, 8 libopus
    assert cost.as_dict() == {
        "gateway_a_idle_cpu_ms_per_s": 40.0,
        "gateway_a_cpu_ms_per_call_s_beyond_idle": 20.0,
        "gateway_a_cpu_ms_per_added_call_s": None,
        "calls_per_core": 41.7,
        "calls_per_core_projected": 48.0,
        "libopus_ms_per_call_s": 8.0,
        "libopus_share": 0.4,
        "overhead_beyond_libopus_pct": 100.0,
    }
    assert TranscodeCost(20.0, None, 8.0).as_dict()["overhead_beyond_libopus_pct"] is None
    sloped = TranscodeCost(24.0, 5.0, 8.0, idle_ms_per_s=40.0, calls=10, passthrough_calls=40, added_call_ms_per_s=16.0)
    assert sloped.calls_per_core_projected == 60.0  # (1000 - 40) / 16: one more call's cost, not the first's
    assert sloped.libopus_share == 0.5
    assert sloped.overhead_beyond_libopus_pct == 50.0  # 16 - 4 = 12 ms more than a pass-through call, 8 libopus


def test_slope_between_the_first_and_the_last_step() -> None:
    steps = [
        {"calls": 5, "gateway_a_cpu_s": 0.35, "window_s": 2.0},
        {"calls": 10, "gateway_a_cpu_s": 0.5, "window_s": 2.0},
        {"calls": 15, "gateway_a_cpu_s": 0.65, "window_s": 2.0},
    ]
    assert slope_ms_per_call_s(steps) == pytest.approx(15.0)  # 325 - 175 ms/s over 10 more calls
    assert slope_ms_per_call_s(steps[:1]) is None
    assert slope_ms_per_call_s([steps[0], steps[0]]) is None


def test_one_call_second_of_libopus_work_is_timed_at_the_bridge_rate() -> None:
    second = [TONE] * BURST_FRAMES + [SILENCE] * (FRAMES_PER_S - BURST_FRAMES)
    narrow = libopus_ms_per_call_s(second, 8000)
    assert narrow > 0
    assert libopus_ms_per_call_s([TONE] * FRAMES_PER_S, 48000) > 0  # a 48 kHz bridge (G.711 is upsampled first)
    with pytest.raises(ValueError, match="50 frames"):
        libopus_ms_per_call_s(second[:10], 8000)
