"""``voipgw bench call --json``: a tiny run (2 calls per mode, one short CPU call each) gives sane numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MODES = ("secure", "plain")
PER_MODE = (
    "setup_ms_median_{m}",
    "setup_ms_p90_{m}",
    "wire_invite_to_200_ms_median_{m}",
    "wire_invite_to_200_ms_p90_{m}",
    "invite_bytes_{m}",
    "ok_bytes_{m}",
    "cpu_call_s_{m}",
    "cpu_ms_per_call_s_caller_{m}",
    "cpu_ms_per_call_s_callee_{m}",
    "cpu_ms_per_call_s_{m}",
)


def test_bench_call_json_is_complete_and_sane(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "voipgw.cli.main", "bench", "call", "--json"]
    argv += ["--calls", "2", "--cpu-seconds", "1", "--cpu-rounds", "1", "--transport-rounds", "1"]
    argv += ["--workdir", str(tmp_path)]
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads(out.stdout)
    assert data["calls_per_mode"] == 2 and data["cpu_rounds"] == 1
    for key in PER_MODE:
        for m in MODES:
            value = data[key.format(m=m)]
            assert isinstance(value, int | float) and value > 0, (key, m, value)
    for m in MODES:
        assert data[f"setup_ms_p90_{m}"] >= data[f"setup_ms_median_{m}"]
        # INVITE, 200 OK and ACK at least; a provisional reply may come too
        assert all(n >= 3 for n in data[f"setup_messages_{m}"]), data[f"setup_messages_{m}"]
        assert data[f"setup_requests_{m}"] == [2]  # INVITE and ACK: no challenge, no retransmission
        assert 0.5 <= data[f"cpu_call_s_{m}"] < 5.0
    # the key exchange rides in the INVITE and the 200 OK: same messages, and visibly bigger ones
    assert data["setup_messages_secure"] == data["setup_messages_plain"]
    assert data["extra_round_trips"] == 0 and data["meets_round_trip_goal"] is True
    assert data["invite_bytes_secure"] > data["invite_bytes_plain"]
    assert data["ok_bytes_secure"] > data["ok_bytes_plain"]
    assert data["handshake_cpu_ms_median_secure"] > 0
    for key in ("setup_ms_added_median", "setup_ms_added_p90", "wire_ms_added_median", "cpu_ratio_secure_vs_plain"):
        assert isinstance(data[key], float), key
    assert data["goal_setup_ms_added"] == 3.0 and data["goal_extra_round_trips"] == 0
    # the in-band row: calls through a relay that strips a=voipgw are still secure, keyed in the media path
    assert data["inband_ms_median"] > 0 and data["inband_ms_p90"] >= data["inband_ms_median"]
    assert data["setup_ms_median_inband"] > 0 and isinstance(data["setup_ms_added_median_inband"], float)
    assert all(n >= 4 for n in data["setup_messages_inband"])  # INVITE, 183 (the media path first), 200, ACK
    for key in ("cached_known", "known_uncached", "first_contact"):
        assert data[f"trust_evaluate_us_{key}"] > 0, key
    # setup over each SIP transport: every offered combination measured, hybrid over UDP explained instead
    table = data["setup_by_transport"]
    offered = {"udp/x25519", "tcp/x25519", "tcp/x25519-mlkem768", "tls/x25519", "tls/x25519-mlkem768"}
    assert set(table) == offered | {"udp/x25519-mlkem768"}
    for combo in offered:
        assert table[combo]["setup_ms_median"] > 0 and table[combo]["ratio_vs_udp_x25519"] > 0, (combo, table[combo])
    assert table["udp/x25519"]["ratio_vs_udp_x25519"] == 1.0
    assert table["udp/x25519-mlkem768"]["setup_ms_median"] is None and "UDP" in table["udp/x25519-mlkem768"]["why"]
