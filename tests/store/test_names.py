"""Local contact names (schema version 3): set only through ``ContactStore.set_name`` (the user's command, never a
call), cleaned with the labels' own rule (``voipgw.names``), carried by export/import (an older export without
names still imports), and an m2 store migrates keeping every row."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from ratchet.fingerprint import side_fingerprint
from ratchet.identity import IdentityKey
from voipgw.names import MAX_NAME, clean_name
from voipgw.store.contacts import CONTACTS_FILENAME, MIGRATIONS, SCHEMA_VERSION, ContactStore
from voipgw.store.errors import UnknownContact
from voipgw.store.export import MalformedExport, export_document, parse_document

BOB, CAROL = "bob@example.org", "carol@example.org"


def _key() -> bytes:
    return IdentityKey.generate().public.serialize()


def _store_with_bob(home: Path) -> ContactStore:
    store = ContactStore(home)
    store.add_first_contact(BOB, _key(), local_aor="alice@example.org", now=10.0)
    return store


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("Bob Smith", "Bob Smith"),
        ("  Bob\t\nSmith  ", "Bob Smith"),
        ("[E2E 4xj9] Bob", "E2E 4xj9 Bob"),  # a name can never look like a label
        ("\u202eBob\u200b", "Bob"),  # nor hide one with bidi or zero-width characters
        ("\uff3bSAFE\uff3d Bob", "SAFE Bob"),
        ("x" * 100, "x" * MAX_NAME),
        ("", None),
        ("  []\u202e ", None),  # nothing survives the cleaning: no name
        (None, None),
    ],
)
def test_set_name_cleans_like_the_labels_and_empty_is_no_name(tmp_path: Path, given: str | None,
                                                               stored: str | None) -> None:  # fmt: skip
    with _store_with_bob(tmp_path) as store:
        assert store.require(BOB).name is None
        contact = store.set_name("sip:bob@Example.ORG", given, now=20.0)
        assert contact.name == stored == store.require(BOB).name
        assert stored is None or stored == clean_name(given)


def test_set_name_clears_and_leaves_trust_alone(tmp_path: Path) -> None:
    with _store_with_bob(tmp_path) as store:
        before = store.require(BOB)
        generation = store.trust_generation()
        store.set_name(BOB, "Bob", now=20.0)
        named = store.require(BOB)
        assert named.name == "Bob"
        # A name is not a trust fact: the key, its verification and the trust caches' generation stay as they were.
        assert (named.identity_key, named.verified, named.changed_at) == (
            before.identity_key,
            before.verified,
            before.changed_at,
        )
        assert store.trust_generation() == generation
        assert store.set_name(BOB, None, now=30.0).name is None
        assert store.require(BOB).name is None


def test_naming_an_unknown_contact_is_a_typed_error_and_writes_nothing(tmp_path: Path) -> None:
    with _store_with_bob(tmp_path) as store:
        with pytest.raises(UnknownContact, match=r"carol@example\.org"):
            store.set_name(CAROL, "Carol", now=20.0)
        assert store.get(CAROL) is None
        assert [c.aor for c in store.contacts()] == [BOB]


def test_names_go_through_export_and_import(tmp_path: Path) -> None:
    with _store_with_bob(tmp_path / "a") as store:
        store.add_first_contact(CAROL, _key(), local_aor=None, now=11.0)
        store.set_name(BOB, "Bob Smith", now=20.0)
        doc = json.loads(json.dumps(export_document(store, now=30.0)))
    assert [c.get("name") for c in doc["contacts"]] == ["Bob Smith", None]
    records = parse_document(doc)
    assert [c.name for c, _ in records] == ["Bob Smith", None]
    with ContactStore(tmp_path / "b") as other:
        assert other.import_contacts(records, skip_conflicts=False) == (2, 0, [])
        assert (other.require(BOB).name, other.require(CAROL).name) == ("Bob Smith", None)


def test_an_import_never_renames_a_contact_the_user_named_here(tmp_path: Path) -> None:
    with _store_with_bob(tmp_path) as store:
        store.add_first_contact(CAROL, _key(), local_aor=None, now=11.0)
        doc = json.loads(json.dumps(export_document(store, now=30.0)))
        doc["contacts"][0]["name"] = "Imported Bob"
        doc["contacts"][1]["name"] = "Imported Carol"
        store.set_name(BOB, "My Bob", now=40.0)
        assert store.import_contacts(parse_document(doc), skip_conflicts=False) == (0, 2, [])
        assert (store.require(BOB).name, store.require(CAROL).name) == ("My Bob", "Imported Carol")


def test_an_export_without_names_still_imports(tmp_path: Path) -> None:
    """An export written before names existed (version 1, no ``name`` key) imports as contacts without a name."""
    with _store_with_bob(tmp_path / "a") as store:
        doc = json.loads(json.dumps(export_document(store, now=30.0)))
    for contact in doc["contacts"]:
        del contact["name"]
    assert doc["version"] == 1
    with ContactStore(tmp_path / "b") as other:
        assert other.import_contacts(parse_document(doc), skip_conflicts=False) == (1, 0, [])
        assert other.require(BOB).name is None


@pytest.mark.parametrize(
    "name",
    ["", "   ", "[E2E 4xj9] Bob", "Bob\x1b[2J", "\u202eBob", "x" * (MAX_NAME + 1), 7, True, ["Bob"], {"n": 1}],
)
def test_the_strict_parser_refuses_a_name_export_would_not_have_written(tmp_path: Path, name: object) -> None:
    with _store_with_bob(tmp_path) as store:
        doc = json.loads(json.dumps(export_document(store, now=30.0)))
    doc["contacts"][0]["name"] = name
    with pytest.raises(MalformedExport, match="'name'"):
        parse_document(doc)


def test_an_m2_store_is_migrated_keeping_every_row(tmp_path: Path) -> None:
    """A store written by the schema-2 voipgw (before names): every contact, history entry, event and local AOR
    is still there after the migration, and the new column starts empty."""
    path = tmp_path / CONTACTS_FILENAME
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for migration in MIGRATIONS[:2]:  # exactly what a version-2 voipgw created
        migration(db)
    db.execute("INSERT INTO schema_version VALUES (2)")
    keys = {f"u{i}@example.org": _key() for i in range(20)}
    for i, (aor, key) in enumerate(keys.items()):
        db.execute(
            "INSERT INTO contacts (aor, identity_key, key_side, key_first_seen, first_seen, last_seen, call_count, "
            "verified, verified_at, verified_method, local_aor) VALUES (?, ?, ?, 1, 1, 2, ?, 1, 3, 'sas', ?)",
            (aor, key, side_fingerprint(key, aor.encode()), i, "alice@example.org"),
        )
        db.execute(
            "INSERT INTO key_history (aor, identity_key, first_seen, last_seen, replaced_at, why, was_verified) "
            "VALUES (?, ?, 0.1, 0.5, 1, 'rotated', 0)",
            (aor, _key()),
        )
        db.execute("INSERT INTO contact_events (aor, at, kind, detail) VALUES (?, 4, 'sas-mismatch', 'x')", (aor,))
    db.execute("INSERT INTO local_aors VALUES ('alice@example.org', ?, 1, 2)", (_key(),))
    db.close()
    assert SCHEMA_VERSION >= 3  # 4 added the call history
    with ContactStore(tmp_path) as store:
        contacts = store.contacts()
        assert [c.aor for c in contacts] == sorted(keys)
        for i, c in enumerate(sorted(contacts, key=lambda c: c.call_count)):
            assert (c.identity_key, c.call_count, c.verified, c.name) == (keys[c.aor], i, True, None)
            assert len(store.history(c.aor)) == 1 and store.events(c.aor) == [(4.0, "sas-mismatch", "x")]
        assert [a[0] for a in store.local_aors()] == ["alice@example.org"]
        assert store.integrity_check() == "ok"
        store.set_name("u3@example.org", "Three", now=5.0)
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert db.execute("SELECT name FROM contacts WHERE aor = 'u3@example.org'").fetchall() == [("Three",)]
    db.close()
    with ContactStore(tmp_path) as store:  # reopening runs no migration again
        assert store.require("u3@example.org").name == "Three"
