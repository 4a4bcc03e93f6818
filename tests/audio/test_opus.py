"""Opus round trips keep speech and tones recognisable; loss concealment and bad packets stay bounded."""

from __future__ import annotations

import numpy as np
import pytest

from tests.testbed.speech import speech_path
from voipgw.audio.compare import compare_audio
from voipgw.audio.opus import FRAME_SAMPLES, OpusDecoder, OpusEncoder
from voipgw.audio.wav import read_wav


def _round_trip(pcm: np.ndarray, drop: set[int] | None = None) -> tuple[np.ndarray, list[int]]:
    enc, dec = OpusEncoder(), OpusDecoder()
    out, sizes = [], []
    for k in range(len(pcm) // FRAME_SAMPLES):
        packet = enc.encode(pcm[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES])
        sizes.append(len(packet))
        out.append(dec.decode(None if drop and k in drop else packet))
    return np.concatenate(out), sizes


def test_speech_round_trip_correlates() -> None:
    speech = read_wav(speech_path())
    decoded, sizes = _round_trip(speech)
    match = compare_audio(speech, decoded)
    assert match.correlation > 0.9, match
    assert 0 <= match.lag_seconds < 0.02  # Opus look-ahead only
    assert 20 < float(np.mean(sizes)) < 120  # ~24 kbps, 20 ms frames


def test_tone_round_trip_keeps_frequency() -> None:
    t = np.arange(48000) / 48000
    tone = np.round(9000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    decoded, _ = _round_trip(tone)
    assert compare_audio(tone, decoded).correlation > 0.9
    spectrum = np.abs(np.fft.rfft(decoded.astype(float)))
    assert abs(np.argmax(spectrum) * 48000 / len(decoded) - 440) < 2


def test_concealment_is_finite_bounded_and_decays() -> None:
    speech = read_wav(speech_path())[: 48000 * 2]
    lost = set(range(40, 60))
    decoded, _ = _round_trip(speech, drop=lost)
    gap = decoded[40 * FRAME_SAMPLES : 60 * FRAME_SAMPLES].astype(np.int32)
    assert np.all(np.isfinite(gap))
    assert np.max(np.abs(gap)) <= np.max(np.abs(speech.astype(np.int32)))
    # Concealment fades: the end of a 400 ms gap is much quieter than its start.
    head, tail = gap[: FRAME_SAMPLES * 3], gap[-FRAME_SAMPLES * 3 :]
    assert np.sqrt(np.mean(tail.astype(float) ** 2)) <= np.sqrt(np.mean(head.astype(float) ** 2)) + 1.0


def test_concealment_from_fresh_decoder_is_silence() -> None:
    dec = OpusDecoder()
    out = np.concatenate([dec.decode(None) for _ in range(10)])
    assert out.shape == (10 * FRAME_SAMPLES,) and not np.any(out)
    assert dec.concealed == 10


def test_bad_packets_decode_to_silence_and_count() -> None:
    enc, dec = OpusEncoder(), OpusDecoder()
    good = enc.encode(np.full(FRAME_SAMPLES, 5000, dtype=np.int16))
    dec.decode(good)
    rng = np.random.default_rng(7)
    bad = [
        b"",
        b"\xff" * 2000,
        good[:1] + b"\xff\xff\xff\xff",
        bytes([0x0B]) + bytes(3),
    ]  # empty, huge, code 3
    bad += [bytes([0xFB]) + bytes(3)]  # a 3-frame packet: not one 20 ms frame
    bad += [bytes([0x03, 0xFF]) + rng.bytes(10)]
    silent = 0
    for payload in bad:
        out = dec.decode(payload)
        assert out.shape == (FRAME_SAMPLES,)
        silent += int(not np.any(out))
    assert dec.failed == silent >= 4


def test_encoder_rejects_wrong_frame_size() -> None:
    with pytest.raises(ValueError):
        OpusEncoder().encode(np.zeros(100, dtype=np.int16))
