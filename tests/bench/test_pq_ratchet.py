"""``voipgw bench pq-ratchet``: its measurement runs two real sessions to completed PQ epochs under each loss rate
and reports every key; epoch durations are on the simulated clock (deterministic), CPU only for presence."""

from __future__ import annotations

import argparse
import json

import pytest

from ratchet.session import MediaConfig
from voipgw.bench import pq_ratchet
from voipgw.cli.cmd_bench import run_pq_ratchet


def test_epochs_complete_within_the_goal_under_30_percent_bursty_loss_with_no_frame_lost() -> None:
    out = pq_ratchet.measure(0.3, calls=1, seconds=90.0, config=MediaConfig(pq_interval_s=10.0))
    assert out["pq_epochs"] is not None and int(out["pq_epochs"]) >= 6
    assert out["pq_epoch_s_p99"] is not None and float(out["pq_epoch_s_p99"]) <= pq_ratchet.GOAL_EPOCH_S
    assert 0 < float(out["extra_bytes_per_frame"] or 0) <= pq_ratchet.GOAL_EXTRA_BYTES
    assert out["frames_lost_at_switch"] == 0 and out["frames_refused_total"] == 0
    assert out["cpu_us_per_epoch"] is not None


def test_the_cli_prints_every_key_for_each_loss_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_pq_ratchet(argparse.Namespace(json=True, calls=1, seconds=60.0)) == 0
    results = json.loads(capsys.readouterr().out)
    for loss in ("loss_0", "loss_10", "loss_30"):
        assert {
            "pq_epoch_s_p50",
            "pq_epoch_s_p99",
            "extra_bytes_per_frame",
            "cpu_us_per_epoch",
            "frames_lost_at_switch",
        } <= set(results[loss])
    assert results["loss_0"]["pq_epochs"] >= 1
