"""The committed sealed-DTMF vectors are reproduced exactly, and an event frame opens with independently derived
keys (stdlib HMAC/SHA-256, cryptography's HKDF and AESCCM), exactly as docs/PROTOCOL.md §B.11 describes."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tests.vectors import gen_dtmf, gen_frames

VECTORS = json.loads((gen_frames.VECTOR_DIR / gen_dtmf.FILE).read_text())


def test_generator_reproduces_committed_vectors() -> None:
    assert json.loads(json.dumps(gen_dtmf.generate(), sort_keys=True)) == VECTORS


def _frame_key(counter: int, now: float) -> bytes:
    s = VECTORS["session_keys_offerer"]
    ck = bytes.fromhex(s["send_chain"])
    for _ in range(counter // 4):  # frames_per_key = 4, no DH step: epoch 0 from the handshake chain
        ck = hmac.digest(ck, b"\x02", "sha256")
    mk = hmac.digest(ck, b"\x01", "sha256")
    salt = bytes.fromhex(s["send_stream_salt"])
    cid = s["call_id"].encode()
    interval = int((now - gen_frames.T0) * 1000) // s["interval_ms"]
    meta = bytes([len(cid)]) + cid + b"\x00" + bytes([len(salt)]) + salt
    tk = HKDF(hashes.SHA256(), 32, salt, b"voipgw-v1 time key" + meta + interval.to_bytes(8, "big")).derive(
        bytes.fromhex(s["send_time_secret"])
    )
    return hashlib.sha256(b"vgw1fk" + mk + tk).digest()


def test_every_frame_opens_independently_and_events_bind_their_content_type() -> None:
    events = 0
    for f in VECTORS["frames"]:
        frame = bytes.fromhex(f["frame"])
        n = f["counter"]
        assert (int.from_bytes(frame[:4], "big") >> 14) & 0x1FFF == n  # one counter sequence for both kinds
        aad_len = 4 + (1 + frame[4] if frame[0] & 0x40 else 0)
        aad = frame[:aad_len]
        nonce = b"\x00" + (0).to_bytes(4, "big") + n.to_bytes(8, "big")
        aead = AESCCM(_frame_key(n, f["now"]), tag_length=10)
        plaintext = aead.decrypt(nonce, frame[aad_len:], aad)
        assert plaintext.hex() == f["plaintext"]
        is_event = f["kind"] == "telephone-event"
        assert aad.endswith(bytes([0x03, 0x01, 0x01])) == is_event  # CONTENT_TYPE TLV = telephone-event
        if not is_event:
            continue
        events += 1
        rtp = f["rtp"]
        assert plaintext[:4] == rtp["timestamp"].to_bytes(4, "big")  # the event id is the RTP start timestamp
        assert plaintext[4:].hex() == rtp["rfc4733_payload"]
        # header, extensions (the content type; on the schedule's frames the ratchet key and SAS reveal too), event, tag
        assert len(frame) == aad_len + 8 + 10
        # Stripping the content type (relabelling the event as audio, X bit cleared) fails the tag.
        stripped_aad = (int.from_bytes(frame[:4], "big") & ~(1 << 30)).to_bytes(4, "big")
        with pytest.raises(InvalidTag):
            aead.decrypt(nonce, frame[aad_len:], stripped_aad)
    assert events == 5 and VECTORS["frames"][4]["rtp"]["marker"] is True
