"""The softphone's call history in ``contacts.db`` (table ``call_history``, schema in ``migrations.py``): one row per
call with its time, direction, peer, outcome, security state, SAS and whether the peer was verified. Facts only;
bounded to the last ``MAX_ENTRIES`` calls. Never stores key material."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from voipgw.store.contacts import ContactStore, checked_aor

MAX_ENTRIES = 10_000
"""Older rows are deleted when a call is added beyond this (a few MB at most)."""
MAX_TEXT = 300
"""A reason is cut to this many characters (it may come from the peer)."""


class Direction(enum.StrEnum):
    INCOMING = "incoming"
    OUTGOING = "outgoing"


@dataclass(frozen=True, slots=True)
class CallEntry:
    at: float
    """When the call started (or was attempted), epoch seconds."""
    direction: Direction
    local_aor: str
    remote_aor: str
    state: str
    """How it ended: ``ended``, ``failed``, ``refused`` ... (``voipgw.call.CallState`` values)."""
    security: str
    """``secure, verified``, ``secure, unverified``, ``NOT SECURE``, ``refused`` ... (``voipgw.call.Security``)."""
    reason: str = ""
    sas: str | None = None
    sas_words: tuple[str, ...] = ()
    verified: bool = False
    duration_s: float = 0.0
    call_id: str = ""


_COLUMNS = (
    "at, direction, local_aor, remote_aor, state, security, reason, sas, sas_words, verified, duration_s, call_id"
)


def add_call(store: ContactStore, entry: CallEntry) -> None:
    """Append ``entry`` (one transaction) and drop the oldest rows beyond MAX_ENTRIES."""
    remote = checked_aor(entry.remote_aor) if "@" in entry.remote_aor else entry.remote_aor
    with store.transaction() as db:
        db.execute(
            f"INSERT INTO call_history ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.at, entry.direction.value, entry.local_aor, remote, entry.state, entry.security,
                entry.reason[:MAX_TEXT], entry.sas, " ".join(entry.sas_words) or None, int(entry.verified),
                entry.duration_s, entry.call_id[:200],
            ),
        )  # fmt: skip
        db.execute("DELETE FROM call_history WHERE id <= (SELECT max(id) FROM call_history) - ?", (MAX_ENTRIES,))


def recent_calls(store: ContactStore, limit: int = 20, peer: str | None = None) -> list[CallEntry]:
    """The last ``limit`` calls, newest first (only those with ``peer`` if given)."""
    query = f"SELECT {_COLUMNS} FROM call_history"
    params: tuple[object, ...] = ()
    if peer is not None:
        query += " WHERE remote_aor = ?"
        params = (checked_aor(peer),)
    with store.reading() as db:
        rows = db.execute(query + " ORDER BY at DESC, id DESC LIMIT ?", (*params, limit)).fetchall()
    return [_entry(r) for r in rows]


def _entry(r: tuple[object, ...]) -> CallEntry:
    return CallEntry(
        at=float(str(r[0])), direction=Direction(str(r[1])), local_aor=str(r[2]), remote_aor=str(r[3]),
        state=str(r[4]), security=str(r[5]), reason=str(r[6]), sas=None if r[7] is None else str(r[7]),
        sas_words=tuple(str(r[8]).split()) if r[8] else (), verified=bool(r[9]), duration_s=float(str(r[10])),
        call_id=str(r[11]),
    )  # fmt: skip
