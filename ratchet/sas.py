"""Per-call short authentication string (SAS) from two committed contributions (docs/PROTOCOL.md §A.6).

The offerer commits to ``r`` in the OFFER and the answerer to ``s`` in the ANSWER; the SAS depends on both, so
neither side (nor a man in the middle on either leg) can compute it before the other's reveal. This module
computes the commitments, checks a reveal and derives the SAS shown to users; it never transports a reveal
(the media layer carries it in-band), never decides when to reveal (the call layer does) and never decides
trust (the UI and the contact store do).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from .kdf import hkdf
from .params import Role
from .pgpwords import even_word, odd_word

SAS_SECRET_LEN = 16
SAS_COMMITMENT_LEN = 16
SAS_VALUE_LEN = 4
LABEL_SAS_COMMIT_OFFERER = b"voipgw-v2 sas commit offerer"
LABEL_SAS_COMMIT_ANSWERER = b"voipgw-v2 sas commit answerer"
LABEL_SAS_VALUE = b"voipgw-v2 sas value"
B32_ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"
"""RFC 6189 §5.1.6 (ZRTP) base32 alphabet, chosen to be unambiguous when read aloud."""
B32_CHARS = 4

_COMMIT_LABELS = {Role.OFFERER: LABEL_SAS_COMMIT_OFFERER, Role.ANSWERER: LABEL_SAS_COMMIT_ANSWERER}


def _check_secret(secret: bytes | bytearray, what: str = "SAS secret") -> None:
    if len(secret) != SAS_SECRET_LEN:
        raise ValueError(f"{what} must be 16 bytes")


def sas_commitment(secret: bytes | bytearray, committer: Role) -> bytes:
    """SHA-256(label ‖ secret)[:16], the label naming who commits: the offerer's ``r`` is signed in the offer
    ("voipgw-v2 sas commit offerer"), the answerer's ``s`` in the answer ("voipgw-v2 sas commit answerer").
    Distinct labels keep a reveal of one side from ever opening the other side's commitment."""
    _check_secret(secret)
    return hashlib.sha256(_COMMIT_LABELS[committer] + bytes(secret)).digest()[:SAS_COMMITMENT_LEN]


def verify_sas_reveal(commitment: bytes, secret: bytes | bytearray, committer: Role) -> bool:
    """True when ``secret`` opens ``committer``'s ``commitment`` (constant-time comparison)."""
    if len(secret) != SAS_SECRET_LEN or len(commitment) != SAS_COMMITMENT_LEN:
        return False
    return hmac.compare_digest(sas_commitment(secret, committer), bytes(commitment))


@dataclass(frozen=True)
class Sas:
    """What both users read to each other. ``b32`` carries 20 bits, ``words`` 16 bits."""

    b32: str
    words: tuple[str, str]

    def __str__(self) -> str:
        return f"{self.b32} ({self.words[0]} {self.words[1]})"


def sas_value(sas_seed: bytes | bytearray, r: bytes | bytearray, s: bytes | bytearray) -> bytes:
    """The 4 raw SAS bytes: HKDF(salt = r ‖ s, ikm = sas_seed, info = "voipgw-v2 sas value", 4)."""
    _check_secret(r, "the offerer's SAS secret r")
    _check_secret(s, "the answerer's SAS secret s")
    return hkdf(bytes(r) + bytes(s), bytes(sas_seed), LABEL_SAS_VALUE, SAS_VALUE_LEN)


def render_b32(value: bytes) -> str:
    """Leftmost 20 bits of ``value`` as 4 characters of the RFC 6189 alphabet, most significant first."""
    bits = int.from_bytes(value[:4], "big") >> 12
    return "".join(B32_ALPHABET[(bits >> shift) & 0x1F] for shift in (15, 10, 5, 0))


def compute_sas(sas_seed: bytes | bytearray, r: bytes | bytearray, s: bytes | bytearray) -> Sas:
    """The SAS of a call, from the handshake's ``sas_seed``, the offerer's ``r`` and the answerer's ``s``."""
    value = sas_value(sas_seed, r, s)
    return Sas(b32=render_b32(value), words=(even_word(value[0]), odd_word(value[1])))
