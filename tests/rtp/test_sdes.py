"""The RFC 4568 ``a=crypto`` attribute (voipgw.rtp.sdes): what parses, what is refused with which typed error, and
that a key never shows in a repr or an error."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voipgw.rtp.sdes import (
    KEY_SALT_BYTES,
    SUITE,
    BadKey,
    CryptoAttribute,
    MalformedCrypto,
    SdesError,
    UnsupportedParameter,
    UnsupportedSuite,
    choose_crypto,
    new_crypto,
    parse_crypto,
)

KEY = bytes(range(KEY_SALT_BYTES))
INLINE = base64.b64encode(KEY).decode()


def test_build_and_parse_round_trip() -> None:
    attr = new_crypto(7)
    assert parse_crypto(attr.render()) == attr
    assert attr.render().startswith(f"7 {SUITE} inline:")
    assert new_crypto().key_salt != new_crypto().key_salt


def test_baresip_line_parses() -> None:
    # As baresip's srtp module writes it (RTP/SAVP offer).
    attr = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE}")
    assert attr == CryptoAttribute(1, KEY)


@pytest.mark.parametrize("lifetime", ["2^31", "2^20", "1048576"])
def test_lifetime_accepted(lifetime: str) -> None:
    assert parse_crypto(f"1 {SUITE} inline:{INLINE}|{lifetime}").key_salt == KEY


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("", MalformedCrypto),
        ("1 AES_CM_128_HMAC_SHA1_80", MalformedCrypto),
        (f"x {SUITE} inline:{INLINE}", MalformedCrypto),
        (f"1234567890 {SUITE} inline:{INLINE}", MalformedCrypto),
        (f"1 {SUITE} uri:{INLINE}", MalformedCrypto),
        (f"1 {SUITE} inline:{INLINE}|2^99", BadKey),
        (f"1 {SUITE} inline:{INLINE}|0", BadKey),
        (f"1 {SUITE} inline:{INLINE}|soon", MalformedCrypto),
        (f"1 {SUITE} inline:{INLINE}|2^20|1:4", UnsupportedParameter),  # MKI
        (f"1 {SUITE} inline:{INLINE};inline:{INLINE}", UnsupportedParameter),
        (f"1 {SUITE} inline:{INLINE} UNENCRYPTED_SRTP", UnsupportedParameter),
        (f"1 AES_CM_128_HMAC_SHA1_32 inline:{INLINE}", UnsupportedSuite),
        (f"1 F8_128_HMAC_SHA1_80 inline:{INLINE}", UnsupportedSuite),
        (f"1 {SUITE} inline:{INLINE[:-4]}", BadKey),  # 27 bytes
        (f"1 {SUITE} inline:{INLINE}AAAA", BadKey),  # 33 bytes
        (f"1 {SUITE} inline:not*base64", BadKey),
        (f"1 {SUITE} inline:{INLINE}\x00", MalformedCrypto),
        ("1 " + SUITE + " inline:" + "A" * 600, MalformedCrypto),
    ],
)
def test_refused_with_a_typed_error(value: str, error: type[SdesError]) -> None:
    with pytest.raises(error) as info:
        parse_crypto(value)
    assert info.value.reason.startswith("sdes-")
    assert INLINE not in str(info.value)


def test_key_never_in_repr() -> None:
    attr = CryptoAttribute(1, KEY)
    assert INLINE not in repr(attr) and repr(KEY) not in repr(attr)


def test_choose_first_usable() -> None:
    other = base64.b64encode(b"\x01" * KEY_SALT_BYTES).decode()
    lines = (f"1 AES_256_CM_HMAC_SHA1_80 inline:{INLINE}{INLINE}", f"2 {SUITE} inline:{other}")
    assert choose_crypto(lines).tag == 2
    with pytest.raises(UnsupportedSuite):
        choose_crypto(lines[:1])
    with pytest.raises(MalformedCrypto):
        choose_crypto(())


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_raises_a_typed_error(value: str) -> None:
    try:
        attr = parse_crypto(value)
    except SdesError as exc:
        assert exc.reason.startswith("sdes-")
    else:
        assert len(attr.key_salt) == KEY_SALT_BYTES


@settings(max_examples=300, deadline=None)
@given(
    tag=st.integers(0, 10**10),
    suite=st.sampled_from([SUITE, "AES_CM_128_HMAC_SHA1_32", "", "x"]),
    key=st.binary(max_size=40),
    tail=st.sampled_from(["", "|2^31", "|1:4", "|2^20|1:4", ";inline:AAAA", " KDR=1", "|", "||"]),
)
def test_near_miss_lines(tag: int, suite: str, key: bytes, tail: str) -> None:
    value = f"{tag} {suite} inline:{base64.b64encode(key).decode()}{tail}"
    try:
        attr = parse_crypto(value)
    except SdesError:
        return
    assert suite == SUITE and len(key) == KEY_SALT_BYTES and tag <= 999_999_999 and tail in ("", "|2^31")
    assert attr.key_salt == key
