"""Key-derivation primitives shared by the handshake and the media ratchet (HKDF-SHA256, KDF_RK).

Every label used anywhere in the protocol is defined here, so PROTOCOL.md and the code cannot drift apart.
"""

from __future__ import annotations

import hmac

HASH_LEN = 32

# Labels (ASCII, no terminator). Changing any of these changes the wire protocol.
LABEL_ROOT = b"voipgw-v1 root "
LABEL_CHAIN = b"voipgw-v1 chain "
LABEL_TIME = b"voipgw-v1 time "
LABEL_SAS = b"voipgw-v1 sas"
LABEL_RATCHET = b"voipgw-v1 ratchet"
LABEL_PQ_RATCHET = b"voipgw-v1 pq ratchet"
LABEL_TIME_KEY = b"voipgw-v1 time key"
LABEL_FRAME_KEY = b"vgw1fk"
LABEL_FRAME_KEY_PER_FRAME = b"vgw1ff"
LABEL_KCV = b"vgw1kcv"
LABEL_CHAIN_ID = b"vgw1cid"


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """RFC 5869 HKDF-Extract with SHA-256 (an empty salt means 32 zero bytes)."""
    return hmac.digest(salt or bytes(HASH_LEN), ikm, "sha256")


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-Expand with SHA-256."""
    if length > 255 * HASH_LEN:
        raise ValueError("HKDF output too long")
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        out += block
        counter += 1
    return bytes(out[:length])


def hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


def kdf_rk(root_key: bytes, dh_output: bytes) -> tuple[bytes, bytes]:
    """Double Ratchet KDF_RK: HKDF salted with the root key over the DH output.

    Returns ``(next_root_key, chain_key)``.
    """
    out = hkdf(root_key, dh_output, LABEL_RATCHET, 64)
    return out[:32], out[32:]


def kdf_rk_pq(root_key: bytes, dh_output: bytes, kem_secret: bytes) -> tuple[bytes, bytes]:
    """KDF_RK of a DH step that also mixes a completed in-call ML-KEM-768 exchange (PROTOCOL.md §B.12): HKDF
    salted with the root key over ``dh ‖ kem_secret``, under its own label. Returns ``(next_root_key, chain_key)``.
    """
    out = hkdf(root_key, dh_output + kem_secret, LABEL_PQ_RATCHET, 64)
    return out[:32], out[32:]
