"""The committed media vectors are reproduced exactly, and their keys re-derive with independent code."""

from __future__ import annotations

import hashlib
import hmac
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
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


def _time_key(secrets: dict[str, object], interval: int) -> bytes:
    salt = bytes.fromhex(str(secrets["send_stream_salt"]))
    cid = str(secrets["call_id"]).encode()
    meta = bytes([len(cid)]) + cid + b"\x00" + bytes([len(salt)]) + salt
    info = b"voipgw-v1 time key" + meta + interval.to_bytes(8, "big", signed=True)
    return HKDF(hashes.SHA256(), 32, salt, info).derive(bytes.fromhex(str(secrets["send_time_secret"])))


def _tlvs(ctl: bytes) -> dict[int, bytes]:
    """Independent TLV walk (§B.2): u8 type, u8 len, value; PAD (0) skipped, a lone trailing 0x00 is one byte PAD."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(ctl):
        if ctl[pos] == 0 and pos + 1 == len(ctl):
            break
        typ, ln = ctl[pos], ctl[pos + 1]
        if typ != 0:
            out[typ] = ctl[pos + 2 : pos + 2 + ln]
        pos += 2 + ln
    assert pos <= len(ctl)
    return out


def _open(frame: bytes, chain_key: bytes, step: int, epoch: int, counter: int, tk: bytes) -> tuple[bytes, bytes]:
    ck = chain_key
    for _ in range(step):
        ck = hmac.digest(ck, b"\x02", "sha256")
    mk = hmac.digest(ck, b"\x01", "sha256")
    key = hashlib.sha256(b"vgw1fk" + mk + tk).digest()
    nonce = b"\x00" + epoch.to_bytes(4, "big") + counter.to_bytes(8, "big")
    plaintext = AESCCM(key, tag_length=10).decrypt(nonce, frame[4:], frame[:4])  # AAD = the 4-byte header only
    ctl_len = plaintext[0]
    return plaintext[1 : 1 + ctl_len], plaintext[1 + ctl_len :]


def test_first_frame_opens_with_independently_derived_key() -> None:
    """Frame 0 of a stream: chain step 0 of the handshake chain, interval 0, CCM nonce 0x00‖epoch‖counter; the SAS
    reveal and every other control TLV are inside the ciphertext."""
    stream = VECTORS["streams"]["ccm80_default"]
    secrets = stream["session_keys_offerer"]
    f0 = stream["frames"][0]
    frame = bytes.fromhex(f0["frame"])
    word = int.from_bytes(frame[:4], "big")
    assert (word >> 31, (word >> 28) & 7, (word >> 14) & 0x3FFF) == (0, 0, 0)  # S, E, C (14 bits)
    ctl, content = _open(frame, bytes.fromhex(secrets["send_chain"]), 0, 0, 0, _time_key(secrets, 0))
    assert content.hex() == f0["content"]
    assert _tlvs(ctl)[0x02].hex() == secrets["sas_secret"] == f0["control"]["sas_reveal"]
    assert len(frame) == 4 + 1 + len(ctl) + len(content) + 10


def test_the_dh_step_re_derives_independently_from_the_announcement() -> None:
    """Epoch 1 of the offerer: X25519(its key 1, the answerer's key 0) → HKDF(salt = send root, info "voipgw-v1
    ratchet") → (root, chain); the first epoch-1 frame opens at step (n - start) div fpk of that chain. The
    announcement rode inside an epoch-0 frame before the switch, and the switch came after an ack."""
    stream = VECTORS["streams"]["ccm80_default"]
    secrets = stream["session_keys_offerer"]
    fpk = stream["params"]["frames_per_key"]
    frames = stream["frames"]
    announcing = [f for f in frames if f["control"].get("ratchet_key", {}).get("epoch") == 1]
    first1 = next(f for f in frames if f["epoch"] == 1)
    assert announcing and announcing[0]["epoch"] == 0 and announcing[0]["counter"] < first1["counter"]
    ann = announcing[-1]["control"]["ratchet_key"]
    x1 = X25519PrivateKey.from_private_bytes(bytes.fromhex(stream["ratchet_private_keys_offerer"][1]))
    assert x1.public_key().public_bytes_raw().hex() == ann["public_key"]
    assert ann["peer_epoch"] == 0
    y0 = X25519PrivateKey.from_private_bytes(bytes.fromhex(stream["ratchet_private_keys_answerer"][0]))
    dh = x1.exchange(y0.public_key())
    out = HKDF(hashes.SHA256(), 64, bytes.fromhex(secrets["send_root"]), b"voipgw-v1 ratchet").derive(dh)
    n = first1["counter"]
    interval = int((first1["now"] - gen_frames.T0) * 1000) // secrets["interval_ms"]
    frame = bytes.fromhex(first1["frame"])
    assert (int.from_bytes(frame[:4], "big") >> 28) & 7 == 1
    _, content = _open(frame, out[32:], (n - ann["start_counter"]) // fpk, 1, n, _time_key(secrets, interval))
    assert content.hex() == first1["content"]


def test_a_padded_stream_has_one_frame_length() -> None:
    stream = VECTORS["streams"]["ccm80_padded"]
    lengths = {len(bytes.fromhex(f["frame"])) for f in stream["frames"]}
    assert lengths == {4 + 1 + stream["payload_size"] + 10}
    assert any(f["control"] for f in stream["frames"]) and stream["frames"][-1]["epoch"] >= 1


def test_streams_cover_a_dh_step() -> None:
    for name, stream in VECTORS["streams"].items():
        assert stream["frames"][-1]["epoch"] >= 1, name
