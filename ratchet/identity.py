"""Long-term Ed25519 identity keys: generation, signing, the 33-byte wire form and PKCS#8 PEM.

Pure computation on bytes: file I/O and permissions belong to ``voipgw.store.keyfile``. No repr shows secrets.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InternalError, InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import (
    BadSignature,
    MalformedIdentityFile,
    MalformedIdentityKey,
    PassphraseRequired,
    WrongPassphrase,
)

KEY_TYPE_ED25519 = 0x01
"""First byte of a serialized identity public key; leaves room for other signature schemes."""
RAW_KEY_LEN = 32
SERIALIZED_LEN = 1 + RAW_KEY_LEN
SIGNATURE_LEN = 64


class IdentityPublicKey:
    """A peer's (or our own) identity public key; equality and hashing follow the 33-byte serialization."""

    __slots__ = ("_key", "_serialized")

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self._serialized = bytes([KEY_TYPE_ED25519]) + key.public_bytes_raw()

    @classmethod
    def from_bytes(cls, data: bytes) -> IdentityPublicKey:
        """Parse ``type byte 0x01 ‖ 32 raw Ed25519 bytes``; anything else raises MalformedIdentityKey."""
        if len(data) != SERIALIZED_LEN:
            raise MalformedIdentityKey(f"identity key must be {SERIALIZED_LEN} bytes, got {len(data)}")
        if data[0] != KEY_TYPE_ED25519:
            raise MalformedIdentityKey(f"unknown identity key type 0x{data[0]:02x}")
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes(data[1:]))
        except ValueError as exc:
            raise MalformedIdentityKey("invalid Ed25519 public key") from exc
        return cls(key)

    def serialize(self) -> bytes:
        return self._serialized

    def verify(self, signature: bytes, message: bytes) -> None:
        """Raise BadSignature unless ``signature`` is this key's Ed25519 signature over ``message``."""
        if len(signature) != SIGNATURE_LEN:
            raise BadSignature("signature has the wrong length")
        try:
            self._key.verify(bytes(signature), bytes(message))
        except InvalidSignature as exc:
            raise BadSignature("Ed25519 signature does not verify") from exc

    def fingerprint_hex(self) -> str:
        """Short SHA-256 fingerprint, for logs (not for verification: use the safety number)."""
        return hashlib.sha256(self._serialized).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdentityPublicKey) and other._serialized == self._serialized

    def __hash__(self) -> int:
        return hash(self._serialized)

    def __repr__(self) -> str:
        return f"IdentityPublicKey({self.fingerprint_hex()})"


class IdentityKey:
    """Our long-term identity (private). Signs handshakes; never exposes its private bytes except as PEM."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self._public = IdentityPublicKey(key.public_key())

    @classmethod
    def generate(cls) -> IdentityKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> IdentityKey:
        """Deterministic key from a 32-byte Ed25519 seed (test vectors, recovery)."""
        if len(seed) != RAW_KEY_LEN:
            raise ValueError("Ed25519 seed must be 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    @property
    def public(self) -> IdentityPublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        """64-byte Ed25519 signature over ``message``."""
        return self._key.sign(bytes(message))

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        """PKCS#8 PEM; encrypted with the library's best available scheme when a passphrase is given."""
        encryption: serialization.KeySerializationEncryption
        encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | None = None) -> IdentityKey:
        """Load a PEM written by :meth:`to_pem`. Typed errors: PassphraseRequired, WrongPassphrase,
        MalformedIdentityFile (not PEM, or not an Ed25519 key)."""
        encrypted = b"ENCRYPTED PRIVATE KEY" in data
        if encrypted and not passphrase:
            raise PassphraseRequired("the identity key is passphrase-protected")
        if not encrypted and passphrase:
            raise WrongPassphrase("a passphrase was given but the identity key is not encrypted")
        try:
            key = serialization.load_pem_private_key(data, password=passphrase or None)
        except (ValueError, TypeError, UnsupportedAlgorithm, InternalError) as exc:
            # InternalError: OpenSSL refuses some well-formed PKCS#8 wrappers around bad key bytes (fuzzer
            # corpus identity/x25519-oid-bad-key.pem); to the user that is just another corrupt file.
            if encrypted:
                raise WrongPassphrase("cannot decrypt the identity key (wrong passphrase?)") from exc
            raise MalformedIdentityFile("not a PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise MalformedIdentityFile("the PEM key is not an Ed25519 key")
        return cls(key)

    def __repr__(self) -> str:
        return f"IdentityKey(public={self._public.fingerprint_hex()})"
