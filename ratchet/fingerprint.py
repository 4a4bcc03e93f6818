"""Safety numbers: Signal's displayable NumericFingerprint (libsignal ``fingerprint.rs``).

Pure function of two serialized identity keys and their stable ids (AORs); it never stores or compares trust.
"""

from __future__ import annotations

import hashlib

FINGERPRINT_VERSION = b"\x00\x00"
DEFAULT_ITERATIONS = 5200
MAX_ITERATIONS = 1_000_000
_CHUNKS = 6
_CHUNK_LEN = 5


def _side_digest(key: bytes, stable_id: bytes, iterations: int) -> bytes:
    # libsignal counts the first hash as iteration 0 and then hashes iterations-1 more times.
    key = bytes(key)
    digest = hashlib.sha512(FINGERPRINT_VERSION + key + bytes(stable_id) + key).digest()
    for _ in range(1, iterations):
        digest = hashlib.sha512(digest + key).digest()
    return digest


def _displayable(digest: bytes) -> str:
    return "".join(
        f"{int.from_bytes(digest[i : i + _CHUNK_LEN], 'big') % 100_000:05d}"
        for i in range(0, _CHUNKS * _CHUNK_LEN, _CHUNK_LEN)
    )


def side_fingerprint(key: bytes, stable_id: bytes, iterations: int = DEFAULT_ITERATIONS) -> str:
    """The 30 digits of one side."""
    if not 1 < iterations <= MAX_ITERATIONS:
        raise ValueError("iterations must be in (1, 1000000]")
    return _displayable(_side_digest(key, stable_id, iterations))


def safety_number(
    local_key: bytes,
    local_id: bytes,
    remote_key: bytes,
    remote_id: bytes,
    iterations: int = DEFAULT_ITERATIONS,
) -> str:
    """60 digits, the same at both ends: each side's 30 digits, the lower string first."""
    local = side_fingerprint(local_key, local_id, iterations)
    remote = side_fingerprint(remote_key, remote_id, iterations)
    return local + remote if local < remote else remote + local


def format_safety_number(number: str) -> str:
    """Render 60 digits as 12 groups of 5 separated by spaces."""
    if len(number) != 60 or not number.isdigit():
        raise ValueError("a safety number is 60 digits")
    return " ".join(number[i : i + 5] for i in range(0, 60, 5))
