"""The contact store's schema, as versioned migrations (``<home>/contacts.db``): migration ``i`` takes the schema
from version ``i`` to ``i + 1`` inside the opener's transaction (``ContactStore._migrate``). Only schema here: no
queries, no trust policy."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def _m1_initial(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE contacts (
            aor TEXT PRIMARY KEY NOT NULL,
            identity_key BLOB NOT NULL CHECK (length(identity_key) = 33),
            key_side TEXT NOT NULL,
            key_first_seen REAL NOT NULL,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            call_count INTEGER NOT NULL DEFAULT 0,
            verified INTEGER NOT NULL DEFAULT 0,
            verified_at REAL,
            verified_method TEXT,
            local_aor TEXT,
            changed_at REAL,
            pending_key BLOB CHECK (pending_key IS NULL OR length(pending_key) = 33),
            pending_first_seen REAL,
            pending_last_seen REAL
        ) WITHOUT ROWID"""
    )
    db.execute(
        """CREATE TABLE key_history (
            id INTEGER PRIMARY KEY,
            aor TEXT NOT NULL,
            identity_key BLOB NOT NULL,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            replaced_at REAL NOT NULL,
            why TEXT NOT NULL,
            was_verified INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute("CREATE INDEX key_history_aor ON key_history (aor, replaced_at)")
    db.execute(
        """CREATE TABLE local_aors (
            aor TEXT PRIMARY KEY NOT NULL,
            identity_key BLOB NOT NULL,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL
        ) WITHOUT ROWID"""
    )
    # Bumped by every change that affects a trust decision (not by call counters), so a process's cache
    # needs to drop entries only when this moves.
    db.execute("CREATE TABLE trust_generation (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL)")
    db.execute("INSERT INTO trust_generation (id, value) VALUES (1, 0)")


def _m2_events(db: sqlite3.Connection) -> None:
    # Things the user must see later that are not a key: a SAS that did not match in a call, for instance.
    db.execute(
        """CREATE TABLE contact_events (
            id INTEGER PRIMARY KEY,
            aor TEXT NOT NULL,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            identity_key BLOB,
            detail TEXT NOT NULL DEFAULT ''
        )"""
    )
    db.execute("CREATE INDEX contact_events_aor ON contact_events (aor, at)")


def _m3_names(db: sqlite3.Connection) -> None:
    # The local user's name for a contact (set by them only, never from a call): shown next to the labels.
    db.execute("ALTER TABLE contacts ADD COLUMN name TEXT")


def _m4_call_history(db: sqlite3.Connection) -> None:
    # The softphone's call history (``voipgw history``): one row per call that reached the CLI's summary.
    db.execute(
        """CREATE TABLE call_history (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            direction TEXT NOT NULL,
            local_aor TEXT NOT NULL,
            remote_aor TEXT NOT NULL,
            state TEXT NOT NULL,
            security TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            sas TEXT,
            sas_words TEXT,
            verified INTEGER NOT NULL DEFAULT 0,
            duration_s REAL NOT NULL DEFAULT 0,
            call_id TEXT NOT NULL DEFAULT ''
        )"""
    )
    db.execute("CREATE INDEX call_history_at ON call_history (at)")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_m1_initial, _m2_events, _m3_names, _m4_call_history)
"""Migration ``i`` takes the schema from version ``i`` to ``i + 1``; each runs inside the opener's transaction."""
SCHEMA_VERSION = len(MIGRATIONS)
