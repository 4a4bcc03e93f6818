"""The identity passphrase: asked for on a real terminal (pexpect) when the key is protected and VOIPGW_PASSPHRASE is
unset; without a terminal the error names VOIPGW_PASSPHRASE; ``voipgw id passphrase`` adds, changes and removes it
without changing the key (the file stays 0600)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from ratchet.errors import PassphraseRequired
from ratchet.identity import IdentityKey
from voipgw.store.keyfile import IDENTITY_FILENAME, load_identity, save_identity

REPO = Path(__file__).resolve().parents[2]
OLD, NEW = "correct horse", "battery staple"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VOIPGW_PASSPHRASE", "VOIPGW_NEW_PASSPHRASE")}
    return {**env, **extra}


@pytest.fixture
def home(tmp_path: Path) -> tuple[Path, IdentityKey]:
    key = IdentityKey.generate()
    save_identity(tmp_path / IDENTITY_FILENAME, key, OLD.encode())
    return tmp_path, key


@pytest.fixture
def spawn() -> Iterator[list[pexpect.spawn]]:
    children: list[pexpect.spawn] = []
    yield children
    for child in children:
        child.close(force=True)


def _start(children: list[pexpect.spawn], home: Path, *argv: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable, ["-m", "voipgw.cli.main", "--home", str(home), *argv], cwd=str(REPO), env=_env(),
        encoding="utf-8", timeout=30, dimensions=(60, 200),
    )  # fmt: skip
    children.append(child)
    return child


def _finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus is not None
    return int(child.exitstatus)


def test_a_protected_key_is_unlocked_by_a_prompt_on_a_terminal(
    home: tuple[Path, IdentityKey], spawn: list[pexpect.spawn]
) -> None:
    path, key = home
    child = _start(spawn, path, "id", "show", "--aor", "alice@example.org")
    child.expect("Passphrase for .*identity.pem: ")
    child.sendline("not it")
    child.expect("wrong passphrase")
    child.expect("Passphrase for ")
    child.sendline(OLD)
    child.expect(f"Identity key: +{key.public.serialize().hex()}")
    assert _finish(child) == 0


def test_without_a_terminal_the_error_names_the_variable(home: tuple[Path, IdentityKey]) -> None:
    path, _ = home
    out = subprocess.run(
        [sys.executable, "-m", "voipgw.cli.main", "--home", str(path), "id", "show"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=_env(),
    )  # fmt: skip
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "passphrase-required" not in out.stderr
    assert "passphrase-protected: set VOIPGW_PASSPHRASE" in out.stderr, out.stderr


def test_change_then_remove_the_passphrase_keeps_the_key(
    home: tuple[Path, IdentityKey], spawn: list[pexpect.spawn]
) -> None:
    path, key = home
    keyfile = path / IDENTITY_FILENAME
    child = _start(spawn, path, "id", "passphrase")
    child.expect("Passphrase for ")
    child.sendline(OLD)
    child.expect("New passphrase")
    child.sendline(NEW)
    child.expect("Repeat the new passphrase")
    child.sendline(NEW)
    child.expect("protected by the new passphrase")
    assert _finish(child) == 0
    assert keyfile.stat().st_mode & 0o777 == 0o600
    assert load_identity(keyfile, NEW.encode()).public.serialize() == key.public.serialize()
    assert not list(path.glob(".*.tmp"))  # the atomic write left no temp file behind

    mismatch = _start(spawn, path, "id", "passphrase")
    mismatch.expect("Passphrase for ")
    mismatch.sendline(NEW)
    mismatch.expect("New passphrase")
    mismatch.sendline("one")
    mismatch.expect("Repeat")
    mismatch.sendline("two")
    mismatch.expect("differ; nothing was changed")
    assert _finish(mismatch) == 1
    assert load_identity(keyfile, NEW.encode()).public.serialize() == key.public.serialize()

    out = subprocess.run(
        [sys.executable, "-m", "voipgw.cli.main", "id", "passphrase", "--remove", "--home", str(path)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=_env(VOIPGW_PASSPHRASE=NEW),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert load_identity(keyfile, None).public.serialize() == key.public.serialize()
    assert keyfile.stat().st_mode & 0o777 == 0o600
    with pytest.raises(PassphraseRequired):  # and adding one back without a terminal reads the new variable
        subprocess.run(
            [sys.executable, "-m", "voipgw.cli.main", "--home", str(path), "id", "passphrase"],
            check=True, timeout=60, stdin=subprocess.DEVNULL, env=_env(VOIPGW_NEW_PASSPHRASE=OLD),
        )  # fmt: skip
        load_identity(keyfile, None)
    assert load_identity(keyfile, OLD.encode()).public.serialize() == key.public.serialize()
