"""Deterministic test vectors for the media layer (wire v3): KDF_CK, KDF_RK, time keys, frame keys, KCVs and
sealed frames across the initial key, the SAS reveal, an announced and acked DH ratchet step, for each frame suite
and keying mode, and one stream padded to a fixed payload size.

``python -m tests.vectors.gen_frames`` (re)writes tests/vectors/frames.json. Every secret is public test data.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ratchet.chain import kdf_ck
from ratchet.frame import chain_id, frame_key, key_check_value, per_frame_key
from ratchet.kdf import hkdf_extract, kdf_rk
from ratchet.params import Direction, FrameSuite, SendParams
from ratchet.session import MediaConfig, MediaSession
from ratchet.timekeys import stream_metadata, time_key
from tests.support.ratchet_pairs import make_pair

VECTOR_DIR = Path(__file__).resolve().parent
FILE = "frames.json"
T0 = 1_767_225_600.0
FRAME_S = 0.02


def _h(label: str) -> bytes:
    return hashlib.sha256(b"voipgw test vector " + label.encode()).digest()


def _keygen(label: str) -> Iterator[X25519PrivateKey]:
    k = 0
    while True:
        yield X25519PrivateKey.from_private_bytes(_h(f"{label} ratchet key {k}"))
        k += 1


def _primitives() -> dict[str, object]:
    ck = _h("chain key")
    mk, nck = kdf_ck(ck)
    root, dh = _h("root key"), _h("dh output")
    new_root, chain = kdf_rk(root, dh)
    secret, salt = _h("time secret"), _h("stream salt")[:16]
    meta = stream_metadata("a84b4c76e66710@pc33.atlanta.example", Direction.OFFERER_TO_ANSWERER, salt)
    prk = hkdf_extract(salt, secret)
    tks = {str(i): time_key(prk, meta, i).hex() for i in (0, 1, 63, 64, -1)}
    tk0 = bytes.fromhex(tks["0"])
    return {
        "kdf_ck": {"chain_key": ck.hex(), "message_key_seed": mk.hex(), "next_chain_key": nck.hex()},
        "kdf_rk": {
            "root_key": root.hex(),
            "dh_output": dh.hex(),
            "next_root_key": new_root.hex(),
            "chain_key": chain.hex(),
        },
        "time_key": {
            "time_secret": secret.hex(),
            "stream_salt": salt.hex(),
            "call_id": "a84b4c76e66710@pc33.atlanta.example",
            "direction": int(Direction.OFFERER_TO_ANSWERER),
            "metadata": meta.hex(),
            "keys": tks,
        },
        "frame_key": {"message_key_seed": mk.hex(), "time_key": tk0.hex(), "key": frame_key(mk, tk0).hex()},
        "per_frame_key": {"counter": 7, "key": per_frame_key(mk, tk0, 7).hex()},
        "key_check": {
            "chain_key": ck.hex(),
            "chain_id": chain_id(ck).hex(),
            "kcv": key_check_value(chain_id(ck), tk0),
        },
    }


def _stream(
    name: str, params: SendParams, frames: int, dh_interval_s: float, payload_size: int | None = None
) -> dict[str, object]:
    ko, ka = make_pair(interval_ms=2000, offerer_params=params, answerer_params=params, seed=name.encode())
    secrets = {
        "send_root": ko.send_root.hex(),
        "send_chain": ko.send_chain.hex(),
        "send_time_secret": ko.send_time_secret.hex(),
        "send_stream_salt": ko.send_stream_salt.hex(),
        "recv_root": ko.recv_root.hex(),
        "recv_chain": ko.recv_chain.hex(),
        "recv_time_secret": ko.recv_time_secret.hex(),
        "recv_stream_salt": ko.recv_stream_salt.hex(),
        "sas_seed": ko.sas_seed.hex(),
        "sas_secret": ko.sas_secret.hex() if ko.sas_secret is not None else None,
        "call_id": ko.call_id,
        "interval_ms": ko.interval_ms,
    }
    cfg = MediaConfig(dh_interval_s=dh_interval_s)
    gen_o, gen_a = _keygen(name + " offerer"), _keygen(name + " answerer")
    alice = MediaSession(ko, T0, cfg, keygen=lambda: next(gen_o))
    bob = MediaSession(ka, T0, cfg, keygen=lambda: next(gen_a))
    alice.set_payload_size(payload_size)
    out = []
    for k in range(frames):
        now = T0 + k * FRAME_S
        alice.open(bob.seal(b"answerer frame %d" % k, now), now)  # the answerer's keys and acks reach the offerer
        content = b"offerer frame %d" % k
        if payload_size is not None:
            content = content.ljust(payload_size - alice.control_size(now), b".")
        sealed = alice.seal(content, now)
        assert bob.open(sealed, now) == content
        out.append(
            {
                "now": now,
                "counter": k,
                "content": content.hex(),
                "control": _control_hex(bob),
                "frame": sealed.hex(),
                "epoch": alice.sealer.epoch,
            }
        )
    return {
        "params": {
            "frames_per_key": params.frames_per_key,
            "per_frame_keys": params.per_frame_keys,
            "frame_suite": int(params.frame_suite),
        },
        "dh_interval_s": dh_interval_s,
        "payload_size": payload_size,
        "ratchet_private_keys_offerer": [_h(f"{name} offerer ratchet key {k}").hex() for k in range(4)],
        "ratchet_private_keys_answerer": [_h(f"{name} answerer ratchet key {k}").hex() for k in range(4)],
        "session_keys_offerer": secrets,
        "frames": out,
    }


def _control_hex(receiver: MediaSession) -> dict[str, object]:
    """The control TLVs the receiver found in the frame it just opened (PAD left out)."""
    c = receiver.opener.last_control
    out: dict[str, object] = {}
    if c.ratchet_key is not None:
        rk = c.ratchet_key
        out["ratchet_key"] = {
            "epoch": rk.epoch,
            "peer_epoch": rk.peer_epoch,
            "start_counter": rk.start_counter,
            "public_key": rk.public_key.hex(),
        }
    if c.key_ack is not None:
        out["key_ack"] = {"epoch": c.key_ack.epoch, "prefix": c.key_ack.prefix.hex()}
    if c.sas_reveal is not None:
        out["sas_reveal"] = c.sas_reveal.hex()
    return out


def generate() -> dict[str, object]:
    return {
        "description": "voipgw media-layer vectors, wire version 3; see docs/PROTOCOL.md Part B. Unix seconds.",
        "primitives": _primitives(),
        "streams": {
            "ccm80_default": _stream("ccm80_default", SendParams(frames_per_key=4), 30, 0.3),
            "ccm80_per_frame_keys": _stream("ccm80_pfk", SendParams(frames_per_key=4, per_frame_keys=True), 12, 0.1),
            "gcm128": _stream("gcm128", SendParams(frames_per_key=2, frame_suite=FrameSuite.AES256_GCM_128), 12, 0.1),
            "ccm80_padded": _stream("ccm80_padded", SendParams(frames_per_key=4), 30, 0.3, payload_size=80),
        },
    }


def main() -> int:
    (VECTOR_DIR / FILE).write_text(json.dumps(generate(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {VECTOR_DIR / FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
