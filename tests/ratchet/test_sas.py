"""SAS: both commitments and their reveals, the dependence on both contributions, the B32 and PGP-word renderings,
the exact word list, and the vectors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratchet import pgpwords
from ratchet.kdf import hkdf
from ratchet.params import Role
from ratchet.sas import (
    B32_ALPHABET,
    Sas,
    compute_sas,
    render_b32,
    sas_commitment,
    sas_value,
    verify_sas_reveal,
)

VECTORS = Path(__file__).parents[1] / "vectors" / "sas.json"
PGP_WORDS_SHA256 = "e9b7b0052233a74aa56724ed3f79c272036aed68d8f4c0856e833c8043b9ac62"


def test_pgp_word_list_is_exact() -> None:
    joined = "\n".join(pgpwords.EVEN_WORDS + pgpwords.ODD_WORDS).encode()
    assert hashlib.sha256(joined).hexdigest() == PGP_WORDS_SHA256
    assert len(set(pgpwords.EVEN_WORDS)) == 256 and len(set(pgpwords.ODD_WORDS)) == 256
    assert (pgpwords.even_word(0x00), pgpwords.odd_word(0x00)) == ("aardvark", "adroitness")
    assert (pgpwords.even_word(0xFF), pgpwords.odd_word(0xFF)) == ("Zulu", "Yucatan")
    assert (pgpwords.even_word(0x17), pgpwords.odd_word(0x17)) == ("banjo", "bookseller")
    # Even words have two syllables, odd words three: the lists never share a word.
    assert not {w.lower() for w in pgpwords.EVEN_WORDS} & {w.lower() for w in pgpwords.ODD_WORDS}


def test_pgp_word_encoding_matches_published_examples() -> None:
    # The example in the Wikipedia "PGP word list" article, also used by independent implementations.
    data = bytes.fromhex("E58294F2E9A227486E8B061B31CC528FD7FA3F19")
    assert " ".join(pgpwords.encode(data)) == (
        "topmost Istanbul Pluto vagabond treadmill Pacific brackish dictator goldfish Medusa "
        "afflict bravado chatter revolver Dupont midsummer stopwatch whimsical cowbell bottomless"
    )
    data = bytes.fromhex("12b4b0057400076fa5c0f5cbf726ac65")
    assert " ".join(pgpwords.encode(data)) == (
        "atlas politeness ruffled almighty indoors adroitness ahead hemisphere reindeer recipe "
        "vapor revival virus caretaker ribcage glossary"
    )


def test_b32_rendering_uses_leftmost_20_bits() -> None:
    assert B32_ALPHABET == "ybndrfg8ejkmcpqxot1uwisza345h769"
    assert render_b32(bytes(4)) == "yyyy"
    assert render_b32(b"\xff\xff\xf0\x00") == "9999"
    assert render_b32(b"\x00\x00\x0f\xff") == "yyyy"  # the low 12 bits do not count
    assert render_b32(b"\x08\x42\x10\x00") == "bbbb"  # 00001 00001 00001 00001


def test_commitment_and_reveal() -> None:
    r, s = bytes(range(16)), bytes(range(16, 32))
    c = sas_commitment(r, Role.OFFERER)
    d = sas_commitment(s, Role.ANSWERER)
    assert c == hashlib.sha256(b"voipgw-v2 sas commit offerer" + r).digest()[:16]
    assert d == hashlib.sha256(b"voipgw-v2 sas commit answerer" + s).digest()[:16]
    assert verify_sas_reveal(c, r, Role.OFFERER) and verify_sas_reveal(c, bytearray(r), Role.OFFERER)
    assert verify_sas_reveal(d, s, Role.ANSWERER)
    assert not verify_sas_reveal(c, bytes(16), Role.OFFERER)
    assert not verify_sas_reveal(c, r[:15], Role.OFFERER)
    assert not verify_sas_reveal(c[:8], r, Role.OFFERER)
    # Domain separation: a secret never opens the other role's commitment to the same bytes.
    assert not verify_sas_reveal(sas_commitment(r, Role.ANSWERER), r, Role.OFFERER)
    assert not verify_sas_reveal(c, r, Role.ANSWERER)
    with pytest.raises(ValueError):
        sas_commitment(b"short", Role.OFFERER)


@given(
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=16, max_size=16),
    st.sampled_from(list(Role)),
    st.sampled_from(list(Role)),
)
def test_a_commitment_opens_only_with_its_secret_and_role(
    secret: bytes, other: bytes, committer: Role, claimed: Role
) -> None:
    """Property: a commitment opens with exactly the secret and the role that made it."""
    commitment = sas_commitment(secret, committer)
    assert verify_sas_reveal(commitment, secret, claimed) == (claimed is committer)
    if other != secret:
        assert not verify_sas_reveal(commitment, other, committer)


def test_sas_depends_on_seed_and_both_contributions() -> None:
    seed, r, s = bytes(32), bytes(16), bytes(range(16))
    base = compute_sas(seed, r, s)
    assert compute_sas(b"\x01" + seed[1:], r, s) != base
    assert compute_sas(seed, b"\x01" + r[1:], s) != base
    assert compute_sas(seed, r, b"\x01" + s[1:]) != base
    assert compute_sas(seed, s, r) != base  # the order is part of the construction
    value = sas_value(seed, r, s)
    assert value == hkdf(r + s, seed, b"voipgw-v2 sas value", 4)
    assert base.words == (pgpwords.EVEN_WORDS[value[0]], pgpwords.ODD_WORDS[value[1]])
    assert str(base) == f"{base.b32} ({base.words[0]} {base.words[1]})"
    with pytest.raises(ValueError):
        compute_sas(seed, r, s[:15])


def test_the_answer_alone_no_longer_fixes_the_sas() -> None:
    """The v1 oracle: an offerer (or a man in the middle offering to a callee) knew the SAS from the answer alone,
    since it was f(sas_seed, r) and it holds both. Now the same transcript (same seed, same r) with two different
    answerer contributions gives different SAS over a batch of seeds: the SAS depends on s, which stays hidden
    behind its commitment until the callee reveals it."""
    r = bytes(range(16))
    s1, s2 = b"\x01" * 16, b"\x02" * 16
    seeds = [hashlib.sha256(b"seed %d" % i).digest() for i in range(64)]
    differ = sum(compute_sas(seed, r, s1) != compute_sas(seed, r, s2) for seed in seeds)
    assert differ >= 63  # 2^-20 per seed of a collision


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_sas_shape(seed: bytes, r: bytes, s: bytes) -> None:
    sas = compute_sas(seed, r, s)
    assert len(sas.b32) == 4 and set(sas.b32) <= set(B32_ALPHABET)
    assert sas.words[0] in pgpwords.EVEN_WORDS and sas.words[1] in pgpwords.ODD_WORDS
    assert verify_sas_reveal(sas_commitment(r, Role.OFFERER), r, Role.OFFERER)


def test_sas_vectors() -> None:
    cases = json.loads(VECTORS.read_text())["cases"]
    assert len(cases) == 8
    for case in cases:
        seed, r, s = (bytes.fromhex(case[k]) for k in ("sas_seed", "r", "s"))
        # Recomputed without ratchet.sas: hashlib and the HKDF primitive only.
        assert hashlib.sha256(b"voipgw-v2 sas commit offerer" + r).digest()[:16].hex() == case["offer_commitment"]
        assert hashlib.sha256(b"voipgw-v2 sas commit answerer" + s).digest()[:16].hex() == case["answer_commitment"]
        assert sas_commitment(r, Role.OFFERER).hex() == case["offer_commitment"]
        assert sas_commitment(s, Role.ANSWERER).hex() == case["answer_commitment"]
        value = hkdf(r + s, seed, b"voipgw-v2 sas value", 4)
        assert value.hex() == case["value"]
        assert compute_sas(seed, r, s) == Sas(b32=case["b32"], words=tuple(case["words"]))
        bits = int.from_bytes(value, "big") >> 12
        assert case["b32"] == "".join(B32_ALPHABET[(bits >> (15 - 5 * i)) & 31] for i in range(4))
