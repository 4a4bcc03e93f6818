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


def test_every_frame_opens_independently_and_events_ride_inside_audio_frames_of_one_size() -> None:
    lengths = set()
    events = []
    for f in VECTORS["frames"]:
        frame = bytes.fromhex(f["frame"])
        n = f["counter"]
        assert (int.from_bytes(frame[:4], "big") >> 14) & 0x3FFF == n  # one counter sequence, no gaps
        assert f["rtp"]["payload_type"] == gen_dtmf.AUDIO_PT and f["rtp"]["timestamp"] == n * 160
        nonce = b"\x00" + (0).to_bytes(4, "big") + n.to_bytes(8, "big")
        aead = AESCCM(_frame_key(n, f["now"]), tag_length=10)
        plaintext = aead.decrypt(nonce, frame[4:], frame[:4])
        ctl = plaintext[1 : 1 + plaintext[0]]
        assert plaintext[1 + plaintext[0] :].hex() == f["content"]
        tlvs = {}
        pos = 0
        while pos < len(ctl) and not (ctl[pos] == 0 and pos + 1 == len(ctl)):
            tlvs.setdefault(ctl[pos], ctl[pos + 2 : pos + 2 + ctl[pos + 1]])
            pos += 2 + ctl[pos + 1]
        event = tlvs.get(0x04)
        assert (event.hex() if event is not None else None) == f["event"]
        if event is not None:
            events.append(event)
            assert event[:4] == VECTORS["event_id"].to_bytes(4, "big")  # the event id: the RTP start timestamp
            assert event[4:].hex() == f["rfc4733"]["payload"]
        lengths.add(len(frame))
        # The header is the whole AAD: flipping any header bit fails the tag.
        with pytest.raises(InvalidTag):
            aead.decrypt(nonce, frame[4:], bytes([frame[0] ^ 0x01]) + frame[1:4])
    assert lengths == {4 + 1 + VECTORS["payload_size"] + 10}  # events cannot be told from audio by size
    assert len(events) == 5 and VECTORS["frames"][4]["rfc4733"]["marker"] is True
