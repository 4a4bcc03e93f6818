"""Per-call short authentication string (SAS) with the offerer's commitment against SAS grinding.

Computes the commitment, checks a reveal and derives the SAS shown to users; it never transports the reveal
(the media layer carries it in-band) and never decides trust (the UI and the contact store do).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from .kdf import hkdf
from .pgpwords import even_word, odd_word

SAS_SECRET_LEN = 16
SAS_COMMITMENT_LEN = 16
SAS_VALUE_LEN = 4
LABEL_SAS_COMMIT = b"voipgw-v1 sas commit"
LABEL_SAS_VALUE = b"voipgw-v1 sas value"
B32_ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"
"""RFC 6189 §5.1.6 (ZRTP) base32 alphabet, chosen to be unambiguous when read aloud."""
B32_CHARS = 4


def sas_commitment(secret: bytes | bytearray) -> bytes:
    """commitment = SHA-256("voipgw-v1 sas commit" ‖ r)[:16], signed in the offer."""
    if len(secret) != SAS_SECRET_LEN:
        raise ValueError("SAS secret must be 16 bytes")
    return hashlib.sha256(LABEL_SAS_COMMIT + bytes(secret)).digest()[:SAS_COMMITMENT_LEN]


def verify_sas_reveal(commitment: bytes, secret: bytes | bytearray) -> bool:
    """True when ``secret`` opens ``commitment`` (constant-time comparison)."""
    if len(secret) != SAS_SECRET_LEN or len(commitment) != SAS_COMMITMENT_LEN:
        return False
    return hmac.compare_digest(sas_commitment(secret), bytes(commitment))


@dataclass(frozen=True)
class Sas:
    """What both users read to each other. ``b32`` carries 20 bits, ``words`` 16 bits."""

    b32: str
    words: tuple[str, str]

    def __str__(self) -> str:
        return f"{self.b32} ({self.words[0]} {self.words[1]})"


def sas_value(sas_seed: bytes | bytearray, secret: bytes | bytearray) -> bytes:
    """The 4 raw SAS bytes: HKDF(salt=r, ikm=sas_seed, info="voipgw-v1 sas value", 4)."""
    if len(secret) != SAS_SECRET_LEN:
        raise ValueError("SAS secret must be 16 bytes")
    return hkdf(bytes(secret), bytes(sas_seed), LABEL_SAS_VALUE, SAS_VALUE_LEN)


def render_b32(value: bytes) -> str:
    """Leftmost 20 bits of ``value`` as 4 characters of the RFC 6189 alphabet, most significant first."""
    bits = int.from_bytes(value[:4], "big") >> 12
    return "".join(B32_ALPHABET[(bits >> shift) & 0x1F] for shift in (15, 10, 5, 0))


def compute_sas(sas_seed: bytes | bytearray, secret: bytes | bytearray) -> Sas:
    """The SAS of a call, from the handshake's ``sas_seed`` and the offerer's revealed secret ``r``."""
    value = sas_value(sas_seed, secret)
    return Sas(b32=render_b32(value), words=(even_word(value[0]), odd_word(value[1])))
