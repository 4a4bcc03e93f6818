"""Safety numbers reproduce libsignal's displayable fingerprint and are symmetric between the two ends."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ratchet.fingerprint import format_safety_number, safety_number, side_fingerprint
from tests.support.handshake_fixtures import ALICE, BOB, MALLORY

VECTORS = Path(__file__).parents[1] / "vectors" / "fingerprint.json"
# libsignal rust/protocol/src/fingerprint.rs, fingerprint_test_v1 (5200 iterations).
SIGNAL_ALICE = bytes.fromhex("0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868")
SIGNAL_BOB = bytes.fromhex("05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b")
SIGNAL_DISPLAY = "300354477692869396892869876765458257569162576843440918079131"


def test_reproduces_libsignal_vector_from_both_ends() -> None:
    a_id, b_id = b"+14152222222", b"+14153333333"
    assert safety_number(SIGNAL_ALICE, a_id, SIGNAL_BOB, b_id) == SIGNAL_DISPLAY
    assert safety_number(SIGNAL_BOB, b_id, SIGNAL_ALICE, a_id) == SIGNAL_DISPLAY


def _reference_digits(key: bytes, stable_id: bytes, iterations: int) -> str:
    """Straight transcription of the algorithm, for the cross-check (scannable prefix per libsignal too)."""
    h = hashlib.sha512(b"\x00\x00" + key + stable_id + key).digest()
    for _ in range(iterations - 1):
        h = hashlib.sha512(h + key).digest()
    return "".join(f"{int.from_bytes(h[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5))


def test_iteration_count_semantics_match_libsignal_scannable_prefix() -> None:
    # libsignal's scannable fingerprint embeds the first 32 bytes of Alice's digest: it pins "iterations"
    # as the total number of SHA-512 calls (iteration 0 included).
    h = hashlib.sha512(b"\x00\x00" + SIGNAL_ALICE + b"+14152222222" + SIGNAL_ALICE).digest()
    for _ in range(5199):
        h = hashlib.sha512(h + SIGNAL_ALICE).digest()
    assert h[:32].hex() == "1e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df"
    assert side_fingerprint(SIGNAL_ALICE, b"+14152222222") == _reference_digits(SIGNAL_ALICE, b"+14152222222", 5200)


def test_our_identities_and_aors() -> None:
    a, b, m = (k.public.serialize() for k in (ALICE, BOB, MALLORY))
    sn = safety_number(a, b"alice@atlanta.example", b, b"bob@biloxi.example", iterations=64)
    assert sn == safety_number(b, b"bob@biloxi.example", a, b"alice@atlanta.example", iterations=64)
    assert len(sn) == 60 and sn.isdigit()
    assert sn != safety_number(a, b"alice@atlanta.example", m, b"bob@biloxi.example", iterations=64)
    assert sn != safety_number(a, b"alice@atlanta.example", b, b"bob@other.example", iterations=64)


def test_vectors_file() -> None:
    for case in json.loads(VECTORS.read_text())["cases"]:
        lk, rk = bytes.fromhex(case["local_key"]), bytes.fromhex(case["remote_key"])
        li, ri, n = case["local_id"].encode(), case["remote_id"].encode(), case["iterations"]
        assert safety_number(lk, li, rk, ri, n) == case["safety_number"]
        digits = sorted([_reference_digits(lk, li, n), _reference_digits(rk, ri, n)])
        assert "".join(digits) == case["safety_number"]
        if "local_digits" in case:
            assert side_fingerprint(lk, li, n) == case["local_digits"]


def test_format_and_bounds() -> None:
    formatted = format_safety_number(SIGNAL_DISPLAY)
    assert formatted.split(" ") == [SIGNAL_DISPLAY[i : i + 5] for i in range(0, 60, 5)]
    assert len(formatted.split(" ")) == 12
    for bad in ("123", "x" * 60, SIGNAL_DISPLAY + "1"):
        with pytest.raises(ValueError):
            format_safety_number(bad)
    with pytest.raises(ValueError):
        safety_number(SIGNAL_ALICE, b"a", SIGNAL_BOB, b"b", iterations=1)
