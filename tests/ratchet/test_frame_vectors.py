"""The committed media vectors are reproduced exactly, and their keys re-derive with independent code."""

from __future__ import annotations

import hashlib
import hmac
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tests.vectors import gen_frames

VECTORS = json.loads((gen_frames.VECTOR_DIR / gen_frames.FILE).read_text())


def test_generator_reproduces_committed_vectors() -> None:
    assert json.loads(json.dumps(gen_frames.generate(), sort_keys=True)) == VECTORS


def test_primitives_rederive_independently() -> None:
    p = VECTORS["primitives"]
    ck = bytes.fromhex(p["kdf_ck"]["chain_key"])
    assert hmac.digest(ck, b"\x01", "sha256").hex() == p["kdf_ck"]["message_key_seed"]
    assert hmac.digest(ck, b"\x02", "sha256").hex() == p["kdf_ck"]["next_chain_key"]
    rk = p["kdf_rk"]
    out = HKDF(hashes.SHA256(), 64, bytes.fromhex(rk["root_key"]), b"voipgw-v1 ratchet").derive(
        bytes.fromhex(rk["dh_output"])
    )
    assert out.hex() == rk["next_root_key"] + rk["chain_key"]
    tk = p["time_key"]
    for i, expected in tk["keys"].items():
        info = b"voipgw-v1 time key" + bytes.fromhex(tk["metadata"]) + int(i).to_bytes(8, "big", signed=True)
        derived = HKDF(hashes.SHA256(), 32, bytes.fromhex(tk["stream_salt"]), info).derive(
            bytes.fromhex(tk["time_secret"])
        )
        assert derived.hex() == expected
    fk = p["frame_key"]
    key = hashlib.sha256(b"vgw1fk" + bytes.fromhex(fk["message_key_seed"]) + bytes.fromhex(fk["time_key"])).digest()
    assert key.hex() == fk["key"]


def test_first_frame_opens_with_independently_derived_key() -> None:
    """Frame 0 of a stream: chain step 0 of the handshake chain, interval 0, CCM nonce 0x00‖epoch‖counter."""
    stream = VECTORS["streams"]["ccm80_default"]
    secrets = stream["session_keys_offerer"]
    mk = hmac.digest(bytes.fromhex(secrets["send_chain"]), b"\x01", "sha256")
    salt = bytes.fromhex(secrets["send_stream_salt"])
    cid = secrets["call_id"].encode()
    meta = bytes([len(cid)]) + cid + b"\x00" + bytes([len(salt)]) + salt
    tk = HKDF(hashes.SHA256(), 32, salt, b"voipgw-v1 time key" + meta + (0).to_bytes(8, "big")).derive(
        bytes.fromhex(secrets["send_time_secret"])
    )
    key = hashlib.sha256(b"vgw1fk" + mk + tk).digest()
    frame = bytes.fromhex(stream["frames"][0]["frame"])
    assert frame[0] & 0x40  # frame 0 carries the ratchet-key extension
    aad_len = 4 + 1 + frame[4]
    nonce = b"\x00" + (0).to_bytes(4, "big") + (0).to_bytes(8, "big")
    payload = AESCCM(key, tag_length=10).decrypt(nonce, frame[aad_len:], frame[:aad_len])
    assert payload.hex() == stream["frames"][0]["payload"]
    assert len(frame) - len(payload) == aad_len + 10


def test_streams_cover_a_dh_step() -> None:
    for name, stream in VECTORS["streams"].items():
        assert stream["frames"][-1]["epoch"] >= 1, name
