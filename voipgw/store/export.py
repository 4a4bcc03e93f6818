"""The contact store's export document (``voipgw contacts export``/``import``): JSON-ready data with every
contact's public keys, verification state, local name and key history, and the strict parser that refuses anything
``export_document`` would not have written, before a single row is touched.

Version 1 gained the optional ``name`` field (the local user's name for the contact) without a version bump: an
older export without it imports as contacts without a name, and an older voipgw ignores it.
"""

from __future__ import annotations

from typing import Any

from ratchet.errors import MalformedAor, MalformedIdentityKey
from ratchet.fingerprint import side_fingerprint
from voipgw.names import MAX_NAME, local_name
from voipgw.store.contacts import (
    Contact,
    ContactStore,
    KeyHistoryEntry,
    VerifyMethod,
    checked_aor,
    checked_key,
)
from voipgw.store.errors import ContactStoreError

EXPORT_FORMAT = "voipgw-contacts"
EXPORT_VERSION = 1
MAX_IMPORT_BYTES = 16 * 1024 * 1024
MAX_IMPORT_CONTACTS = 100_000


class MalformedExport(ContactStoreError):
    """An import document that is not exactly what ``export_document`` writes; nothing was imported."""

    reason = "malformed-export"


def export_document(store: ContactStore, *, now: float) -> dict[str, Any]:
    """Every contact with its public keys, verification state and key history, as JSON-ready data."""

    def hist(h: KeyHistoryEntry) -> dict[str, Any]:
        return {
            "identity_key": h.identity_key.hex(),
            "first_seen": h.first_seen,
            "last_seen": h.last_seen,
            "replaced_at": h.replaced_at,
            "why": h.why,
            "was_verified": h.was_verified,
        }

    out = []
    for c in store.contacts():
        out.append(
            {
                "aor": c.aor,
                "identity_key": c.identity_key.hex(),
                "key_first_seen": c.key_first_seen,
                "first_seen": c.first_seen,
                "last_seen": c.last_seen,
                "call_count": c.call_count,
                "verified": c.verified,
                "verified_at": c.verified_at,
                "verified_method": None if c.verified_method is None else c.verified_method.value,
                "local_aor": c.local_aor,
                "changed_at": c.changed_at,
                "pending_key": None if c.pending_key is None else c.pending_key.hex(),
                "pending_first_seen": c.pending_first_seen,
                "pending_last_seen": c.pending_last_seen,
                "name": c.name,
                "history": [hist(h) for h in store.history(c.aor)],
            }
        )
    return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "exported_at": now, "contacts": out}


def _field(obj: dict[str, Any], name: str, kind: str, where: str) -> Any:
    if name not in obj:
        raise MalformedExport(f"{where}: missing {name!r}")
    value = obj[name]
    nullable = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None and nullable:
        return None
    ok = {
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53,
        "time": isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e11,
        "key": isinstance(value, str),
    }[kind]
    if not ok:
        raise MalformedExport(f"{where}: {name!r} must be {'null or ' if nullable else ''}{kind}, got {value!r:.40}")
    if kind == "time":
        return float(value)
    if kind == "key":
        try:
            return checked_key(bytes.fromhex(value))
        except (ValueError, MalformedIdentityKey):
            raise MalformedExport(f"{where}: {name!r} is not a 66-hex-digit identity key") from None
    return value


def parse_document(doc: Any) -> list[tuple[Contact, list[KeyHistoryEntry]]]:
    """Validate a whole import document (every field, every key, every AOR in normal form, no duplicates)
    before anything is written. MalformedExport names the first problem."""
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise MalformedExport(f'not a voipgw contacts export ("format" must be {EXPORT_FORMAT!r})')
    if doc.get("version") != EXPORT_VERSION:
        raise MalformedExport(f"unsupported export version {doc.get('version')!r} (this voipgw reads {EXPORT_VERSION})")
    items = doc.get("contacts")
    if not isinstance(items, list) or len(items) > MAX_IMPORT_CONTACTS:
        raise MalformedExport('"contacts" must be a list')
    records: list[tuple[Contact, list[KeyHistoryEntry]]] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"contacts[{i}]"
        if not isinstance(item, dict):
            raise MalformedExport(f"{where}: not an object")
        aor = _field(item, "aor", "str", where)
        try:
            if checked_aor(aor) != aor:
                raise MalformedExport(f"{where}: AOR {aor!r} is not in normal form ({checked_aor(aor)!r})")
        except MalformedAor as exc:
            raise MalformedExport(f"{where}: bad AOR {aor!r}: {exc}") from None
        if aor in seen:
            raise MalformedExport(f"{where}: duplicate AOR {aor!r}")
        seen.add(aor)
        local_aor = _field(item, "local_aor", "str?", where)
        if local_aor is not None:
            try:
                local_aor = checked_aor(local_aor)
            except MalformedAor as exc:
                raise MalformedExport(f"{where}: bad local_aor: {exc}") from None
        method = _field(item, "verified_method", "str?", where)
        try:
            verified_method = None if method is None else VerifyMethod(method)
        except ValueError:
            raise MalformedExport(f"{where}: unknown verified_method {method!r}") from None
        verified = _field(item, "verified", "bool", where)
        verified_at = _field(item, "verified_at", "time?", where)
        if verified and (verified_method is None or verified_at is None):
            raise MalformedExport(f"{where}: verified needs verified_method and verified_at")
        key = _field(item, "identity_key", "key", where)
        pending = _field(item, "pending_key", "key?", where)
        if pending == key:
            raise MalformedExport(f"{where}: pending_key equals identity_key")
        name = _field(item, "name", "str?", where) if "name" in item else None
        if name is not None and local_name(name) != name:
            raise MalformedExport(
                f"{where}: 'name' must be a non-empty cleaned name of at most {MAX_NAME} characters, got {name!r:.40}"
            )
        history_items = item.get("history", [])
        if not isinstance(history_items, list):
            raise MalformedExport(f"{where}: history must be a list")
        history = []
        for j, h in enumerate(history_items):
            hw = f"{where}.history[{j}]"
            if not isinstance(h, dict):
                raise MalformedExport(f"{hw}: not an object")
            history.append(
                KeyHistoryEntry(
                    identity_key=_field(h, "identity_key", "key", hw),
                    first_seen=_field(h, "first_seen", "time", hw),
                    last_seen=_field(h, "last_seen", "time", hw),
                    replaced_at=_field(h, "replaced_at", "time", hw),
                    why=_field(h, "why", "str", hw)[:200],
                    was_verified=_field(h, "was_verified", "bool", hw),
                )
            )
        records.append(
            (
                Contact(
                    aor=aor,
                    identity_key=key,
                    key_side=side_fingerprint(key, aor.encode()),
                    key_first_seen=_field(item, "key_first_seen", "time", where),
                    first_seen=_field(item, "first_seen", "time", where),
                    last_seen=_field(item, "last_seen", "time", where),
                    call_count=_field(item, "call_count", "int", where),
                    verified=verified,
                    verified_at=verified_at if verified else None,
                    verified_method=verified_method if verified else None,
                    local_aor=local_aor,
                    changed_at=_field(item, "changed_at", "time?", where),
                    pending_key=pending,
                    pending_first_seen=_field(item, "pending_first_seen", "time?", where) if pending else None,
                    pending_last_seen=_field(item, "pending_last_seen", "time?", where) if pending else None,
                    name=name,
                ),
                history,
            )
        )
    return records


__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "MAX_IMPORT_BYTES",
    "MAX_IMPORT_CONTACTS",
    "MalformedExport",
    "export_document",
    "parse_document",
]
