"""Forged next-epoch frames from a stranger's address at 1,000 per second (issue 14, item 1), in a real call
between two phones whose DH ratchet steps every second. Version 2 spent a trial X25519 on each (from a shared
budget): the flood used up the budget and the real step was refused for the rest of the call. Under version 3 a
receiver learns a next key only from inside an authenticated frame, so forged frames cost one AEAD attempt each:
every DH step is still followed both ways and the audio is unaffected. The attacker forges what it can read off the
wire: the call's payload type, SSRC, the header's epoch (plus one), counter and interval."""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

import pytest

from ratchet.frame import COUNTER_MOD, COUNTER_SHIFT, EPOCH_MOD, EPOCH_SHIFT, HEADER_LEN
from tests.support.live_call import live_secure_call
from voipgw.rtp.packet import build_rtp, parse_rtp

pytestmark = [pytest.mark.integration, pytest.mark.hardening]

ATTACKER = "127.0.0.66"
RATE = 1000
SECONDS = 10


def forged_next_epoch(sample: bytes, rng: random.Random, i: int) -> bytes:
    pkt = parse_rtp(sample)
    word = int.from_bytes(pkt.payload[:HEADER_LEN], "big")
    epoch = (word >> EPOCH_SHIFT) % EPOCH_MOD
    counter = (word >> COUNTER_SHIFT) % COUNTER_MOD
    word &= ~(((EPOCH_MOD - 1) << EPOCH_SHIFT) | ((COUNTER_MOD - 1) << COUNTER_SHIFT) | 0xFF)
    word |= ((epoch + 1) % EPOCH_MOD) << EPOCH_SHIFT | ((counter + 5 + i % 50) % COUNTER_MOD) << COUNTER_SHIFT
    word |= rng.randrange(256)
    body = word.to_bytes(HEADER_LEN, "big") + rng.randbytes(len(pkt.payload) - HEADER_LEN)
    return build_rtp(pkt.payload_type, (pkt.sequence + 1 + i) & 0xFFFF, pkt.timestamp, pkt.ssrc, body)


def test_a_flood_of_forged_next_epoch_frames_costs_no_step_and_no_audio(tmp_path: Path) -> None:
    rng = random.Random(14)
    config = tmp_path / "fast-dh.toml"
    config.write_text("dh_interval_s = 1\n")
    with live_secure_call(tmp_path, extra=("--config", str(config))) as call:
        call.wait_media(100, timeout=30)
        bob = call.bob_media()
        sent = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((ATTACKER, 0))
            start = time.monotonic()
            for tick in range(SECONDS * 50):  # 20 frames every 20 ms, each forged from the newest real frame
                sample = call.relay.recorded[-1]
                for _ in range(RATE // 50):
                    s.sendto(forged_next_epoch(sample, rng, sent), bob)
                    sent += 1
                time.sleep(max(0.0, start + (tick + 1) * 0.02 - time.monotonic()))
        assert call.alice.wait(90) == 0, call.alice.log()
        assert call.bob.wait(20) == 0, call.bob.log()
    a, b = call.alice.summary(), call.bob.summary()
    print(
        f"forged {sent}; bob refused {b['refused_by_reason']}; epochs alice {a['ratchet_local_epoch']} -> bob saw "
        f"{b['ratchet_peer_epoch']}; bob {b['ratchet_local_epoch']} -> alice saw {a['ratchet_peer_epoch']}"
    )
    assert a["state"] == b["state"] == "ended" and a["security"] == b["security"] == "secure, unverified"
    assert b["frames_refused"] >= sent - 50 and b["frames_refused"] == sum(b["refused_by_reason"].values())
    # every DH step was followed, both ways, through the flood (about one a second for the whole call)
    # (the last step may be taken in the call's final frames, after the peer's last received one)
    assert a["ratchet_local_epoch"] >= 10 and b["ratchet_peer_epoch"] >= a["ratchet_local_epoch"] - 1
    assert b["ratchet_local_epoch"] >= 10 and a["ratchet_peer_epoch"] >= b["ratchet_local_epoch"] - 1
    assert a["degraded"]["seen"] == b["degraded"]["seen"] == []
    for proc in (call.alice, call.bob):
        assert call.heard(proc).windowed >= 0.9, (proc.name, call.heard(proc))
