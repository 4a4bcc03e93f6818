"""The committed PQ ratchet vectors (tests/vectors/pq.json) are reproduced exactly, and every one of their chunks is
rebuilt by an independent implementation of the erasure code exactly as docs/PROTOCOL.md §B.12 specifies it
(Reed-Solomon by polynomial evaluation over GF(2^8), no zfec), so another implementation can interoperate."""

from __future__ import annotations

import hashlib
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ratchet.pq_chunks import Kind, Partial, parse_chunk
from tests.vectors import gen_frames, gen_pq
from voipgw.erasure import ZfecCoder

VECTORS = json.loads((gen_frames.VECTOR_DIR / gen_pq.FILE).read_text())

# GF(2^8) with the polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d), generator alpha = 2
EXP = [0] * 510
LOG = [0] * 256
_x = 1
for _i in range(255):
    EXP[_i] = EXP[_i + 255] = _x
    LOG[_x] = _i
    _x <<= 1
    if _x & 0x100:
        _x ^= 0x11D


def _mul(a: int, b: int) -> int:
    return 0 if a == 0 or b == 0 else EXP[LOG[a] + LOG[b]]


def _inv(a: int) -> int:
    return EXP[255 - LOG[a]]


def _point(i: int) -> int:
    """x_0 = 0, x_i = alpha^(i-1)."""
    return 0 if i == 0 else EXP[(i - 1) % 255]


def _row(i: int, k: int) -> list[int]:
    x = _point(i)
    return [1 if c == 0 else (0 if x == 0 else EXP[(LOG[x] * c) % 255]) for c in range(k)]


def _shares(blocks: list[bytes], n: int) -> list[bytes]:
    """Share i = P(x_i), P the polynomial of degree < k with P(x_j) = block j (j < k), bytewise."""
    k, width = len(blocks), len(blocks[0])
    m = [_row(j, k) + list(blocks[j]) for j in range(k)]  # [V_top | D]: solve V_top · C = D
    for col in range(k):
        pivot = next(r for r in range(col, k) if m[r][col])
        m[col], m[pivot] = m[pivot], m[col]
        f = _inv(m[col][col])
        m[col] = [_mul(f, v) for v in m[col]]
        for r in range(k):
            if r != col and m[r][col]:
                g = m[r][col]
                m[r] = [v ^ _mul(g, w) for v, w in zip(m[r], m[col], strict=True)]
    coeffs = [row[k:] for row in m]
    out = []
    for i in range(n):
        row = _row(i, k)
        share = [0] * width
        for c in range(k):
            if row[c]:
                share = [s ^ _mul(row[c], v) for s, v in zip(share, coeffs[c], strict=True)]
        out.append(bytes(share))
    return out


def test_generator_reproduces_committed_vectors() -> None:
    assert json.loads(json.dumps(gen_pq.generate(), sort_keys=True)) == VECTORS


def _check_message(v: dict[str, object]) -> None:
    message = bytes.fromhex(str(v["message"]))
    kind, exchange, k, n = int(v["kind"]), int(v["exchange"]), int(v["k"]), int(v["n"])  # type: ignore[call-overload]
    tag = hashlib.sha256(b"vgw1pqm" + bytes([kind, exchange]) + message).digest()[:8]
    assert tag.hex() == v["digest"]
    data = (message + tag).ljust(k * 12, b"\x00")
    blocks = [data[i * 12 : (i + 1) * 12] for i in range(k)]
    head = kind << 7 | exchange
    expected = [bytes([0x06, 14, head, i]) + share for i, share in enumerate(_shares(blocks, n))]
    assert [bytes.fromhex(t) for t in v["chunk_tlvs"]] == expected  # type: ignore[attr-defined]


def test_every_chunk_matches_an_independent_reed_solomon_encoder() -> None:
    _check_message(VECTORS["encaps_key"])
    _check_message(VECTORS["ciphertext"])


def test_the_ciphertext_decodes_from_the_listed_shares_and_decapsulates() -> None:
    v = VECTORS["ciphertext"]
    partial = Partial(Kind.CIPHERTEXT, v["exchange"])
    out = None
    for index in VECTORS["decode_ciphertext_from"]:
        kind, exchange, i, share = parse_chunk(bytes.fromhex(v["chunk_tlvs"][index])[2:])
        assert (kind, exchange, i) == (Kind.CIPHERTEXT, v["exchange"], index)
        out = partial.add(ZfecCoder(), i, share)
    assert out == bytes.fromhex(v["message"])
    dk = MLKEM768PrivateKey.from_seed_bytes(bytes.fromhex(VECTORS["ml_kem_seed"]))
    assert dk.public_key().public_bytes_raw().hex() == VECTORS["encaps_key"]["message"]
    assert dk.decapsulate(out).hex() == VECTORS["kem_secret"]


def test_kdf_rk_pq_is_hkdf_over_dh_and_the_kem_secret() -> None:
    v = VECTORS["kdf_rk_pq"]
    ikm = bytes.fromhex(v["dh"]) + bytes.fromhex(v["kem_secret"])
    out = HKDF(hashes.SHA256(), 64, bytes.fromhex(v["root"]), b"voipgw-v1 pq ratchet").derive(ikm)
    assert out.hex() == v["new_root"] + v["chain"]


def test_the_ratchet_key_pq_tlv_layout() -> None:
    v = VECTORS["ratchet_key_pq"]
    tlv = bytes.fromhex(v["tlv"])
    assert tlv[:2] == bytes([0x07, 41])
    assert tlv[2:10] == v["epoch"].to_bytes(2, "big") + v["peer_epoch"].to_bytes(2, "big") + v[
        "start_counter"
    ].to_bytes(4, "big")
    assert tlv[10:42].hex() == v["public"] and tlv[42] == v["exchange"]
