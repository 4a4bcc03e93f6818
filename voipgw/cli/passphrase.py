"""Unlocking the identity key for the CLI: ``$VOIPGW_PASSPHRASE``, else a prompt on a terminal (getpass), else an
error that names the variable; and asking for a new passphrase (``voipgw id passphrase``). Never prints a secret."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from ratchet.errors import IdentityFileError, PassphraseRequired, WrongPassphrase
from ratchet.identity import IdentityKey
from voipgw.cli.errors import CliError
from voipgw.store.keyfile import IDENTITY_FILENAME, PASSPHRASE_ENV, load_or_create_identity, passphrase_from_env

PROMPT_ATTEMPTS = 3
NEW_PASSPHRASE_ENV = "VOIPGW_NEW_PASSPHRASE"
"""Where ``voipgw id passphrase`` reads the new passphrase when there is no terminal to ask on."""


def _can_prompt() -> bool:
    return sys.stdin.isatty()


def identity_error_text(exc: BaseException, path: Path) -> str:
    """One user-facing line for a key file that cannot be loaded, naming what to do (no internal reason codes)."""
    if isinstance(exc, PassphraseRequired):
        return (
            f"the identity key {path} is passphrase-protected: set {PASSPHRASE_ENV}, or run on a terminal to be "
            "asked for the passphrase"
        )
    if isinstance(exc, WrongPassphrase):
        if "not encrypted" in str(exc):
            return (
                f"{PASSPHRASE_ENV} is set but the identity key {path} has no passphrase (unset it, or add one "
                "with 'voipgw id passphrase')"
            )
        source = f" (from {PASSPHRASE_ENV})" if passphrase_from_env() else ""
        return f"wrong passphrase{source} for the identity key {path}"
    if isinstance(exc, IdentityFileError):
        return f"identity key {path}: {getattr(exc, 'detail', '') or exc}"
    if isinstance(exc, OSError):
        return f"identity key {path}: {exc.strerror or exc}"
    return f"identity key {path}: {exc}"


def unlock_identity(home: Path, *, interactive: bool = True, code: int = 1) -> IdentityKey:
    """Our identity key under ``home`` (created on first use, with ``$VOIPGW_PASSPHRASE`` if set). A protected key
    without the variable is unlocked by prompting on a terminal (``interactive``); failures are CliError(code)."""
    path = home / IDENTITY_FILENAME
    try:
        return load_or_create_identity(home, passphrase_from_env())
    except PassphraseRequired as exc:
        if not (interactive and _can_prompt()):
            raise CliError(identity_error_text(exc, path), code) from None
    except (IdentityFileError, OSError) as exc:
        raise CliError(identity_error_text(exc, path), code) from None
    for _ in range(PROMPT_ATTEMPTS):
        try:
            typed = getpass.getpass(f"Passphrase for {path}: ")
        except (EOFError, KeyboardInterrupt):
            raise CliError("no passphrase given; nothing was done", code) from None
        try:
            return load_or_create_identity(home, typed.encode("utf-8") if typed else None)
        except WrongPassphrase:
            print("wrong passphrase", file=sys.stderr, flush=True)
        except PassphraseRequired:
            print("the key is passphrase-protected: type its passphrase", file=sys.stderr, flush=True)
        except (IdentityFileError, OSError) as exc:
            raise CliError(identity_error_text(exc, path), code) from None
    raise CliError(f"wrong passphrase for the identity key {path} ({PROMPT_ATTEMPTS} attempts)", code)


def ask_new_passphrase(remove: bool) -> bytes | None:
    """The new passphrase (None: no passphrase), typed twice on a terminal or read from $VOIPGW_NEW_PASSPHRASE."""
    if remove:
        return None
    if not _can_prompt():
        value = os.environ.get(NEW_PASSPHRASE_ENV)
        if not value:
            raise CliError(f"no terminal to ask for the new passphrase on: set {NEW_PASSPHRASE_ENV} (or --remove)")
        return value.encode("utf-8")
    try:
        first = getpass.getpass("New passphrase (empty: no passphrase): ")
        if not first:
            raise CliError("empty passphrase: to remove the passphrase, pass --remove; nothing was changed")
        again = getpass.getpass("Repeat the new passphrase: ")
    except (EOFError, KeyboardInterrupt):
        raise CliError("cancelled; nothing was changed") from None
    if first != again:
        raise CliError("the two passphrases differ; nothing was changed")
    return first.encode("utf-8")
