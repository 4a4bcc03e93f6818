"""The identity key file: atomic mode-0600 writes, ssh-like permission checks on load, optional passphrase.

Owns file I/O for the long-term key only; the key format itself is ``ratchet.identity``. Never logs key bytes.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from ratchet.errors import IdentityFileError, MalformedIdentityFile
from ratchet.identity import IdentityKey

IDENTITY_FILENAME = "identity.pem"
FILE_MODE = 0o600
DIR_MODE = 0o700
MAX_KEY_FILE_BYTES = 64 * 1024


class InsecureKeyFile(IdentityFileError):
    """The key file is accessible to group/other, or not owned by us (ssh refuses such keys too)."""

    reason = "insecure-key-file"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask can only clear bits, but be explicit
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def save_identity(path: Path, key: IdentityKey, passphrase: bytes | None = None, *, overwrite: bool = True) -> None:
    """Write ``key`` as PEM to ``path`` atomically with mode 0600 (temp file, fsync, rename, fsync dir).

    With ``overwrite=False`` an existing file is left alone and FileExistsError is raised.
    """
    path = Path(path)
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    tmp = _write_temp(path, key.to_pem(passphrase))
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic create-if-absent
    finally:
        if not overwrite or tmp.exists():
            tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def load_identity(path: Path, passphrase: bytes | None = None) -> IdentityKey:
    """Load the key at ``path``. Raises InsecureKeyFile (group/other bits set or foreign owner),
    PassphraseRequired / WrongPassphrase / MalformedIdentityFile, or FileNotFoundError."""
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InsecureKeyFile(f"{path} is not a regular file")
        if st.st_mode & 0o077:
            raise InsecureKeyFile(
                f"permissions {stat.S_IMODE(st.st_mode):04o} for {path} are too open; "
                f"it must not be accessible by group or others (chmod 600 {path})"
            )
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise InsecureKeyFile(f"{path} is owned by another user")
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise InsecureKeyFile(f"{path} is too large to be a key file")
        chunks = []
        while chunk := os.read(fd, MAX_KEY_FILE_BYTES):
            chunks.append(chunk)
    finally:
        os.close(fd)
    try:
        return IdentityKey.from_pem(b"".join(chunks), passphrase)
    except MalformedIdentityFile as exc:
        # Name the file and say it is kept: a damaged key must never be replaced by a new identity on its own.
        raise MalformedIdentityFile(
            f"{path}: {exc.detail or 'unreadable'}; the file was left untouched (restore it from a backup; moving "
            f"it aside creates a new identity, which every contact will see as a key change)"
        ) from None


PASSPHRASE_ENV = "VOIPGW_PASSPHRASE"


def passphrase_from_env() -> bytes | None:
    """The identity passphrase from ``$VOIPGW_PASSPHRASE`` (the CLI's way to unlock or create an encrypted key)."""
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode("utf-8") if value else None


def load_or_create_identity(
    home: Path, passphrase: bytes | None = None, *, filename: str = IDENTITY_FILENAME
) -> IdentityKey:
    """The endpoint's identity under ``home``, generated and saved (mode 0600) on first use.

    Safe against two processes starting at once: creation is atomic and the loser loads the winner's key.
    """
    path = Path(home) / filename
    with contextlib.suppress(FileNotFoundError):
        return load_identity(path, passphrase)
    key = IdentityKey.generate()
    try:
        save_identity(path, key, passphrase, overwrite=False)
    except FileExistsError:
        return load_identity(path, passphrase)
    return key
