"""Deterministic vectors for sealed DTMF (docs/PROTOCOL.md §B.11): one offerer stream where a digit's RFC 4733
packet train is sealed between audio frames, with the RTP fields a sender puts around each frame.

``python -m tests.vectors.gen_dtmf`` (re)writes tests/vectors/dtmf.json. Every secret is public test data.
"""

from __future__ import annotations

import json
import sys

from ratchet.params import SendParams
from ratchet.session import MediaConfig, MediaSession
from tests.support.ratchet_pairs import make_pair
from tests.vectors.gen_frames import FRAME_S, T0, VECTOR_DIR, _keygen
from voipgw.rtp.dtmf import digit_train, encode_sealed

FILE = "dtmf.json"
NAME = "dtmf"
AUDIO_PT = 111
EVENT_PT = 101
EVENT_TIMESTAMP = 0x1234_5678
"""The event's RTP start timestamp, which is also the sealed event id."""
DIGIT = "5"
DURATION_MS = 120


def generate() -> dict[str, object]:
    params = SendParams(frames_per_key=4)
    ko, ka = make_pair(interval_ms=2000, offerer_params=params, answerer_params=params, seed=NAME.encode())
    secrets = {
        "send_chain": ko.send_chain.hex(),
        "send_time_secret": ko.send_time_secret.hex(),
        "send_stream_salt": ko.send_stream_salt.hex(),
        "call_id": ko.call_id,
        "interval_ms": ko.interval_ms,
    }
    cfg = MediaConfig(dh_interval_s=0)
    gen_o, gen_a = _keygen(NAME + " offerer"), _keygen(NAME + " answerer")
    alice = MediaSession(ko, T0, cfg, keygen=lambda: next(gen_o))
    bob = MediaSession(ka, T0, cfg, keygen=lambda: next(gen_a))
    train = digit_train(DIGIT, DURATION_MS)
    # Audio frames 0-3, then the train's packets each followed by one audio frame (as the pacing loop would).
    kinds = ["audio"] * 4
    for _ in train:
        kinds += ["telephone-event", "audio"]
    frames = []
    events = iter(train)
    for k, kind in enumerate(kinds):
        now = T0 + k * FRAME_S
        if kind == "audio":
            plaintext = b"opus frame %d" % k
            sealed = alice.seal(plaintext, now)
            assert bob.open(sealed, now) == plaintext
            rtp: dict[str, object] = {"payload_type": AUDIO_PT, "marker": k == 0}
        else:
            pkt = next(events)
            plaintext = encode_sealed(EVENT_TIMESTAMP, pkt.event)
            sealed = alice.seal_event(plaintext, now)
            assert bob.open_event(sealed, now) == plaintext
            rtp = {
                "payload_type": EVENT_PT,
                "marker": pkt.marker,
                "timestamp": EVENT_TIMESTAMP,
                "rfc4733_payload": pkt.event.encode().hex(),
                "send_offset_ms": pkt.offset_ms,
            }
        frames.append(
            {"counter": k, "now": now, "kind": kind, "rtp": rtp, "plaintext": plaintext.hex(), "frame": sealed.hex()}
        )
    return {
        "description": (
            "voipgw sealed DTMF vectors; see docs/PROTOCOL.md §B.11. The offerer's stream (CCM-80, frames_per_key "
            f"4, no DH step) carries digit {DIGIT!r} ({DURATION_MS} ms) as telephone-event frames between audio "
            "frames. Times are Unix seconds."
        ),
        "digit": DIGIT,
        "duration_ms": DURATION_MS,
        "session_keys_offerer": secrets,
        "frames": frames,
    }


def main() -> int:
    (VECTOR_DIR / FILE).write_text(json.dumps(generate(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {VECTOR_DIR / FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
