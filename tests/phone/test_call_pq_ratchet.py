"""The in-call post-quantum ratchet (PROTOCOL.md §B.12) between two real ``voipgw`` phones on loopback: a hybrid
call (its ~2.7 KB INVITE goes over SIP/TCP) completes ML-KEM epochs in both directions during the call, reports
them in both call summaries, loses no frame and keeps one frame length on the wire."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.phones import SPEECH, assert_secure_call, read_wire, start_caller, start_listener

pytestmark = pytest.mark.integration

CONFIG = 'suites = ["x25519", "x25519-mlkem768"]\ntransport = "tcp"\npq_interval_s = 2\n'


def test_a_hybrid_call_over_tcp_completes_pq_epochs_both_ways(tmp_path: Path) -> None:
    cfg = {}
    for name in ("alice", "bob"):
        cfg[name] = tmp_path / f"{name}.toml"
        cfg[name].write_text(f'aor = "{name}@127.0.0.1"\n' + CONFIG)
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), "--config", str(cfg["bob"]))
    alice = start_caller(
        tmp_path, "alice", f"sip:bob@127.0.0.1:{bob.sip_port};transport=tcp", "--play", str(SPEECH),
        "--duration", "14", "--config", str(cfg["alice"]),
    )  # fmt: skip
    try:
        assert alice.wait(60.0) == 0, alice.log()
        assert bob.wait(20.0) == 0, bob.log()
    finally:
        alice.stop()
        bob.stop()
    assert_secure_call(alice, bob)
    a, b = alice.summary(), bob.summary()
    assert a["suite"] == b["suite"] == "x25519-mlkem768"
    # each side's own epochs plus the peer's: at a 2 s interval and ~4 s per epoch, at least two each way
    assert a["pq_epochs"] >= 4 and b["pq_epochs"] >= 4, (a["pq_epochs"], b["pq_epochs"])
    assert a["frames_refused"] == b["frames_refused"] == 0, (a["refused_by_reason"], b["refused_by_reason"])
    assert "pq-epoch-stalled" not in a["degraded"]["seen"] and "pq-epoch-stalled" not in b["degraded"]["seen"]
    for tap in (alice.wire, bob.wire):  # every sealed frame one length, chunks and announcements included
        assert len({len(p) for p in read_wire(tap)}) == 1, tap.name
    for proc in (alice, bob):
        assert "post-quantum epochs completed during the call" in proc.log(), proc.name  # the printed summary
