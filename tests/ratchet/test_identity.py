"""Identity keys (wire form, signatures, PEM) and AOR normalization."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratchet import errors
from ratchet.aor import normalize_aor
from ratchet.identity import IdentityKey, IdentityPublicKey

SEED = bytes(range(32))


def test_public_key_wire_form_round_trip() -> None:
    key = IdentityKey.from_seed(SEED)
    wire = key.public.serialize()
    assert len(wire) == 33 and wire[0] == 0x01
    assert IdentityPublicKey.from_bytes(wire) == key.public
    assert hash(IdentityPublicKey.from_bytes(wire)) == hash(key.public)
    assert IdentityKey.from_seed(SEED).public == key.public  # deterministic from the seed
    assert IdentityKey.generate().public != key.public


@pytest.mark.parametrize("wire", [b"", b"\x01" + bytes(31), b"\x01" + bytes(33), b"\x05" + bytes(32)])
def test_malformed_public_keys(wire: bytes) -> None:
    with pytest.raises(errors.MalformedIdentityKey):
        IdentityPublicKey.from_bytes(wire)


def test_sign_and_verify() -> None:
    key = IdentityKey.from_seed(SEED)
    sig = key.sign(b"hello")
    assert len(sig) == 64
    key.public.verify(sig, b"hello")
    with pytest.raises(errors.BadSignature):
        key.public.verify(sig, b"hellO")
    with pytest.raises(errors.BadSignature):
        key.public.verify(sig[:-1], b"hello")
    with pytest.raises(errors.BadSignature):
        IdentityKey.generate().public.verify(sig, b"hello")


def test_pem_round_trip_plain_and_encrypted() -> None:
    key = IdentityKey.from_seed(SEED)
    plain = key.to_pem()
    assert b"BEGIN PRIVATE KEY" in plain
    assert IdentityKey.from_pem(plain).public == key.public
    enc = key.to_pem(b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in enc
    assert IdentityKey.from_pem(enc, b"correct horse").public == key.public
    with pytest.raises(errors.WrongPassphrase):
        IdentityKey.from_pem(enc, b"wrong")
    with pytest.raises(errors.PassphraseRequired):
        IdentityKey.from_pem(enc)
    with pytest.raises(errors.WrongPassphrase):
        IdentityKey.from_pem(plain, b"unexpected")
    with pytest.raises(errors.MalformedIdentityFile):
        IdentityKey.from_pem(b"not a key")


def test_pem_of_another_key_type_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    pem = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(errors.MalformedIdentityFile):
        IdentityKey.from_pem(pem)


def test_repr_hides_private_material() -> None:
    key = IdentityKey.from_seed(SEED)
    assert SEED.hex()[:16] not in repr(key) and "PRIVATE" not in repr(key)
    assert repr(key).startswith("IdentityKey(public=")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            '"Alice Liddell" <sip:alice@Atlanta.EXAMPLE:5060;transport=udp>;tag=9fxced76sl',
            "alice@atlanta.example",
        ),
        ("<sips:bob@biloxi.example?subject=project>", "bob@biloxi.example"),
        ("sip:Bob@biloxi.example", "Bob@biloxi.example"),  # the user part is case-sensitive
        ("SIP:carol:secret@chicago.example;lr", "carol@chicago.example"),
        ("sip:%61lice@atlanta.example", "alice@atlanta.example"),
        ("alice@atlanta.example", "alice@atlanta.example"),
        ("  sip:registrar.Biloxi.example:5070 ", "registrar.biloxi.example"),
        ("biloxi.example:5060", "biloxi.example"),
        ("sip:1001@[2001:DB8:0::1]:5060", "1001@[2001:db8::1]"),
        ("sip:1001@192.0.2.4", "1001@192.0.2.4"),
        (
            "sip:+14155550100;phone-context=example@gw.example",
            "+14155550100;phone-context=example@gw.example",
        ),
    ],
)
def test_normalize_aor(raw: str, expected: str) -> None:
    assert normalize_aor(raw) == expected
    assert normalize_aor(expected) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "tel:+14155550100", "mailto:a@b.example", "<sip:alice@atlanta.example", "sip:@host",
     "sip:a b@h", "sip:alice@", "sip:alice@host:port", "sip:alice@-bad-.example", "sip:alice@[::zz]",
     "sip:%ff@h", "sip:a%3Ab@h", "a>b", "sip:alice@ex ample.com", "x" * 3000],
)  # fmt: skip
def test_normalize_aor_rejects_garbage(raw: str) -> None:
    with pytest.raises(errors.MalformedAor):
        normalize_aor(raw)


@given(st.text(max_size=80))
def test_normalize_aor_is_idempotent_or_typed_error(raw: str) -> None:
    try:
        normal = normalize_aor(raw)
    except errors.MalformedAor:
        return
    assert normalize_aor(normal) == normal


def test_non_sip_schemes_are_refused_even_before_digits() -> None:
    from ratchet.aor import normalize_aor
    from ratchet.errors import MalformedAor

    with pytest.raises(MalformedAor, match="scheme"):
        normalize_aor("tel:123")
    assert normalize_aor("host.example:5060") == "host.example"
