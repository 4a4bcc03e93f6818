"""The persistent offer replay cache (issue 15, "replays and lock-outs"): an offer answered once is refused after
a restart and by another process on the same home; offers dated too far ahead are refused and never recorded; a
flood of validly signed offers cannot lock honest callers out; an unusable table costs only the cross-process
check. Real signed offers (``ratchet.handshake``), a real SQLite file, a real second process."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ratchet import errors
from ratchet.handshake import NonceCache
from tests.support.handshake_fixtures import T0, answer, make_offerer
from voipgw.store.replay import MAX_FUTURE_S, REPLAY_FILENAME, PersistentNonceCache, replay_cache

SKEW = 60.0


def cache(home: Path, max_rows: int = 1000, prune_every: int = 256) -> PersistentNonceCache:
    return PersistentNonceCache(home / REPLAY_FILENAME, SKEW, max_rows=max_rows, prune_every=prune_every)


def test_an_answered_offer_is_refused_after_a_restart(tmp_path: Path) -> None:
    offer = make_offerer().offer_bytes
    first = cache(tmp_path)
    answer(offer, cache=first)
    first.close()
    again = cache(tmp_path)  # a new process on the same home: memory empty, the table remembers
    with pytest.raises(errors.ReplayedNonce, match="another process"):
        answer(offer, now=T0 + 30, cache=again)
    answer(offer, cache=NonceCache())  # the in-memory cache alone would have answered it: the replay this stops
    assert stat.S_IMODE(os.stat(tmp_path / REPLAY_FILENAME).st_mode) == 0o600


def test_an_offer_answered_by_another_process_on_the_home_is_refused(tmp_path: Path) -> None:
    offer = make_offerer().offer_bytes
    script = (
        "import sys; from pathlib import Path; from tests.support.handshake_fixtures import answer; "
        "from voipgw.store.replay import PersistentNonceCache; "
        "answer(bytes.fromhex(sys.argv[2]), cache=PersistentNonceCache(Path(sys.argv[1]), 60.0))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / REPLAY_FILENAME), offer.hex()],
        capture_output=True, text=True, timeout=60, check=False, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with pytest.raises(errors.ReplayedNonce):
        answer(offer, cache=cache(tmp_path))


def test_offers_dated_too_far_ahead_are_refused_and_not_recorded(tmp_path: Path) -> None:
    ahead = MAX_FUTURE_S + 5
    offer = make_offerer(now=T0 + ahead).offer_bytes
    c = cache(tmp_path)
    with pytest.raises(errors.FutureTimestamp, match="not recorded"):
        answer(offer, now=T0, cache=c)
    assert len(c) == 0
    answer(offer, now=T0 + ahead, cache=c)  # at its own time it is an ordinary fresh offer: answered


def test_a_flood_of_signed_offers_cannot_lock_honest_callers_out(tmp_path: Path) -> None:
    """The attacker fills the cache with validly signed offers dated as far ahead as accepted; eviction raises the
    floor to their timestamps. In memory with the old +60 s tolerance, an honest offer made 10 s later was below
    that floor (refused as a replay); here the floor can be at most MAX_FUTURE_S ahead."""
    c = cache(tmp_path, max_rows=8, prune_every=1)
    for i in range(40):  # what 40 validly signed offers dated as far ahead as accepted leave in the cache
        c.check_and_add(os.urandom(16), T0_MS + int((MAX_FUTURE_S - 0.1) * 1000) + i, T0)
    with sqlite3.connect(tmp_path / REPLAY_FILENAME) as db:
        rows = db.execute("SELECT count(*) FROM offer_nonces").fetchone()[0]
        floor = db.execute("SELECT ts_ms FROM offer_floor").fetchone()[0]
    assert rows == 8 and T0_MS < floor <= T0_MS + MAX_FUTURE_S * 1000 + 40, (rows, floor)  # the flood evicted
    honest = make_offerer(now=T0 + 10).offer_bytes
    answer(honest, now=T0 + 10, cache=c)

    old = NonceCache(max_skew_s=SKEW, max_entries=8)
    for i in range(40):
        old.check_and_add(bytes([i]) * 16, T0_MS + 59_000 + i, T0)  # +59 s: accepted by the ratchet alone
    with pytest.raises(errors.ReplayedNonce, match="floor"):
        old.check_and_add(b"honest-offer-abc", T0_MS + 10_000, T0 + 10)


def test_an_unusable_table_costs_only_the_cross_process_check(tmp_path: Path) -> None:
    c = replay_cache(tmp_path / "missing-dir", SKEW)
    assert isinstance(c, PersistentNonceCache)
    offer = make_offerer().offer_bytes
    answer(offer, cache=c)  # the call goes ahead
    assert c.write_failures == 1
    with pytest.raises(errors.ReplayedNonce):  # this process still remembers it
        answer(offer, now=T0 + 1, cache=c)


T0_MS = int(T0 * 1000)
