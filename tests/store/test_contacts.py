"""The contact store: schema and migrations, mode 0600, WAL, typed errors for corrupt/foreign files (kept, never
deleted), key history, and export/import validation."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratchet.identity import IdentityKey
from voipgw.store.contacts import (
    CONTACTS_FILENAME,
    EVENT_SAS_MISMATCH,
    MIGRATIONS,
    SCHEMA_VERSION,
    ContactStore,
    VerifyMethod,
    quarantine_corrupt,
)
from voipgw.store.errors import (
    ContactStoreError,
    CorruptStore,
    ImportConflict,
    InsecureStore,
    KeyMismatch,
    StoreTooNew,
    UnknownContact,
)
from voipgw.store.export import MalformedExport, export_document, parse_document


def _key() -> bytes:
    return IdentityKey.generate().public.serialize()


def test_new_store_is_wal_0600_at_current_schema(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        with ContactStore(tmp_path / "home") as store:
            store.add_first_contact("sip:bob@Example.ORG:5060", _key(), local_aor="alice@example.org", now=100.0)
            assert store.integrity_check() == "ok"
    finally:
        os.umask(old_umask)
    path = tmp_path / "home" / CONTACTS_FILENAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert db.execute("SELECT aor FROM contacts").fetchall() == [("bob@example.org",)]
    finally:
        db.close()
    for side in ("-wal", "-shm"):
        side_path = path.with_name(path.name + side)
        if side_path.exists():
            assert stat.S_IMODE(side_path.stat().st_mode) & 0o077 == 0


def test_migrations_run_once_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    ContactStore(tmp_path).close()
    ContactStore(tmp_path).close()  # reopening does not re-run the migrations
    db = sqlite3.connect(tmp_path / CONTACTS_FILENAME)
    assert db.execute("SELECT count(*) FROM schema_version").fetchone() == (1,)
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreTooNew, match="schema version"):
        ContactStore(tmp_path)


def test_corrupt_file_is_a_typed_error_naming_it_and_is_kept(tmp_path: Path) -> None:
    path = tmp_path / CONTACTS_FILENAME
    garbage = b"this is not an sqlite database at all" * 100
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, garbage)
    os.close(fd)
    with pytest.raises(CorruptStore) as info:
        ContactStore(tmp_path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == garbage  # untouched
    target = quarantine_corrupt(tmp_path, now=0.0)
    assert target.name.startswith("contacts.db.corrupt-19700101T000000Z")
    assert target.read_bytes() == garbage and not path.exists()
    with ContactStore(tmp_path) as store:  # a fresh store starts
        assert store.contacts() == []
    with pytest.raises(ContactStoreError, match="not corrupt"):
        quarantine_corrupt(tmp_path, now=0.0)


def test_damaged_pages_are_reported_as_corrupt(tmp_path: Path) -> None:
    with ContactStore(tmp_path) as store:
        for i in range(40):
            store.add_first_contact(f"user{i}@example.org", _key(), local_aor=None, now=1.0)
    path = tmp_path / CONTACTS_FILENAME
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 3 * 4096
    for page in range(1, len(data) // 4096):  # keep the header page, smash every b-tree page after it
        data[page * 4096 + 8 : page * 4096 + 400] = b"\xa5" * 392
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStore, match=re.escape(str(path))), ContactStore(tmp_path) as store:
        store.contacts()
    assert path.read_bytes() == bytes(data)


def test_group_readable_file_is_refused(tmp_path: Path) -> None:
    ContactStore(tmp_path).close()
    os.chmod(tmp_path / CONTACTS_FILENAME, 0o644)
    with pytest.raises(InsecureStore, match="chmod 600"):
        ContactStore(tmp_path)


def test_pending_accept_verify_and_history(tmp_path: Path) -> None:
    k1, k2, k3 = _key(), _key(), _key()
    with ContactStore(tmp_path) as store:
        store.add_first_contact("bob@example.org", k1, local_aor="alice@example.org", now=10.0)
        store.mark_verified("bob@example.org", k1, VerifyMethod.SAS, now=11.0)
        c = store.set_pending("bob@example.org", k2, now=20.0)
        assert c.identity_key == k1 and c.verified and c.pending_key == k2 and c.state == "key-changed"
        c = store.set_pending("bob@example.org", k3, now=21.0)  # a second blocked key supersedes the first
        assert c.pending_key == k3
        with pytest.raises(KeyMismatch):
            store.mark_verified("bob@example.org", k2, VerifyMethod.QR, now=22.0)
        c = store.accept_change("bob@example.org", now=30.0)
        assert c.identity_key == k3 and not c.verified and c.pending_key is None and c.state == "known"
        assert c.key_first_seen == 21.0
        history = store.history("bob@example.org")
        assert [(h.identity_key, h.was_verified) for h in history] == [(k2, False), (k1, True)]
        assert history[1].first_seen == 10.0 and history[1].replaced_at == 30.0
        with pytest.raises(ContactStoreError, match="no changed key"):
            store.accept_change("bob@example.org", now=31.0)
        assert store.record_call("bob@example.org", k3, local_aor="alice@example.org", local_key=k1, now=40.0)
        assert not store.record_call("bob@example.org", k1, local_aor=None, local_key=None, now=41.0)
        c = store.require("bob@example.org")
        assert (c.call_count, c.last_seen) == (1, 40.0)
        store.forget("bob@example.org")
        assert store.get("bob@example.org") is None and store.history("bob@example.org") == []
        with pytest.raises(UnknownContact):
            store.forget("bob@example.org")


def _populated(tmp_path: Path) -> tuple[ContactStore, dict[str, Any]]:
    store = ContactStore(tmp_path / "a")
    k1, k2 = _key(), _key()
    store.add_first_contact("bob@example.org", k1, local_aor="alice@example.org", now=10.0)
    store.replace_key("bob@example.org", k2, now=20.0, why="test")
    store.mark_verified("bob@example.org", k2, VerifyMethod.SAFETY_NUMBER, now=21.0)
    store.add_first_contact("carol@[2001:db8::1]", _key(), local_aor="alice@example.org", now=30.0)
    store.set_pending("carol@[2001:db8::1]", _key(), now=31.0)
    return store, export_document(store, now=50.0)


def test_export_import_round_trip(tmp_path: Path) -> None:
    store, doc = _populated(tmp_path)
    doc = json.loads(json.dumps(doc))
    with ContactStore(tmp_path / "b") as other:
        assert other.import_contacts(parse_document(doc), skip_conflicts=False) == (2, 0, [])
        assert other.contacts() == store.contacts()
        assert other.history("bob@example.org") == store.history("bob@example.org")
        assert other.import_contacts(parse_document(doc), skip_conflicts=False) == (0, 2, [])
        assert len(other.history("bob@example.org")) == 1  # history is not duplicated by a second import
    store.close()


def test_import_never_overwrites_a_different_key(tmp_path: Path) -> None:
    store, doc = _populated(tmp_path)
    store.close()
    with ContactStore(tmp_path / "b") as other:
        mine = _key()
        other.add_first_contact("bob@example.org", mine, local_aor=None, now=1.0)
        with pytest.raises(ImportConflict, match=re.escape("bob@example.org")):
            other.import_contacts(parse_document(doc), skip_conflicts=False)
        assert [c.aor for c in other.contacts()] == ["bob@example.org"]  # nothing written
        assert other.import_contacts(parse_document(doc), skip_conflicts=True) == (1, 0, ["bob@example.org"])
        assert other.require("bob@example.org").identity_key == mine


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="x"), "not a voipgw contacts export"),
        (lambda d: d.update(version=2), "unsupported export version"),
        (lambda d: d["contacts"][0].update(identity_key="01" + "00" * 31), "identity key"),
        (lambda d: d["contacts"][0].update(identity_key="02" + "11" * 32), "identity key"),
        (lambda d: d["contacts"][0].update(aor="sip:Bob@EXAMPLE.org"), "normal form"),
        (lambda d: d["contacts"][0].update(aor="tel:+1 555"), "bad AOR"),
        (lambda d: d["contacts"][0].update(verified_method="telepathy"), "verified_method"),
        (lambda d: d["contacts"][0].update(call_count=-1), "call_count"),
        (lambda d: d["contacts"][0].update(first_seen="yesterday"), "first_seen"),
        (lambda d: d["contacts"][0]["history"][0].pop("why"), "missing 'why'"),
        (lambda d: d["contacts"].append(d["contacts"][0]), "duplicate AOR"),
    ],
)
def test_import_refuses_malformed_documents(tmp_path: Path, mutate: Any, message: str) -> None:
    store, doc = _populated(tmp_path)
    store.close()
    mutate(doc)
    with pytest.raises(MalformedExport, match=message):
        parse_document(doc)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    path=st.lists(st.sampled_from(["contacts", 0, "history", 0, "aor", "identity_key", "verified"]), max_size=4),
    value=_json,
)
def test_parse_document_raises_only_malformed_export(path: list[Any], value: Any) -> None:
    key = "01" + IdentityKey.from_seed(b"\x01" * 32).public.serialize()[1:].hex()
    doc: Any = {
        "format": "voipgw-contacts",
        "version": 1,
        "contacts": [
            {
                "aor": "bob@example.org",
                "identity_key": key,
                "key_first_seen": 1,
                "first_seen": 1,
                "last_seen": 2,
                "call_count": 3,
                "verified": False,
                "verified_at": None,
                "verified_method": None,
                "local_aor": None,
                "changed_at": None,
                "pending_key": None,
                "pending_first_seen": None,
                "pending_last_seen": None,
                "history": [
                    {
                        "identity_key": key,
                        "first_seen": 0,
                        "last_seen": 1,
                        "replaced_at": 1,
                        "why": "x",
                        "was_verified": False,
                    }
                ],
            }
        ],
    }
    target = doc
    try:
        for step in path[:-1]:
            target = target[step]
        if path:
            target[path[-1]] = value
        else:
            doc = value
    except (KeyError, IndexError, TypeError):
        return
    try:
        parse_document(doc)
    except MalformedExport:
        pass


def test_a_version_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / CONTACTS_FILENAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    MIGRATIONS[0](db)  # exactly what a version-1 voipgw created
    db.execute("INSERT INTO schema_version VALUES (1)")
    key = _key()
    db.execute(
        "INSERT INTO contacts (aor, identity_key, key_side, key_first_seen, first_seen, last_seen, call_count) "
        "VALUES ('bob@example.org', ?, ?, 1, 1, 2, 7)",
        (key, "0" * 30),
    )
    db.close()
    assert SCHEMA_VERSION >= 2
    with ContactStore(tmp_path) as store:
        contact = store.require("bob@example.org")
        assert (contact.identity_key, contact.call_count) == (key, 7)
        store.add_event("bob@example.org", EVENT_SAS_MISMATCH, key=key, detail="in call x", now=5.0)
        assert store.events("bob@example.org") == [(5.0, EVENT_SAS_MISMATCH, "in call x")]
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    db.close()


def test_many_processes_creating_the_store_at_once(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    code = (
        "import sys; from pathlib import Path; from voipgw.store.contacts import ContactStore; "
        "s = ContactStore(Path(sys.argv[1])); print(s.integrity_check()); s.close()"
    )
    repo = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(home)], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    try:
        results = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    assert [(p.returncode, out.strip()) for p, (out, _) in zip(procs, results, strict=True)] == [(0, "ok")] * 6, results
    db = sqlite3.connect(home / CONTACTS_FILENAME)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    db.close()
