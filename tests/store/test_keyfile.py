"""The identity key file: atomic 0600 writes, ssh-like permission refusal, passphrases, first-run creation."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from ratchet import errors
from ratchet.identity import IdentityKey
from voipgw.store.keyfile import (
    IDENTITY_FILENAME,
    InsecureKeyFile,
    load_identity,
    load_or_create_identity,
    save_identity,
)


def test_save_writes_mode_0600_atomically(tmp_path: Path) -> None:
    path = tmp_path / "home" / "identity.pem"
    key = IdentityKey.generate()
    old_umask = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        save_identity(path, key)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_identity(path).public == key.public
    assert [p.name for p in path.parent.iterdir()] == ["identity.pem"]  # no temp file left behind
    other = IdentityKey.generate()
    save_identity(path, other)
    assert load_identity(path).public == other.public
    with pytest.raises(FileExistsError):
        save_identity(path, key, overwrite=False)
    assert load_identity(path).public == other.public


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610])
def test_group_or_other_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "identity.pem"
    save_identity(path, IdentityKey.generate())
    path.chmod(mode)
    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        load_identity(path)
    assert isinstance(InsecureKeyFile(), errors.IdentityFileError)


def test_symlink_is_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real.pem"
    save_identity(real, IdentityKey.generate())
    link = tmp_path / "identity.pem"
    link.symlink_to(real)
    with pytest.raises(OSError):
        load_identity(link)


def test_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "identity.pem"
    key = IdentityKey.generate()
    save_identity(path, key, b"s3cret")
    assert b"ENCRYPTED" in path.read_bytes()
    assert load_identity(path, b"s3cret").public == key.public
    with pytest.raises(errors.WrongPassphrase):
        load_identity(path, b"nope")
    with pytest.raises(errors.PassphraseRequired):
        load_identity(path)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "identity.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    os.close(fd)
    with pytest.raises(errors.MalformedIdentityFile):
        load_identity(path)


def test_load_or_create(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = load_or_create_identity(home)
    assert stat.S_IMODE((home / IDENTITY_FILENAME).stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert load_or_create_identity(home).public == first.public


def test_concurrent_first_runs_agree(tmp_path: Path) -> None:
    home = tmp_path / "home"
    results: list[bytes] = []
    lock = threading.Lock()

    def run() -> None:
        key = load_or_create_identity(home)
        with lock:
            results.append(key.public.serialize())

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 8 and len(set(results)) == 1
    assert load_identity(home / IDENTITY_FILENAME).public.serialize() == results[0]


@pytest.mark.integration  # starts processes
def test_cli_uses_the_passphrase_from_the_environment(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "VOIPGW_PASSPHRASE": "correct horse"}
    run = [sys.executable, "-m", "voipgw.cli.main", "--home", str(tmp_path), "id", "show", "--aor", "a@b.example"]
    first = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    pem = (tmp_path / "identity.pem").read_bytes()
    assert b"ENCRYPTED" in pem  # created encrypted with the passphrase
    again = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0 and again.stdout == first.stdout  # the same identity unlocks
    env.pop("VOIPGW_PASSPHRASE")
    locked = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert locked.returncode != 0 and "passphrase" in locked.stderr.lower()
    assert "Traceback" not in locked.stderr
