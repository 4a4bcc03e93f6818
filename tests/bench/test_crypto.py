"""``voipgw bench crypto`` pieces on wire v3: the padded CBR stream has one frame length and a bounded overhead,
and the forged-frame measurement runs and reports its two keys (values are timings: only their presence and
sanity are checked, never a wall-clock bound)."""

from __future__ import annotations

from ratchet.params import SendParams
from ratchet.session import MediaConfig
from voipgw.bench import crypto


def test_a_padded_cbr_stream_has_one_frame_length_and_the_overhead_of_an_unpadded_call() -> None:
    config = MediaConfig(dh_interval_s=2.0)
    padded = crypto.average_overhead_padded(SendParams(), config, 10.0)
    assert padded["frame_lengths_padded_cbr"] == 1.0
    plain = crypto.average_overhead(SendParams(), config, 10.0)
    # Same bytes on the wire per frame: padding only replaces audio bytes given up to control data.
    assert 15.0 < padded["overhead_bytes_avg_padded_cbr"] < 15.0 + 60
    assert abs(padded["overhead_bytes_avg_padded_cbr"] - plain) < 0.5
    assert 0 < padded["audio_bytes_given_up_avg_padded_cbr"] < 5


def test_the_forged_frame_cost_is_reported() -> None:
    out = crypto.forged_cost(MediaConfig(), rounds=1, batch=50)
    assert set(out) == {"forged_frame_worst_us", "ratio_forged_worst_vs_genuine"}
    assert out["forged_frame_worst_us"] > 0 and out["ratio_forged_worst_vs_genuine"] > 0
