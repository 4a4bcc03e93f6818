"""The contact store: ``<home>/contacts.db`` (SQLite, WAL, mode 0600) with each contact's identity key,
verification state and key history (the schema and its migrations: ``migrations.py``). Safe for several processes
at once.

It stores facts and applies no trust policy (that is ``voipgw.trust``); it never deletes or repairs a corrupt file
on its own, and never logs key bytes.
"""

from __future__ import annotations

import contextlib
import enum
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ratchet.aor import normalize_aor
from ratchet.fingerprint import side_fingerprint
from ratchet.identity import IdentityPublicKey
from voipgw.names import local_name
from voipgw.store.errors import (
    ContactStoreError,
    CorruptStore,
    ImportConflict,
    InsecureStore,
    KeyMismatch,
    StoreTooNew,
    StoreUnwritable,
    UnknownContact,
)
from voipgw.store.migrations import MIGRATIONS, SCHEMA_VERSION

CONTACTS_FILENAME = "contacts.db"
FILE_MODE = 0o600
DIR_MODE = 0o700
EVENT_SAS_MISMATCH = "sas-mismatch"
BUSY_TIMEOUT_MS = 10_000
"""How long a writer waits for another process's transaction (a CLI command next to a busy phone)."""


class VerifyMethod(enum.StrEnum):
    """How a contact's key was verified."""

    SAFETY_NUMBER = "safety-number"
    SAS = "sas"
    QR = "qr"


@dataclass(frozen=True, slots=True)
class KeyHistoryEntry:
    """A key this contact used before (or a blocked key that was superseded)."""

    identity_key: bytes
    first_seen: float
    last_seen: float
    replaced_at: float
    why: str
    was_verified: bool

    def __repr__(self) -> str:
        key = IdentityPublicKey.from_bytes(self.identity_key).fingerprint_hex()
        return f"KeyHistoryEntry(key={key}, why={self.why!r})"


@dataclass(frozen=True, slots=True)
class Contact:
    """One row of the store. Keys are the 33-byte serialized identity public keys (public, but never logged)."""

    aor: str
    identity_key: bytes
    key_side: str
    """The remote side's 30 safety-number digits for (identity_key, aor); stored so a lookup needs no hashing."""
    key_first_seen: float
    first_seen: float
    last_seen: float
    call_count: int
    verified: bool
    verified_at: float | None
    verified_method: VerifyMethod | None
    local_aor: str | None
    """Our AOR in the last call with this contact (the safety number depends on it)."""
    changed_at: float | None
    """Set when the current key replaced an earlier one and the user has not verified or accepted it yet."""
    pending_key: bytes | None
    """A changed key that the policy blocked; ``accept_pending`` makes it current."""
    pending_first_seen: float | None
    pending_last_seen: float | None
    name: str | None = None
    """The local user's own name for this contact (``set_name``), never learned from the network; cleaned."""

    @property
    def state(self) -> str:
        """``key-changed`` while a change is unacknowledged (blocked or warned), else ``known``."""
        return "key-changed" if self.pending_key is not None or self.changed_at is not None else "known"

    def __repr__(self) -> str:
        key = IdentityPublicKey.from_bytes(self.identity_key).fingerprint_hex()
        return f"Contact({self.aor!r}, key={key}, verified={self.verified}, state={self.state})"


# --- schema ---------------------------------------------------------------------------------------------------


_COLUMNS = (
    "aor, identity_key, key_side, key_first_seen, first_seen, last_seen, call_count, verified, verified_at, "
    "verified_method, local_aor, changed_at, pending_key, pending_first_seen, pending_last_seen, name"
)


def _contact(row: tuple[Any, ...]) -> Contact:
    method = row[9]
    return Contact(
        aor=str(row[0]),
        identity_key=bytes(row[1]),
        key_side=str(row[2]),
        key_first_seen=float(row[3]),
        first_seen=float(row[4]),
        last_seen=float(row[5]),
        call_count=int(row[6]),
        verified=bool(row[7]),
        verified_at=None if row[8] is None else float(row[8]),
        verified_method=None if method is None else VerifyMethod(str(method)),
        local_aor=None if row[10] is None else str(row[10]),
        changed_at=None if row[11] is None else float(row[11]),
        pending_key=None if row[12] is None else bytes(row[12]),
        pending_first_seen=None if row[13] is None else float(row[13]),
        pending_last_seen=None if row[14] is None else float(row[14]),
        name=None if row[15] is None else str(row[15]),
    )


