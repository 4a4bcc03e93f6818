"""The committed vectors are exactly what the generator produces, and they check out when recomputed from the
JSON alone with primitives (hashlib, hmac, cryptography) instead of the ratchet modules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ratchet.handshake import HandshakeConfig, NonceCache, Offerer, answer_offer
from ratchet.identity import IdentityKey
from ratchet.params import Suite
from tests.vectors import gen_handshake

DIR = Path(__file__).parents[1] / "vectors"


def _load(name: str) -> Any:
    return json.loads((DIR / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", gen_handshake.FILES)
def test_committed_vectors_match_the_generator(name: str) -> None:
    generated = gen_handshake.generate()
    assert gen_handshake.render(generated[name]) == (DIR / name).read_text(encoding="utf-8"), (
        f"{name} is stale: run `python -m tests.vectors.gen_handshake`"
    )


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


CASES = _load("handshake.json")["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_handshake_vector_recomputed_independently(case: dict[str, Any]) -> None:
    inp = {k: bytes.fromhex(v) for k, v in case["inputs"].items()}
    offer, ans = bytes.fromhex(case["offer_wire"]), bytes.fromhex(case["answer_wire"])
    hybrid = case["suite"] == "X25519_MLKEM768"
    # Signatures, by the keys derived from the recorded seeds.
    for seed_name, wire, context in (
        ("offerer_identity_seed", offer, b"voipgw-v2 offer\x00"),
        ("answerer_identity_seed", ans, b"voipgw-v2 answer\x00"),
    ):
        pub = Ed25519PrivateKey.from_private_bytes(inp[seed_name]).public_key()
        pub.verify(wire[-64:], context + wire[:-64])
    # Offer fields at their documented offsets.
    version, mtype, mask, flags, fpk, interval, ts = struct.unpack(">BBBBHIQ", offer[:18])
    assert (version, mtype, interval, ts) == (3, 1, 1000, int(case["offer_time"] * 1000))
    assert mask == sum(case["offer_suites"]) and (flags, fpk) == (0, 25)
    assert offer[18:34] == inp["offerer_nonce"]
    assert offer[34:50] == hashlib.sha256(b"voipgw-v2 sas commit offerer" + inp["sas_secret"]).digest()[:16]
    assert offer[50:83].hex() == case["offerer_identity"]
    x_off = X25519PrivateKey.from_private_bytes(inp["offerer_ephemeral_private"])
    x_ans = X25519PrivateKey.from_private_bytes(inp["answerer_ephemeral_private"])
    assert offer[83:115] == x_off.public_key().public_bytes_raw()
    pos = 115
    strings = []
    for _ in range(3):
        n = offer[pos]
        strings.append(offer[pos + 1 : pos + 1 + n].decode())
        pos += 1 + n
    assert strings == [case["offerer_aor"], case["answerer_aor"], case["call_id"]]
    # Answer fields.
    version, mtype, chosen, supported, aflags, afpk, ainterval, ats = struct.unpack(">BBBBBHIQ", ans[:19])
    assert (version, mtype, chosen, supported) == (3, 2, 2 if hybrid else 1, 3)
    assert (aflags, afpk, ainterval, ats) == (0b011, 50, 1000, int(case["answer_time"] * 1000))
    assert ans[19:35] == inp["answerer_nonce"]
    answer_commitment = hashlib.sha256(b"voipgw-v2 sas commit answerer" + inp["answer_sas_secret"]).digest()[:16]
    assert ans[35:51] == answer_commitment and answer_commitment.hex() == case["answer_sas_commitment"]
    assert ans[51:83] == hashlib.sha256(offer).digest()
    assert ans[83:116].hex() == case["answerer_identity"]
    assert ans[116:148] == x_ans.public_key().public_bytes_raw()
    # Key agreement.
    dh = x_off.exchange(x_ans.public_key())
    assert dh == x_ans.exchange(x_off.public_key()) and dh.hex() == case["x25519_shared"]
    ikm = dh
    if hybrid:
        dk = MLKEM768PrivateKey.from_seed_bytes(inp["mlkem_seed"])
        ek = dk.public_key().public_bytes_raw()
        assert offer[pos : pos + 1184] == ek
        ct = bytes.fromhex(case["mlkem_ciphertext"])
        assert ans[-64 - 1088 : -64] == ct
        shared = dk.decapsulate(ct)
        assert shared.hex() == case["mlkem_shared_secret"]
        ikm = dh + shared
        assert len(offer) == pos + 1184 + 64
    else:
        assert len(offer) == pos + 64
    assert ikm.hex() == case["ikm"]
    th = hashlib.sha256(b"voipgw-v2 transcript" + offer + ans).digest()
    assert th.hex() == case["transcript_hash"]
    prk = hmac.new(th, ikm, hashlib.sha256).digest()
    assert prk.hex() == case["prk"]
    for d in ("o2a", "a2o"):
        assert _hkdf_expand(prk, b"voipgw-v1 root " + d.encode(), 32).hex() == case[f"root_{d}"]
        assert _hkdf_expand(prk, b"voipgw-v1 chain " + d.encode(), 32).hex() == case[f"chain_{d}"]
        assert _hkdf_expand(prk, b"voipgw-v1 time " + d.encode(), 32).hex() == case[f"time_{d}"]
    sas_seed = _hkdf_expand(prk, b"voipgw-v1 sas", 32)
    assert sas_seed.hex() == case["sas_seed"]
    salt = inp["sas_secret"] + inp["answer_sas_secret"]  # r ‖ s
    value = _hkdf_expand(hmac.new(salt, sas_seed, hashlib.sha256).digest(), b"voipgw-v2 sas value", 4)
    assert value.hex() == case["sas_value"]
    assert case["offer_attribute"] == "a=voipgw:" + _b64(offer)
    assert case["answer_attribute"] == "a=voipgw:" + _b64(ans)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vectors_are_accepted_by_the_api(case: dict[str, Any]) -> None:
    """An implementation fed the recorded secrets emits the recorded bytes and accepts the recorded answer."""
    inp = {k: bytes.fromhex(v) for k, v in case["inputs"].items()}
    suites = frozenset(Suite(s) for s in case["offer_suites"])
    offerer = Offerer(
        IdentityKey.from_seed(inp["offerer_identity_seed"]),
        case["offerer_aor"],
        case["answerer_aor"],
        case["call_id"],
        HandshakeConfig(suites=suites, send_params=gen_handshake.OFFERER_PARAMS, interval_ms=1000),
        case["offer_time"],
        ephemeral_private=inp["offerer_ephemeral_private"],
        nonce=inp["offerer_nonce"],
        sas_secret=inp["sas_secret"],
        mlkem_seed=inp.get("mlkem_seed"),
    )
    assert offerer.offer_bytes.hex() == case["offer_wire"]
    keys = offerer.accept_answer(bytes.fromhex(case["answer_wire"]), case["accept_time"])
    assert bytes(keys.send_chain).hex() == case["chain_o2a"] and bytes(keys.recv_root).hex() == case["root_a2o"]
    # The answerer side accepts the recorded offer (with fresh randomness it derives different keys).
    _, bob_keys = answer_offer(
        IdentityKey.from_seed(inp["answerer_identity_seed"]),
        case["answerer_aor"],
        bytes.fromhex(case["offer_wire"]),
        HandshakeConfig(suites=frozenset(Suite)),
        case["answer_time"],
        NonceCache(),
    )
    assert bob_keys.suite.name == case["suite"]


def test_identity_public_keys_are_type_prefixed_raw_keys() -> None:
    for case in CASES:
        seed = bytes.fromhex(case["inputs"]["offerer_identity_seed"])
        raw = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
        assert case["offerer_identity"] == "01" + raw.hex()
        Ed25519PublicKey.from_public_bytes(raw)
