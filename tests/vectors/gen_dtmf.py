"""Deterministic vectors for sealed DTMF (docs/PROTOCOL.md §B.11, wire v3): one offerer stream of audio frames,
padded to one size, where each packet of a digit's RFC 4733 train rides as a TELEPHONE_EVENT TLV inside one audio
frame; the RTP fields are the audio stream's (one payload type, a timestamp step of 160 every 20 ms).

``python -m tests.vectors.gen_dtmf`` (re)writes tests/vectors/dtmf.json. Every secret is public test data.
"""

from __future__ import annotations

import json
import sys

from ratchet.events import TelephoneEventReceived
from ratchet.params import SendParams
from ratchet.session import MediaConfig, MediaSession
from tests.support.ratchet_pairs import make_pair
from tests.vectors.gen_frames import FRAME_S, T0, VECTOR_DIR, _keygen
from voipgw.rtp.dtmf import EventPacket, digit_train, encode_sealed

FILE = "dtmf.json"
NAME = "dtmf"
AUDIO_PT = 111
PAYLOAD_SIZE = 80
TIMESTAMP_STEP = 160
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
    alice.set_payload_size(PAYLOAD_SIZE)
    # Audio frames 0-3, then one train packet in each of the next frames, then audio again.
    riding: list[EventPacket | None] = [None] * 4 + list(train) + [None] * 3
    frames = []
    for k, pkt in enumerate(riding):
        now = T0 + k * FRAME_S
        event = encode_sealed(EVENT_TIMESTAMP, pkt.event) if pkt is not None else None
        content = (b"opus frame %d" % k).ljust(PAYLOAD_SIZE - alice.control_size(now, event=event is not None), b".")
        sealed = alice.seal(content, now, event)
        assert bob.open(sealed, now) == content
        got = bob.next_event()
        while got is not None and not isinstance(got, TelephoneEventReceived):
            got = bob.next_event()
        assert (got.data if got is not None else None) == event
        entry: dict[str, object] = {
            "counter": k,
            "now": now,
            "rtp": {"payload_type": AUDIO_PT, "marker": k == 0, "timestamp": k * TIMESTAMP_STEP},
            "content": content.hex(),
            "event": event.hex() if event is not None else None,
            "frame": sealed.hex(),
        }
        if pkt is not None:
            entry["rfc4733"] = {"payload": pkt.event.encode().hex(), "marker": pkt.marker, "offset_ms": pkt.offset_ms}
        frames.append(entry)
    return {
        "description": (
            "voipgw sealed DTMF vectors, wire version 3; see docs/PROTOCOL.md §B.11. The offerer's stream (CCM-80, "
            f"frames_per_key 4, no DH step, payload size {PAYLOAD_SIZE}) carries digit {DIGIT!r} ({DURATION_MS} ms) "
            "as TELEPHONE_EVENT TLVs inside audio frames of one size. Times are Unix seconds."
        ),
        "digit": DIGIT,
        "duration_ms": DURATION_MS,
        "payload_size": PAYLOAD_SIZE,
        "event_id": EVENT_TIMESTAMP,
        "session_keys_offerer": secrets,
        "frames": frames,
    }


def main() -> int:
    (VECTOR_DIR / FILE).write_text(json.dumps(generate(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {VECTOR_DIR / FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
