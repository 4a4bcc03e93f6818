"""Softphone basics (issue 15 item 12): ``voipgw history`` after real calls (local time, direction, peer, security,
SAS, verified), the log file in ``<home>``, ``--quiet``, and the default config file ``<home>/phone.toml``."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.phone_calls import wait_for_call
from tests.support.phones import SPEECH, start_caller, start_listener, voipgw_argv
from voipgw.store import history
from voipgw.store.contacts import ContactStore
from voipgw.store.history import CallEntry, Direction, add_call, recent_calls

CALL_TIMEOUT_S = 60.0
ZONE = "XYZ-3"  # a POSIX TZ: UTC+3, shown as XYZ (no tz database needed)


def _history(home: Path, *extra: str, tz: str = ZONE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        voipgw_argv(home, "history", *extra), capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL, env={**os.environ, "TZ": tz},
    )  # fmt: skip


def test_history_is_bounded_newest_first_and_filtered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "MAX_ENTRIES", 40)  # the real bound (10 000) takes 10 000 fsynced inserts
    with ContactStore(tmp_path) as store:
        for i in range(history.MAX_ENTRIES + 5):
            peer = "bob@example.org" if i % 2 else "carol@example.org"
            entry = CallEntry(float(i), Direction.OUTGOING, "a@example.org", peer, "ended", "secure, unverified")
            add_call(store, entry)
        n = history.MAX_ENTRIES
        calls = recent_calls(store, limit=n * 2)
        assert len(calls) == n and calls[0].at == n + 4 and calls[-1].at == 5
        bobs = recent_calls(store, limit=3, peer="sip:bob@example.org")
        assert [c.at for c in bobs] == [n + 3, n + 1, n - 1]


def test_the_default_config_file_in_home_is_read(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "phone.toml").write_text('[phone]\nlisten_prot = "udp"\n')
    out = subprocess.run(
        voipgw_argv(home, "listen", "--record", str(tmp_path / "r.wav")), capture_output=True, text=True,
        timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 2 and "unknown setting 'listen_prot'" in out.stderr, out.stderr


@pytest.mark.integration
def test_history_log_file_and_quiet_after_a_real_call(tmp_path: Path) -> None:
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), record=False, tap=False)
    alice = start_caller(tmp_path, "alice", f"sip:bob@127.0.0.1:{bob.sip_port}", "--play", str(SPEECH), "-q", tap=False)
    wait_for_call(alice, bob, CALL_TIMEOUT_S, CALL_TIMEOUT_S)
    summary = alice.summary()
    for home, direction, peer in (
        (tmp_path / "alice-home", "outgoing", "bob@127.0.0.1"),
        (tmp_path / "bob-home", "incoming", "alice@127.0.0.1"),
    ):
        out = _history(home, "--json")
        assert out.returncode == 0, out.stderr
        (call,) = json.loads(out.stdout)
        assert call["direction"] == direction and call["remote_aor"] == peer
        assert call["security"] == "secure, unverified" and call["verified"] is False
        assert call["sas"] == summary["sas"] and call["sas_words"] == summary["sas_words"]
        assert call["state"] == "ended" and call["duration_s"] > 1
        table = _history(home)
        os.environ["TZ"], saved = ZONE, os.environ.get("TZ")
        try:
            time.tzset()
            shown = time.strftime("%Y-%m-%d %H:%M:%S XYZ", time.localtime(call["at"]))
        finally:
            os.environ.pop("TZ") if saved is None else os.environ.update(TZ=saved)
            time.tzset()
        assert shown in table.stdout and peer in table.stdout and summary["sas"] in table.stdout, table.stdout
        logged = (home / "voipgw.log").read_text()
        assert f"call {call['call_id']} {direction}" in logged and "security secure, unverified" in logged
    assert "[00:0" not in alice.log() and "established |" not in alice.log()  # -q: no status line
    assert "call outgoing alice@127.0.0.1 -> bob@127.0.0.1: ended" in alice.log()  # the summary still is
    assert "established |" in bob.log()  # without -q the status line is there
