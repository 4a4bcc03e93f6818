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


def test_the_two_way_loop_lets_acks_cross_every_frame() -> None:
    """The default figure's loop: an announced key is acked within a few frames, so it is repeated far less than in
    the one-way loop (where the peer's frames, and its acks, come back only after each batch)."""
    config = MediaConfig(dh_interval_s=2.0)
    two, one = crypto._RatchetLoop(SendParams(), config), crypto._RatchetLoop(SendParams(), config)
    for _ in range(5):
        assert two.run_two_way(300) > 0
        assert one.run(300) > 0
    # 30 s of frames, a DH step due every 2 s: two-way, each is acked within a few frames (3 announcements a step,
    # 14 steps measured); one way, a step waits a batch for its ack (2 steps, 331 announcements measured).
    assert two.tx.stats.local_steps >= 10 > 4 >= one.tx.stats.local_steps
    assert two.tx.stats.announcements_sent / two.tx.stats.local_steps < 8
    assert one.tx.stats.announcements_sent > 100
