"""Look-alike AORs (voipgw.lookalike) as a table: case variants and Unicode homoglyphs of a known AOR are caught,
different names are not, and an AOR never resembles itself."""

from __future__ import annotations

import pytest

from voipgw.lookalike import look_alike, skeletons

KNOWN = ["alice@example.org", "bob@example.org"]


@pytest.mark.parametrize(
    ("aor", "resembles"),
    [
        ("\u0430lice@example.org", "alice@example.org"),  # Cyrillic a
        ("ALICE@example.org", "alice@example.org"),
        ("Alice@example.org", "alice@example.org"),
        ("a1ice@example.org", "alice@example.org"),  # digit one
        ("aIice@example.org", "alice@example.org"),  # capital i
        ("alice@examp1e.org", "alice@example.org"),
        ("b\u043eb@example.org", "bob@example.org"),  # Cyrillic o
        ("\uff41lice@example.org", "alice@example.org"),  # fullwidth a (NFKC)
        ("alice@example.org", None),  # itself
        ("alicia@example.org", None),
        ("carol@example.org", None),
        ("bobby@example.org", None),
    ],
)
def test_look_alikes(aor: str, resembles: str | None) -> None:
    assert look_alike(aor, KNOWN) == resembles


def test_skeletons_are_ascii_for_latin_look_alikes() -> None:
    assert skeletons("\u0430lice@example.org") == skeletons("alice@example.org")
    assert all(s.isascii() for s in skeletons("\u0430lice@example.org"))
