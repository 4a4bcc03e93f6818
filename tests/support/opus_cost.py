"""The audio cost of equal sealed frames: correlation of decoded vs. source speech for Opus VBR, CBR, and CBR with
control bytes taken out of the budget on several schedules. ``python -m tests.support.opus_cost`` prints them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tests.testbed.speech import speech_path
from voipgw.audio.compare import compare_audio
from voipgw.audio.opus import FRAME_SAMPLES, MIN_BUDGET, OpusDecoder, OpusEncoder, cbr_packet_bytes
from voipgw.audio.wav import read_wav

Schedule = Callable[[int], int]
"""Frame number -> control bytes the frame carries (TLV headers included)."""

KEY = 42
ACK = 8
EVENT = 10


def dh_step_every(frames: int) -> Schedule:
    """A DH step every ``frames``: the announcement in its first 3 frames (+ the peer's ack of its own step),
    then every 4th until acked 3 repeats later."""

    def control(k: int) -> int:
        phase = k % frames
        return KEY + ACK if phase < 3 or (phase < 16 and phase % 4 == 3) else 0

    return control


def dtmf_over(base: Schedule) -> Schedule:
    """``base`` plus a telephone event in every 2nd-3rd frame (a digit train of 100 ms digits, back to back)."""
    return lambda k: base(k) + (EVENT if k % 12 in (0, 2, 5, 6, 7) else 0)


SCHEDULES: dict[str, Schedule] = {
    "none": lambda k: 0,
    "dh-every-2s": dh_step_every(100),
    "dh-every-2s+dtmf": dtmf_over(dh_step_every(100)),
    "every-4th-full(60)": lambda k: 60 if k % 4 == 0 else 0,
    "every-frame-50": lambda k: 50,
    "every-frame-full(60)": lambda k: 60,
}


def correlation(cbr: bool, schedule: Schedule, bitrate: int = 24000) -> tuple[float, float]:
    """(correlation, mean Opus bytes per frame) of the test speech through one encoder and decoder."""
    speech = read_wav(speech_path())
    n = len(speech) // FRAME_SAMPLES
    enc, dec = OpusEncoder(bitrate, cbr=cbr), OpusDecoder()
    p = cbr_packet_bytes(bitrate)
    out, sizes = [], []
    for k in range(n):
        frame = speech[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES]
        budget = p - schedule(k)
        if not cbr:
            packet = enc.encode(frame)
        else:
            # What MediaStream does: below MIN_BUDGET the frame carries no audio and the receiver conceals it.
            packet = enc.encode(frame, max_bytes=budget if budget >= MIN_BUDGET else 1)
            packet = packet if budget >= MIN_BUDGET else b""
        sizes.append(len(packet))
        out.append(dec.decode(packet))
    match = compare_audio(speech[: n * FRAME_SAMPLES], np.concatenate(out))
    return match.correlation, float(np.mean(sizes))


def main() -> None:
    c, m = correlation(False, SCHEDULES["none"])
    print(f"{'VBR 24k':28s} corr {c:.4f}  opus bytes/frame {m:.1f}")
    for name, sched in SCHEDULES.items():
        c, m = correlation(True, sched)
        print(f"{'CBR 24k, ' + name:28s} corr {c:.4f}  opus bytes/frame {m:.1f}")


if __name__ == "__main__":
    main()
