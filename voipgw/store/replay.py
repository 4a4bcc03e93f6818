"""The answerer's offer replay cache, kept on disk so that a restart or a second process on the same home cannot
be fooled by an offer it (or its sibling) already answered (issue 15, "replays and lock-outs").

``ratchet.handshake.NonceCache`` is the sans-I/O rule: a nonce may be answered once while its offer is fresh; it
lives in memory and starts empty. ``PersistentNonceCache`` keeps that in-memory cache as the fast first check and
adds a SQLite table every process on the home shares (``<home>/replay.sqlite``, 0600, WAL). It also refuses, before
anything is recorded, offers dated more than ``MAX_FUTURE_S`` ahead: those are what let a flood of validly signed
offers lock honest callers out (an evicted entry raises the cache's floor to its timestamp, and a timestamp a
minute ahead kept every honest offer below it). Dated at most a few seconds ahead, a floor raised by eviction
never passes honest offers made a few seconds later; and the table is sized so that eviction needs more validly
signed offers per second than a process can verify (``MAX_ROWS``, docs/OPERATIONS.md).

A table the process cannot write (full disk, read-only home) costs the cross-process protection, never the call:
the in-memory check still holds within the process; the failure is logged (rate-limited) and counted.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

from ratchet.errors import FutureTimestamp, ReplayedNonce
from ratchet.handshake import NonceCache
from voipgw.logutil import RateLimitedLog

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log)

REPLAY_FILENAME = "replay.sqlite"
MAX_FUTURE_S = 5.0
"""How far ahead of our clock an offer may be dated. Host clocks under NTP agree to well within a second; the
handshake's ±max_skew window exists for the past side (the offer's transit, SIP retransmissions)."""
MAX_ROWS = 1_000_000
"""Rows kept at most: 8,300 offers a second for the 120 s an entry lives, far beyond what one process verifies
(about 1,000 signatures a second here). Past it the oldest rows go and their timestamps raise a floor, as the
in-memory cache does."""
PRUNE_EVERY = 256
"""Expired rows are deleted every this many inserts (one indexed range delete)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS offer_nonces (
    nonce BLOB PRIMARY KEY,
    expires REAL NOT NULL,
    ts_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS offer_nonces_expires ON offer_nonces (expires);
CREATE TABLE IF NOT EXISTS offer_floor (id INTEGER PRIMARY KEY CHECK (id = 1), ts_ms INTEGER NOT NULL);
"""


class PersistentNonceCache(NonceCache):
    """``NonceCache`` with a table shared by every process on the same home (see the module docstring)."""

    def __init__(self, path: Path, max_skew_s: float, max_rows: int = MAX_ROWS, prune_every: int = PRUNE_EVERY) -> None:
        super().__init__(max_skew_s=max_skew_s)
        self.path = path
        self._ttl_s = 2.0 * max_skew_s
        self._max_rows = max_rows
        self._prune_every = prune_every
        self._lock = threading.Lock()
        self._inserts = 0
        self.write_failures = 0
        """Offers checked in memory only because the table could not be written."""
        self._db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
            os.close(fd)
            db = sqlite3.connect(self.path, timeout=2.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            # A power cut may lose the last second of nonces: offers are fresh for max_skew only and the clock
            # moves on, so that window is small; FULL would put an fsync on every call's answer path.
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def check_and_add(self, nonce: bytes, timestamp_ms: int, now: float) -> None:
        ahead_s = timestamp_ms / 1000.0 - now
        if ahead_s > MAX_FUTURE_S:
            raise FutureTimestamp(f"offer dated {ahead_s:.1f} s ahead (at most {MAX_FUTURE_S:g} s here): not recorded")
        super().check_and_add(nonce, timestamp_ms, now)  # this process's own memory: the fast refusal
        with self._lock:
            try:
                self._record(bytes(nonce), timestamp_ms, now)
            except ReplayedNonce:
                raise
            except (sqlite3.Error, OSError) as exc:
                self.write_failures += 1
                _ratelog(
                    "replay-db", logging.ERROR,
                    "offer replay table %s unusable (%s): replays are caught within this process only", self.path, exc,
                )  # fmt: skip

    def _record(self, nonce: bytes, timestamp_ms: int, now: float) -> None:
        db = self._open()
        db.execute("BEGIN IMMEDIATE")
        try:
            floor = db.execute("SELECT ts_ms FROM offer_floor WHERE id = 1").fetchone()
            if floor is not None and timestamp_ms <= int(floor[0]):
                raise ReplayedNonce("offer older than the replay table's eviction floor")
            try:
                db.execute(
                    "INSERT INTO offer_nonces (nonce, expires, ts_ms) VALUES (?, ?, ?)",
                    (nonce, now + self._ttl_s, timestamp_ms),
                )
            except sqlite3.IntegrityError:
                raise ReplayedNonce("offer nonce seen before (by this or another process on this home)") from None
            self._inserts += 1
            if self._inserts % self._prune_every == 0:
                db.execute("DELETE FROM offer_nonces WHERE expires <= ?", (now,))
                self._evict(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _evict(self, db: sqlite3.Connection) -> None:
        (count,) = db.execute("SELECT count(*) FROM offer_nonces").fetchone()
        excess = int(count) - self._max_rows
        if excess <= 0:
            return
        rows = db.execute("SELECT nonce, ts_ms FROM offer_nonces ORDER BY expires LIMIT ?", (excess,)).fetchall()
        top = max(int(ts) for _, ts in rows)
        db.executemany("DELETE FROM offer_nonces WHERE nonce = ?", [(n,) for n, _ in rows])
        db.execute(
            "INSERT INTO offer_floor (id, ts_ms) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET ts_ms = max(ts_ms, ?)",
            (top, top),
        )
        _ratelog("replay-evict", logging.WARNING, "offer replay table full: %d oldest entries evicted", excess)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def replay_cache(home: Path | None, max_skew_s: float) -> NonceCache:
    """The replay cache of an identity living in ``home`` (None: in memory only, e.g. the warm-up)."""
    if home is None:
        return NonceCache(max_skew_s=max_skew_s)
    return PersistentNonceCache(home / REPLAY_FILENAME, max_skew_s)
