"""Deterministic vectors for the in-call post-quantum ratchet (docs/PROTOCOL.md §B.12): the 256 PQ_CHUNK TLVs of an
ML-KEM-768 encapsulation key and of a ciphertext for it (zfec's systematic Reed-Solomon code, via
``voipgw.erasure``), a decoding from a scattered subset of shares, KDF_RK_PQ, and a RATCHET_KEY_PQ TLV.

The ciphertext is a fixed 1088-byte string, not a fresh encapsulation (which is randomized): ML-KEM decapsulates
any ciphertext of the right length (implicit rejection), so its secret is still deterministic. Every secret is
public test data. ``python -m tests.vectors.gen_pq`` (re)writes tests/vectors/pq.json.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey

from ratchet.frame import RatchetKeyAnnouncement
from ratchet.kdf import kdf_rk_pq
from ratchet.pq_chunks import CIPHERTEXT_LEN, SHARES, Kind, blocks_needed, digest, encode_message
from tests.vectors.gen_frames import VECTOR_DIR
from voipgw.erasure import ZfecCoder

FILE = "pq.json"
EXCHANGE = 5


def _h(label: str, n: int = 32) -> bytes:
    return hashlib.shake_256(b"voipgw pq test vector " + label.encode()).digest(n)


def generate() -> dict[str, object]:
    coder = ZfecCoder()
    seed = _h("ml-kem seed", 64)
    dk = MLKEM768PrivateKey.from_seed_bytes(seed)
    ek = dk.public_key().public_bytes_raw()
    ct = _h("ciphertext", CIPHERTEXT_LEN)
    secret = dk.decapsulate(ct)

    def message(kind: Kind, data: bytes) -> dict[str, object]:
        return {
            "exchange": EXCHANGE,
            "kind": int(kind),
            "k": blocks_needed(kind),
            "n": SHARES,
            "message": data.hex(),
            "digest": digest(kind, EXCHANGE, data).hex(),
            "chunk_tlvs": [t.hex() for t in encode_message(coder, kind, EXCHANGE, data)],
        }

    k = blocks_needed(Kind.CIPHERTEXT)
    indexes = sorted(random.Random(18).sample(range(SHARES), k))
    root, dh = _h("root"), _h("dh")
    new_root, chain = kdf_rk_pq(root, dh, secret)
    announcement = RatchetKeyAnnouncement(3, 2, 1234, _h("ratchet public"), EXCHANGE)
    return {
        "ml_kem_seed": seed.hex(),
        "encaps_key": message(Kind.ENCAPS_KEY, ek),
        "ciphertext": message(Kind.CIPHERTEXT, ct),
        "kem_secret": secret.hex(),
        "decode_ciphertext_from": indexes,
        "kdf_rk_pq": {
            "root": root.hex(),
            "dh": dh.hex(),
            "kem_secret": secret.hex(),
            "new_root": new_root.hex(),
            "chain": chain.hex(),
        },
        "ratchet_key_pq": {
            "epoch": 3,
            "peer_epoch": 2,
            "start_counter": 1234,
            "public": announcement.public_key.hex(),
            "exchange": EXCHANGE,
            "tlv": announcement.encode().hex(),
        },
    }


def main() -> int:
    (VECTOR_DIR / FILE).write_text(json.dumps(generate(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {VECTOR_DIR / FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
