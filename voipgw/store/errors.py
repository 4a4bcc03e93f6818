"""Why the contact store refused: one exception per reason, each with the ``reason`` string the CLI and the
logs print. Kept apart from ``contacts`` so callers that only catch (the CLI, the gateway) need not load SQLite.
"""

from __future__ import annotations

from pathlib import Path


class ContactStoreError(Exception):
    """Base class of the store's typed failures; ``reason`` is a stable code for logs."""

    reason = "contact-store"


class CorruptStore(ContactStoreError):
    """The file is not a readable SQLite contact store. It is kept as it is; ``quarantine_corrupt`` moves it aside."""

    reason = "corrupt-store"

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(
            f"{path} is corrupt or not a voipgw contact store ({detail}); it was left untouched. "
            f"Move it aside with 'voipgw contacts quarantine --home {path.parent}' (nothing is deleted) or restore "
            f"a backup"
        )
        self.path = path


class StoreUnwritable(ContactStoreError):
    """The file system refused a write (disk full, read-only home, I/O error): nothing was changed. The process
    keeps running; what it could not record (a first contact, a call count) is missing from the store."""

    reason = "store-unwritable"

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(
            f"cannot write {path}: {detail}; nothing was changed (free some space or make {path.parent} writable)"
        )
        self.path = path


class StoreTooNew(ContactStoreError):
    """The file was written by a newer voipgw (a schema version we do not know)."""

    reason = "store-too-new"


class InsecureStore(ContactStoreError):
    """The file is readable by group/other, or owned by another user."""

    reason = "insecure-store"


class UnknownContact(ContactStoreError):
    reason = "unknown-contact"


class ImportConflict(ContactStoreError):
    """An import names AORs that are stored with a different key; nothing was written."""

    reason = "import-conflict"

    def __init__(self, aors: list[str]) -> None:
        super().__init__(
            f"{len(aors)} contact(s) already stored with a different key ({', '.join(aors[:3])}"
            f"{', ...' if len(aors) > 3 else ''}); 'voipgw forget' them first or pass --skip-conflicts"
        )
        self.aors = aors


class KeyMismatch(ContactStoreError):
    """An operation named a key that is not the contact's (it changed in between, or the caller is wrong)."""

    reason = "key-mismatch"
