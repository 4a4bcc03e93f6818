"""Opus round trips keep speech and tones recognisable; loss concealment and bad packets stay bounded."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.opus_cost import SCHEDULES, correlation
from tests.testbed.speech import speech_path
from voipgw.audio.compare import compare_audio
from voipgw.audio.opus import (
    FRAME_SAMPLES,
    OpusBudgetError,
    OpusDecoder,
    OpusEncoder,
    cbr_packet_bytes,
    pad_packet,
)
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
        b"\xff" * 2000,
        good[:1] + b"\xff\xff\xff\xff",
        bytes([0x0B]) + bytes(3),
    ]  # huge, code 3
    bad += [bytes([0xFB]) + bytes(3)]  # a 3-frame packet: not one 20 ms frame
    bad += [bytes([0x03, 0xFF]) + rng.bytes(10)]
    silent = 0
    for payload in bad:
        out = dec.decode(payload)
        assert out.shape == (FRAME_SAMPLES,)
        silent += int(not np.any(out))
    assert dec.failed == silent >= 3


def test_encoder_rejects_wrong_frame_size() -> None:
    with pytest.raises(ValueError):
        OpusEncoder().encode(np.zeros(100, dtype=np.int16))


def test_cbr_packets_all_have_the_bitrate_size() -> None:
    speech = read_wav(speech_path())
    enc = OpusEncoder(cbr=True)
    assert enc.packet_bytes == cbr_packet_bytes(24000) == 60
    frames = [speech[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES] for k in range(len(speech) // FRAME_SAMPLES)]
    frames += [np.zeros(FRAME_SAMPLES, dtype=np.int16)] * 20  # silence too: no DTX, no small packets
    assert {len(enc.encode(f)) for f in frames} == {60}
    assert {len(OpusEncoder(16000, cbr=True).encode(f)) for f in frames[:50]} == {40}
    assert OpusEncoder().packet_bytes is None


@pytest.mark.parametrize("budget", [1, 2, 3, 10, 18, 41, 59, 60])
def test_cbr_with_a_budget_makes_exactly_that_many_bytes(budget: int) -> None:
    speech = read_wav(speech_path())
    enc, dec = OpusEncoder(cbr=True), OpusDecoder()
    for k in range(40):
        packet = enc.encode(speech[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES], max_bytes=budget)
        assert len(packet) == budget
        dec.decode(packet)
    assert dec.failed == 0


def test_a_budget_above_the_cbr_size_stays_at_the_cbr_size() -> None:
    enc = OpusEncoder(cbr=True)
    assert len(enc.encode(np.zeros(FRAME_SAMPLES, dtype=np.int16), max_bytes=200)) == 60


def test_impossible_budgets_are_refused() -> None:
    enc = OpusEncoder(cbr=True)
    for budget in (0, -1, 1276):
        with pytest.raises(OpusBudgetError):
            enc.encode(np.zeros(FRAME_SAMPLES, dtype=np.int16), max_bytes=budget)


def test_padding_is_lossless() -> None:
    speech = read_wav(speech_path())
    enc, plain, padded = OpusEncoder(), OpusDecoder(), OpusDecoder()
    for k in range(30):
        packet = enc.encode(speech[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES])
        grown = pad_packet(packet, len(packet) + 17)
        assert len(grown) == len(packet) + 17
        assert np.array_equal(plain.decode(packet), padded.decode(grown))
    with pytest.raises(OpusBudgetError):
        pad_packet(packet, len(packet) - 1)


def test_an_empty_payload_is_concealed_not_a_failure() -> None:
    enc, dec = OpusEncoder(), OpusDecoder()
    dec.decode(enc.encode(np.full(FRAME_SAMPLES, 5000, dtype=np.int16)))
    out = dec.decode(b"")
    assert out.shape == (FRAME_SAMPLES,)
    assert (dec.concealed, dec.failed) == (1, 0)


def test_cbr_keeps_speech_and_control_data_taken_from_the_budget_costs_a_bounded_amount() -> None:
    """The audio cost of equal frames (``python -m tests.support.opus_cost`` prints every schedule)."""
    vbr, _ = correlation(False, SCHEDULES["none"])
    cbr, size = correlation(True, SCHEDULES["none"])
    assert vbr > 0.95 and cbr > 0.95 and size == 60
    stepping, size = correlation(True, SCHEDULES["dh-every-2s+dtmf"])
    assert 0.85 < stepping < cbr and 50 < size < 60
    assert correlation(True, SCHEDULES["every-frame-full(60)"])[0] < 0.1  # the check can fail: no budget, no audio
