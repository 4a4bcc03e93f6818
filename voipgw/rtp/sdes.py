"""SDES key transport (RFC 4568): the ``a=crypto`` attribute's value, parsed and built, and the inside leg's SRTP
mode. Only ``AES_CM_128_HMAC_SHA1_80`` with one inline key (optional lifetime, no MKI, no session parameters) is
usable; anything else raises a typed :class:`SdesError`. Never logs, and no ``repr`` shows key material."""

from __future__ import annotations

import base64
import binascii
import enum
import re
import secrets
from dataclasses import dataclass, field

SUITE = "AES_CM_128_HMAC_SHA1_80"
"""The one crypto suite we offer and accept (RFC 4568 §6.2.1; libsrtp's SRTP_AES128_CM_SHA1_80)."""
KEY_SALT_BYTES = 30
"""AES-128 master key (16 bytes) followed by the 112-bit master salt (14 bytes)."""
MAX_LIFETIME_LOG2 = 48
"""RFC 4568 §6.1: the key's lifetime is at most 2^48 packets for SRTP."""
MAX_ATTRIBUTE_CHARS = 512
_TAG_RE = re.compile(r"[0-9]{1,9}")
_LIFETIME_RE = re.compile(r"(?:2\^([0-9]{1,2})|([0-9]{1,15}))")


class SrtpMode(enum.Enum):
    """``inside.srtp``: whether the inside leg (gateway <-> phone) is SRTP."""

    OFF = "off"
    """Plain RTP only (a phone's crypto offer is answered with plain RTP/AVP)."""
    OPTIONAL = "optional"
    """SRTP when the phone offers or accepts it, else plain RTP."""
    REQUIRED = "required"
    """SRTP or no call: a phone offer without a usable crypto line is refused (488 with the reason)."""


class SdesError(ValueError):
    """A crypto attribute we cannot use; ``reason`` is a stable code for counters and SIP Warning texts."""

    reason = "sdes"

    def __init__(self, detail: str) -> None:
        super().__init__(f"{self.reason}: {detail}")
        self.detail = detail


class MalformedCrypto(SdesError):
    """Not an RFC 4568 ``<tag> <suite> inline:<key>`` value."""

    reason = "sdes-malformed"


class UnsupportedSuite(SdesError):
    """A well-formed line for a suite other than AES_CM_128_HMAC_SHA1_80."""

    reason = "sdes-unsupported-suite"


class BadKey(SdesError):
    """The inline key is not base64 of exactly 30 bytes, or its lifetime is out of range."""

    reason = "sdes-bad-key"


class UnsupportedParameter(SdesError):
    """An MKI, several keys or a session parameter (UNENCRYPTED_SRTP, KDR...): we would not honour it."""

    reason = "sdes-unsupported-parameter"


@dataclass(frozen=True)
class CryptoAttribute:
    """One usable ``a=crypto`` line: its tag (echoed in the answer) and the sender's master key and salt."""

    tag: int
    key_salt: bytes = field(repr=False)
    """The 30-byte master key || salt of whoever wrote the line (it encrypts what that side sends)."""
    suite: str = SUITE

    def __post_init__(self) -> None:
        if not 0 <= self.tag <= 999_999_999:
            raise MalformedCrypto(f"tag {self.tag} out of range")
        if len(self.key_salt) != KEY_SALT_BYTES:
            raise BadKey(f"key and salt are {len(self.key_salt)} bytes, not {KEY_SALT_BYTES}")

    def render(self) -> str:
        """The attribute value, for ``a=crypto:<value>``."""
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.key_salt).decode('ascii')}"


def new_crypto(tag: int = 1) -> CryptoAttribute:
    """A fresh random master key and salt (one per call and direction; never reused)."""
    return CryptoAttribute(tag, secrets.token_bytes(KEY_SALT_BYTES))


def parse_crypto(value: str) -> CryptoAttribute:
    """The value after ``a=crypto:``; raises a :class:`SdesError` subclass naming why it is not usable."""
    if len(value) > MAX_ATTRIBUTE_CHARS:
        raise MalformedCrypto(f"{len(value)} characters")
    if not value.isascii() or not value.isprintable():
        raise MalformedCrypto("not printable ASCII")
    parts = value.split()
    if len(parts) < 3:
        raise MalformedCrypto("fewer than three fields")
    tag_text, suite, key_params, *session = parts
    if not _TAG_RE.fullmatch(tag_text):
        raise MalformedCrypto("tag is not 1-9 digits")
    if suite != SUITE:
        raise UnsupportedSuite(suite[:40])
    if session:
        raise UnsupportedParameter(f"session parameter {session[0][:40]!r}")
    if ";" in key_params:
        raise UnsupportedParameter("more than one key")
    method, sep, info = key_params.partition(":")
    if method != "inline" or not sep:
        raise MalformedCrypto("key method is not inline")
    key_text, *extras = info.split("|")
    if len(extras) > 2:
        raise MalformedCrypto("too many key fields")
    for extra in extras:
        if ":" in extra:
            raise UnsupportedParameter("MKI")
        _check_lifetime(extra)
    try:
        key_salt = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError):
        raise BadKey("inline key is not base64") from None
    return CryptoAttribute(int(tag_text), key_salt, suite)


def _check_lifetime(text: str) -> None:
    m = _LIFETIME_RE.fullmatch(text)
    if m is None:
        raise MalformedCrypto("lifetime is neither 2^n nor a number")
    log2 = int(m.group(1)) if m.group(1) is not None else None
    count = int(m.group(2)) if m.group(2) is not None else None
    if (log2 is not None and not 1 <= log2 <= MAX_LIFETIME_LOG2) or (count is not None and not 1 <= count < 2**48):
        raise BadKey("lifetime out of range")


def choose_crypto(values: tuple[str, ...]) -> CryptoAttribute:
    """The first usable of an offer's crypto attribute values (RFC 4568 §7.1.1: the answerer picks one); raises
    the first line's error when none is usable, and MalformedCrypto when there is none at all."""
    first: SdesError | None = None
    for value in values:
        try:
            return parse_crypto(value)
        except SdesError as exc:
            first = first or exc
    raise first or MalformedCrypto("no a=crypto line")