def checked_key(data: bytes) -> bytes:
    """Return ``data`` if it is a valid serialized identity key; MalformedIdentityKey otherwise."""
    return IdentityPublicKey.from_bytes(bytes(data)).serialize()


def checked_aor(aor: str) -> str:
    """The normal form of ``aor``; MalformedAor for anything that is not a SIP AOR."""
    return normalize_aor(aor)


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    # "database is locked"/"busy" and friends are OperationalErrors that mean "try later", not a bad file.
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "malformed" in text or "not a database" in text or "disk image" in text
    return not isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError)


_UNWRITABLE_CODES = frozenset({8, 10, 13, 14})
"""SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN: the file system, not the file, is the problem."""


def _is_unwritable(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _UNWRITABLE_CODES
    text = str(exc).lower()
    return "disk is full" in text or "readonly" in text or "disk i/o" in text


class ContactStore:
    """A connection to ``<home>/contacts.db``. Thread-safe (one lock); one transaction per public operation.

    Several processes may open the same file: WAL lets readers run beside one writer, writers queue for up to
    ``BUSY_TIMEOUT_MS``, and ``BEGIN IMMEDIATE`` makes every read-modify-write atomic.
    """

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.path = self.home / CONTACTS_FILENAME
        self._lock = threading.RLock()
        self._db = self._open()

    # -- opening -------------------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.home.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self._ensure_file()
        try:
            db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        except sqlite3.DatabaseError as exc:
            raise CorruptStore(self.path, str(exc)) from None
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchall()
            if not mode or str(mode[0][0]).lower() != "wal":
                raise CorruptStore(self.path, f"cannot switch to WAL mode ({mode!r})")
            db.execute("PRAGMA synchronous = FULL")  # trust decisions must survive a power cut, not only a crash
            db.execute("PRAGMA foreign_keys = ON")
            # Cheap for a contact list (linear in its size) and it turns a damaged file into a clear error at
            # start-up instead of a failure in the middle of a call.
            problems = [str(r[0]) for r in db.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise CorruptStore(self.path, "; ".join(problems)[:300])
            self._migrate(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            if _is_corruption(exc):
                raise CorruptStore(self.path, str(exc)) from None
            if _is_unwritable(exc):
                raise StoreUnwritable(self.path, str(exc)) from None
            raise
        except BaseException:
            db.close()
            raise
        return db

    def _ensure_file(self) -> None:
        """Create the file with mode 0600 ourselves (SQLite would honour the umask); refuse an exposed file.

        An existing file is only ``lstat``ed, never opened: closing any descriptor of a database file drops every
        POSIX lock this process holds on it, and another process could then think it is the last user and
        delete the WAL under our open connections (SQLite's "how to corrupt" §2.2)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
        except FileExistsError:
            pass
        else:
            os.close(fd)  # a brand-new empty file: no connection of ours can hold locks on it yet
        st = os.lstat(self.path)
        if not stat.S_ISREG(st.st_mode):
            raise InsecureStore(f"{self.path} is not a regular file")
        if st.st_mode & 0o077:
            raise InsecureStore(
                f"permissions {stat.S_IMODE(st.st_mode):04o} for {self.path} are too open (chmod 600 {self.path})"
            )
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise InsecureStore(f"{self.path} is owned by another user")

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        if self._version(db) == SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            version = self._version(db)  # again under the write lock: another process may have migrated
            if version == 0 and db.execute("SELECT 1 FROM sqlite_master WHERE name = 'contacts'").fetchall():
                raise CorruptStore(self.path, "the schema version is missing but the tables exist")
            if version > SCHEMA_VERSION:
                raise StoreTooNew(
                    f"{self.path} has schema version {version}; this voipgw knows up to {SCHEMA_VERSION} (upgrade it)"
                )
            for migration in MIGRATIONS[version:]:
                migration(db)
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _version(self, db: sqlite3.Connection) -> int:
        rows = db.execute("SELECT max(version) FROM schema_version").fetchall()
        version = 0 if not rows or rows[0][0] is None else int(rows[0][0])
        if version > SCHEMA_VERSION:
            raise StoreTooNew(
                f"{self.path} has schema version {version}; this voipgw knows up to {SCHEMA_VERSION} (upgrade it)"
            )
        return version

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ContactStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.DatabaseError as exc:
                if _is_corruption(exc):
                    raise CorruptStore(self.path, str(exc)) from None
                raise

    def reading(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """The connection for a read-only query (``history.py``); corruption becomes CorruptStore."""
        return self._read()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: ``BEGIN IMMEDIATE`` takes the write lock first, so read-modify-write cannot race."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                if _is_corruption(exc):
                    raise CorruptStore(self.path, str(exc)) from None
                if _is_unwritable(exc):
                    raise StoreUnwritable(self.path, str(exc)) from None
                raise
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError) and _is_corruption(exc):
                    raise CorruptStore(self.path, str(exc)) from None
                if _is_unwritable(exc):
                    raise StoreUnwritable(self.path, str(exc)) from None
                raise

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: changes when *another* connection commits (a cheap shm read).

        Every query here runs its cursor to the end (``fetchall``): a half-read cursor would keep a WAL read
        snapshot open, and this connection would then neither see other processes' commits nor this change."""
        with self._read() as db:
            return int(db.execute("PRAGMA data_version").fetchall()[0][0])

    def trust_generation(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT value FROM trust_generation WHERE id = 1").fetchall()[0][0])

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute("UPDATE trust_generation SET value = value + 1 WHERE id = 1")

    # -- reads ----------------------------------------------------------------------------------------------

    def get(self, aor: str) -> Contact | None:
        with self._read() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM contacts WHERE aor = ?", (checked_aor(aor),)).fetchall()
            return _contact(rows[0]) if rows else None

    def require(self, aor: str) -> Contact:
        contact = self.get(aor)
        if contact is None:
            raise UnknownContact(f"no contact {checked_aor(aor)!r} in {self.path}")
        return contact

    def contacts(self) -> list[Contact]:
        with self._read() as db:
            return [_contact(r) for r in db.execute(f"SELECT {_COLUMNS} FROM contacts ORDER BY aor")]

    def most_called(self, limit: int) -> list[Contact]:
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM contacts ORDER BY call_count DESC, last_seen DESC LIMIT ?", (limit,)
            )
            return [_contact(r) for r in rows]

    def history(self, aor: str) -> list[KeyHistoryEntry]:
        """Earlier keys of ``aor``, oldest replacement first."""
        with self._read() as db:
            rows = db.execute(
                "SELECT identity_key, first_seen, last_seen, replaced_at, why, was_verified FROM key_history "
                "WHERE aor = ? ORDER BY replaced_at, id",
                (checked_aor(aor),),
            )
            return [
                KeyHistoryEntry(bytes(r[0]), float(r[1]), float(r[2]), float(r[3]), str(r[4]), bool(r[5])) for r in rows
            ]

    def local_aors(self) -> list[tuple[str, bytes, float, float]]:
        """Our own AORs seen in calls: (aor, our identity key then, first seen, last seen), most recent first."""
        with self._read() as db:
            rows = db.execute("SELECT aor, identity_key, first_seen, last_seen FROM local_aors ORDER BY last_seen DESC")
            return [(str(r[0]), bytes(r[1]), float(r[2]), float(r[3])) for r in rows]

    def integrity_check(self) -> str:
        with self._read() as db:
            return "; ".join(str(r[0]) for r in db.execute("PRAGMA integrity_check"))

    # -- writes (each one transaction) ----------------------------------------------------------------------

    @staticmethod
    def _archive(
        db: sqlite3.Connection,
        aor: str,
        key: bytes,
        first: float,
        last: float,
        now: float,
        why: str,
        was_verified: bool,
    ) -> None:
        db.execute(
            "INSERT INTO key_history (aor, identity_key, first_seen, last_seen, replaced_at, why, was_verified) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (aor, key, first, last, now, why, int(was_verified)),
        )

    @staticmethod
    def _row(db: sqlite3.Connection, aor: str) -> Contact | None:
        rows = db.execute(f"SELECT {_COLUMNS} FROM contacts WHERE aor = ?", (aor,)).fetchall()
        return _contact(rows[0]) if rows else None

    def add_first_contact(self, aor: str, key: bytes, *, local_aor: str | None, now: float) -> tuple[Contact, bool]:
        """Trust on first use: insert ``aor`` with ``key`` unverified. Returns (the stored contact, inserted?);
        when another process inserted it first, nothing is written and its row is returned."""
        aor, key = checked_aor(aor), checked_key(key)
        side = side_fingerprint(key, aor.encode())  # hashed before the write lock is taken
        with self.transaction() as db:
            existing = self._row(db, aor)
            if existing is not None:
                return existing, False
            db.execute(
                "INSERT INTO contacts (aor, identity_key, key_side, key_first_seen, first_seen, last_seen, local_aor) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (aor, key, side, now, now, now, local_aor),
            )
            self._bump(db)
            stored = self._row(db, aor)
        assert stored is not None
        return stored, True

    def replace_key(self, aor: str, key: bytes, *, now: float, why: str, changed: bool = True) -> Contact:
        """Make ``key`` current: the old key goes to the history, verification is cleared, ``changed_at`` is set
        (unless ``changed`` is False, i.e. the user accepted it) and any other pending key is archived."""
        aor, key = checked_aor(aor), checked_key(key)
        side = side_fingerprint(key, aor.encode())
        with self.transaction() as db:
            self._replace(db, aor, key, side, now=now, why=why, changed=changed)
            stored = self._row(db, aor)
        assert stored is not None
        return stored

    def _replace(
        self, db: sqlite3.Connection, aor: str, key: bytes, side: str, *, now: float, why: str, changed: bool
    ) -> None:
        c = self._row(db, aor)
        if c is None:
            raise UnknownContact(f"no contact {aor!r} in {self.path}")
        if c.identity_key == key:
            return
        first = now
        if c.pending_key is not None:
            if c.pending_key == key:
                first = c.pending_first_seen or now
            else:
                self._archive(
                    db,
                    aor,
                    c.pending_key,
                    c.pending_first_seen or now,
                    c.pending_last_seen or now,
                    now,
                    "blocked key superseded, never accepted",
                    False,
                )
        self._archive(db, aor, c.identity_key, c.key_first_seen, c.last_seen, now, why, c.verified)
        db.execute(
            "UPDATE contacts SET identity_key = ?, key_side = ?, key_first_seen = ?, verified = 0, "
            "verified_at = NULL, verified_method = NULL, changed_at = ?, pending_key = NULL, "
            "pending_first_seen = NULL, pending_last_seen = NULL WHERE aor = ?",
            (key, side, first, now if changed else None, aor),
        )
        self._bump(db)

    def set_pending(self, aor: str, key: bytes, *, now: float) -> Contact:
        """Record a blocked changed key (the current key and its verification stay)."""
        aor, key = checked_aor(aor), checked_key(key)
        with self.transaction() as db:
            c = self._row(db, aor)
            if c is None:
                raise UnknownContact(f"no contact {aor!r} in {self.path}")
            if c.pending_key == key:
                db.execute("UPDATE contacts SET pending_last_seen = ? WHERE aor = ?", (now, aor))
            else:
                if c.pending_key is not None:
                    self._archive(
                        db,
                        aor,
                        c.pending_key,
                        c.pending_first_seen or now,
                        c.pending_last_seen or now,
                        now,
                        "blocked key superseded, never accepted",
                        False,
                    )
                db.execute(
                    "UPDATE contacts SET pending_key = ?, pending_first_seen = ?, pending_last_seen = ? WHERE aor = ?",
                    (key, now, now, aor),
                )
                self._bump(db)
            stored = self._row(db, aor)
        assert stored is not None
        return stored

    def accept_change(self, aor: str, *, now: float) -> Contact:
        """The user accepts the changed key: a pending key becomes current (unverified), a warned change is
        acknowledged. UnknownContact, or ContactStoreError when there is nothing to accept."""
        aor = checked_aor(aor)
        c = self.require(aor)
        if c.pending_key is not None:
            return self.replace_key(
                aor, c.pending_key, now=now, why="replaced: new key accepted by the user", changed=False
            )
        if c.changed_at is None:
            raise ContactStoreError(f"{aor} has no changed key to accept")
        with self.transaction() as db:
            db.execute("UPDATE contacts SET changed_at = NULL WHERE aor = ?", (aor,))
            self._bump(db)
            stored = self._row(db, aor)
        assert stored is not None
        return stored

    def mark_verified(self, aor: str, key: bytes, method: VerifyMethod, *, now: float) -> Contact:
        """Mark ``key`` verified for ``aor``. ``key`` must be the current key, or the pending one (which then
        becomes current in the same transaction: verifying a changed key accepts it). KeyMismatch otherwise."""
        aor, key = checked_aor(aor), checked_key(key)
        side = side_fingerprint(key, aor.encode())
        with self.transaction() as db:
            c = self._row(db, aor)
            if c is None:
                raise UnknownContact(f"no contact {aor!r} in {self.path}")
            if c.pending_key == key:
                self._replace(db, aor, key, side, now=now, why="replaced: new key verified by the user", changed=False)
            elif c.identity_key != key:
                raise KeyMismatch(f"{aor}'s key changed in the meantime; compare the safety number again")
            db.execute(
                "UPDATE contacts SET verified = 1, verified_at = ?, verified_method = ?, changed_at = NULL "
                "WHERE aor = ?",
                (now, method.value, aor),
            )
            self._bump(db)
            stored = self._row(db, aor)
        assert stored is not None
        return stored

    def record_call(self, aor: str, key: bytes, *, local_aor: str | None, local_key: bytes | None, now: float) -> bool:
        """Count a call and update last-seen, if ``key`` is still ``aor``'s current key (else nothing, False).
        Also remembers ``local_aor`` (our AOR, for ``id show`` and for computing safety numbers later)."""
        aor, key = checked_aor(aor), bytes(key)
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE contacts SET call_count = call_count + 1, last_seen = max(last_seen, ?), "
                "local_aor = coalesce(?, local_aor) WHERE aor = ? AND identity_key = ?",
                (now, local_aor, aor, key),
            )
            if local_aor is not None and local_key is not None:
                self._note_local(db, local_aor, local_key, now)
            return cur.rowcount == 1

    @staticmethod
    def _note_local(db: sqlite3.Connection, aor: str, key: bytes, now: float) -> None:
        db.execute(
            "INSERT INTO local_aors (aor, identity_key, first_seen, last_seen) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (aor) DO UPDATE SET identity_key = excluded.identity_key, last_seen = excluded.last_seen",
            (aor, key, now, now),
        )

    def add_event(self, aor: str, kind: str, *, key: bytes | None, detail: str, now: float) -> None:
        """Record something the user must see about ``aor`` (e.g. ``sas-mismatch``); a mismatch for the current
        key also clears its verified flag, in the same transaction."""
        aor = checked_aor(aor)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO contact_events (aor, at, kind, identity_key, detail) VALUES (?, ?, ?, ?, ?)",
                (aor, now, kind, key, detail[:500]),
            )
            if kind == EVENT_SAS_MISMATCH and key is not None:
                db.execute(
                    "UPDATE contacts SET verified = 0, verified_at = NULL, verified_method = NULL "
                    "WHERE aor = ? AND identity_key = ?",
                    (aor, bytes(key)),
                )
            self._bump(db)

    def events(self, aor: str) -> list[tuple[float, str, str]]:
        """(when, kind, detail) for ``aor``, oldest first."""
        with self._read() as db:
            rows = db.execute(
                "SELECT at, kind, detail FROM contact_events WHERE aor = ? ORDER BY at, id", (checked_aor(aor),)
            ).fetchall()
            return [(float(r[0]), str(r[1]), str(r[2])) for r in rows]

    def set_name(self, aor: str, name: str | None, *, now: float) -> Contact:
        """Set (None, or a name that cleans to nothing: clear) the local user's own name for ``aor``, cleaned as
        labels clean names (``voipgw.names``); UnknownContact if it is not stored. No trust change (no bump)."""
        del now  # the signature of every write; a name has no timestamp to keep
        aor, cleaned = checked_aor(aor), local_name(name)
        with self.transaction() as db:
            if db.execute("UPDATE contacts SET name = ? WHERE aor = ?", (cleaned, aor)).rowcount != 1:
                raise UnknownContact(f"no contact {aor!r} in {self.path}")
            stored = self._row(db, aor)
        assert stored is not None
        return stored

    def forget(self, aor: str) -> None:
        """Delete ``aor`` and its key history; its next call is a first contact again."""
        aor = checked_aor(aor)
        with self.transaction() as db:
            if db.execute("DELETE FROM contacts WHERE aor = ?", (aor,)).rowcount != 1:
                raise UnknownContact(f"no contact {aor!r} in {self.path}")
            db.execute("DELETE FROM key_history WHERE aor = ?", (aor,))
            db.execute("DELETE FROM contact_events WHERE aor = ?", (aor,))
            self._bump(db)

    def import_contacts(
        self, records: list[tuple[Contact, list[KeyHistoryEntry]]], *, skip_conflicts: bool
    ) -> tuple[int, int, list[str]]:
        """Merge validated records in one transaction. Returns (added, merged, conflicting AORs). A record whose
        key differs from the stored key is a conflict: with ``skip_conflicts`` it is left out, otherwise nothing
        at all is written and the conflicts are returned."""
        added = merged = 0
        conflicts: list[str] = []
        with self.transaction() as db:
            for contact, history in records:
                existing = self._row(db, contact.aor)
                if existing is not None and existing.identity_key != contact.identity_key:
                    conflicts.append(contact.aor)
                    continue
                if existing is None:
                    db.execute(
                        f"INSERT INTO contacts ({_COLUMNS}) VALUES ({', '.join('?' * 16)})",
                        (
                            contact.aor,
                            contact.identity_key,
                            contact.key_side,
                            contact.key_first_seen,
                            contact.first_seen,
                            contact.last_seen,
                            contact.call_count,
                            int(contact.verified),
                            contact.verified_at,
                            None if contact.verified_method is None else contact.verified_method.value,
                            contact.local_aor,
                            contact.changed_at,
                            contact.pending_key,
                            contact.pending_first_seen,
                            contact.pending_last_seen,
                            local_name(contact.name),
                        ),
                    )
                    added += 1
                else:
                    take_verification = contact.verified and not existing.verified
                    db.execute(
                        "UPDATE contacts SET first_seen = min(first_seen, ?), last_seen = max(last_seen, ?), "
                        "key_first_seen = min(key_first_seen, ?), call_count = max(call_count, ?), "
                        "local_aor = coalesce(local_aor, ?), name = coalesce(name, ?) WHERE aor = ?",
                        (
                            contact.first_seen,
                            contact.last_seen,
                            contact.key_first_seen,
                            contact.call_count,
                            contact.local_aor,
                            local_name(contact.name),  # a name the user gave here wins over the imported one
                            contact.aor,
                        ),
                    )
                    if take_verification:
                        db.execute(
                            "UPDATE contacts SET verified = 1, verified_at = ?, verified_method = ? WHERE aor = ?",
                            (
                                contact.verified_at,
                                None if contact.verified_method is None else contact.verified_method.value,
                                contact.aor,
                            ),
                        )
                    merged += 1
                known = {
                    (bytes(r[0]), float(r[1]))
                    for r in db.execute(
                        "SELECT identity_key, replaced_at FROM key_history WHERE aor = ?", (contact.aor,)
                    )
                }
                for h in history:
                    if (h.identity_key, h.replaced_at) not in known:
                        self._archive(
                            db,
                            contact.aor,
                            h.identity_key,
                            h.first_seen,
                            h.last_seen,
                            h.replaced_at,
                            h.why,
                            h.was_verified,
                        )
            if conflicts and not skip_conflicts:
                raise ImportConflict(conflicts)
            self._bump(db)
        return added, merged, conflicts


def quarantine_corrupt(home: Path, *, now: float) -> Path:
    """Move a corrupt ``contacts.db`` (and its -wal/-shm) to ``contacts.db.corrupt-<ts>``; never deletes.

    Refuses (ContactStoreError) when the file opens fine: a healthy store is never moved aside by this."""
    path = Path(home) / CONTACTS_FILENAME
    if not path.exists():
        raise ContactStoreError(f"{path} does not exist")
    try:
        ContactStore(home).close()
    except CorruptStore:
        pass
    else:
        raise ContactStoreError(f"{path} is not corrupt; nothing moved")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    target = path.with_name(f"{CONTACTS_FILENAME}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{CONTACTS_FILENAME}.corrupt-{stamp}-{n}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    os.replace(path, target)
    return target


__all__ = [
    "CONTACTS_FILENAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Contact",
    "ContactStore",
    "KeyHistoryEntry",
    "VerifyMethod",
    "checked_aor",
    "checked_key",
    "quarantine_corrupt",
]
