"""The contact store under several processes: parallel writers lose no update, and writers killed with SIGKILL
in the middle of transactions leave an intact file holding every write they reported as committed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ratchet.identity import IdentityKey
from voipgw.store.contacts import ContactStore

REPO = Path(__file__).resolve().parents[2]

# A writer: in a loop, one transaction adds a contact (and a few history rows) and another counts a call on a
# shared contact; after each commit it prints a line, so the parent knows what was committed before the kill.
WRITER = r"""
import sys
from pathlib import Path
from ratchet.identity import IdentityKey
from voipgw.store.contacts import ContactStore

home, wid, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
shared = bytes.fromhex(sys.argv[4])
store = ContactStore(home)
key = IdentityKey.from_seed(bytes([int(wid)]) * 32).public.serialize()
for i in range(count):
    aor = f"w{wid}-{i}@example.org"
    with store.transaction() as db:
        db.execute(
            "INSERT INTO contacts (aor, identity_key, key_side, key_first_seen, first_seen, last_seen) "
            "VALUES (?, ?, ?, ?, ?, ?)", (aor, key, "0" * 30, i, i, i))
        for j in range(20):
            db.execute("INSERT INTO key_history (aor, identity_key, first_seen, last_seen, replaced_at, why) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (aor, key, j, j, j, "x" * 200))
    print(f"add {aor}", flush=True)  # one string: print writes its items one by one
    assert store.record_call("shared@example.org", shared, local_aor=None, local_key=None, now=float(i))
    print("call", flush=True)
print("done", flush=True)
"""


def _spawn(home: Path, wid: int, count: int, shared: bytes) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(home), str(wid), str(count), shared.hex()],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _prepare(home: Path) -> bytes:
    shared = IdentityKey.generate().public.serialize()
    with ContactStore(home) as store:
        store.add_first_contact("shared@example.org", shared, local_aor=None, now=0.0)
    return shared


@pytest.mark.integration  # starts processes
def test_parallel_writers_lose_nothing(tmp_path: Path) -> None:
    shared = _prepare(tmp_path)
    writers, count = 4, 40
    procs = [_spawn(tmp_path, w, count, shared) for w in range(1, writers + 1)]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert out.splitlines()[-1] == "done"
    with ContactStore(tmp_path) as store:
        assert store.integrity_check() == "ok"
        assert store.require("shared@example.org").call_count == writers * count  # no lost increment
        aors = {c.aor for c in store.contacts()}
        assert len(aors) == writers * count + 1
        assert all(len(store.history(f"w{w}-{count - 1}@example.org")) == 20 for w in range(1, writers + 1))


@pytest.mark.integration  # starts processes
@pytest.mark.faults
def test_sigkill_mid_transaction_keeps_every_committed_write(tmp_path: Path) -> None:
    shared = _prepare(tmp_path)
    rng = random.Random(4)
    committed: set[str] = set()
    calls_reported = 0
    kills = 0
    for round_no in range(12):
        procs = [_spawn(tmp_path, 10 + 2 * round_no + k, 10_000, shared) for k in range(2)]
        try:
            time.sleep(rng.uniform(0.25, 0.6))  # imports take ~0.2 s; then the writers are mid-loop
            for p in procs:
                os.kill(p.pid, signal.SIGKILL)
                kills += 1
            outputs = [p.communicate(timeout=30)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)
        for p, out in zip(procs, outputs, strict=True):
            assert p.returncode == -signal.SIGKILL
            # Only newline-terminated lines were reported: SIGKILL can cut the last write short ("add " alone).
            for line in out.split("\n")[:-1]:
                if line.startswith("add "):
                    committed.add(line.split()[1])
                elif line == "call":
                    calls_reported += 1
        with ContactStore(tmp_path) as store:  # every round reopens the file the killed writers left
            assert store.integrity_check() == "ok"
            stored = {c.aor for c in store.contacts()}
            assert committed <= stored, sorted(committed - stored)[:5]
            # each killed writer can have committed at most one write it did not get to report
            assert len(stored) - 1 - len(committed) <= kills
            calls = store.require("shared@example.org").call_count
            assert calls_reported <= calls <= calls_reported + kills
            assert all(len(store.history(aor)) == 20 for aor in stored - {"shared@example.org"})
    assert len(committed) > 50  # the writers really were writing when they were killed
