"""WAV reading of common formats and rates, resampling to 48 kHz mono, and writing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.testbed.speech import make_variant, speech_path
from voipgw.audio.compare import compare_audio
from voipgw.audio.wav import WavError, read_wav, read_wav_raw, resample, write_wav


def _sox_tone(out: Path, rate: int, channels: int, freq: float, *encoding: str) -> Path:
    subprocess.run(
        ["sox", "-n", "-r", str(rate), "-c", str(channels), *encoding, str(out),
         "synth", "1", "sine", str(freq), "vol", "0.3"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return out


def _peak_hz(pcm: np.ndarray) -> float:
    x = pcm.astype(float) * np.hanning(len(pcm))
    return float(np.argmax(np.abs(np.fft.rfft(x))) * 48000 / len(pcm))


def _sine_fit(pcm: np.ndarray, freq: float) -> float:
    """Correlation with the best-phase sine of ``freq`` at 48 kHz (1.0 = a clean tone)."""
    t = np.arange(len(pcm)) / 48000
    y = pcm.astype(float)
    s, c = np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)
    return float(np.hypot(y @ s, y @ c) / (np.linalg.norm(y) * np.linalg.norm(s)))


@pytest.mark.parametrize(
    ("rate", "channels", "freq", "encoding"),
    [
        (8000, 2, 440.0, ("-b", "16")),
        (16000, 2, 1000.0, ("-b", "16")),
        (44100, 2, 3000.0, ("-b", "16")),
        (22050, 1, 2000.0, ("-b", "24")),
        (11025, 1, 700.0, ("-b", "8", "-e", "unsigned-integer")),
        (96000, 1, 5000.0, ("-b", "32", "-e", "floating-point")),
        (8000, 1, 440.0, ("-b", "8", "-e", "u-law")),
        (8000, 1, 440.0, ("-b", "8", "-e", "a-law")),
        (48000, 1, 440.0, ("-b", "32", "-e", "signed-integer")),
    ],
)
def test_tone_survives_conversion(
    tmp_path: Path, rate: int, channels: int, freq: float, encoding: tuple[str, ...]
) -> None:
    pcm = read_wav(_sox_tone(tmp_path / "t.wav", rate, channels, freq, *encoding))
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert abs(len(pcm) - 48000) <= 1
    assert abs(_peak_hz(pcm) - freq) < 2.0
    body = pcm[2000:-2000]  # skip the filter's edge transients
    assert _sine_fit(body, freq) > 0.999
    assert 0.25 < np.max(np.abs(body)) / 32768 < 0.35  # level kept (vol 0.3)


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_speech_resampled_from_stereo_correlates_with_48k_reference(tmp_path: Path, rate: int) -> None:
    reference = read_wav(make_variant(tmp_path / "ref.wav", 48000, seconds=3.0))
    ours = read_wav(make_variant(tmp_path / "v.wav", rate, seconds=3.0, channels=2))
    match = compare_audio(reference, ours)
    # Band-limiting to 4 kHz (8 kHz source) loses some speech energy; wider bands must be near-identical.
    assert match.correlation > (0.9 if rate == 8000 else 0.98), match
    assert abs(match.lag_seconds) < 0.002


def test_downsampling_removes_content_above_new_nyquist() -> None:
    t = np.arange(48000) / 48000
    x = 0.5 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 6000 * t)
    y = resample(x, 48000, 8000)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 8000)
    alias = spectrum[np.abs(freqs - 2000) < 20].max()  # 6 kHz would alias to 2 kHz
    assert alias < 1e-3 * spectrum.max()


def test_write_read_round_trip(tmp_path: Path) -> None:
    pcm = np.random.default_rng(3).integers(-32768, 32767, 4800, dtype=np.int16)
    write_wav(tmp_path / "x.wav", pcm)
    assert np.array_equal(read_wav(tmp_path / "x.wav"), pcm)
    raw, rate = read_wav_raw(tmp_path / "x.wav")
    assert rate == 48000 and raw.shape == (4800, 1)


def test_bundled_speech_reads(tmp_path: Path) -> None:
    pcm = read_wav(speech_path())
    assert len(pcm) > 48000 * 3 and np.max(np.abs(pcm)) > 10000


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not a wav file at all", "not-wav"),
        (b"RIFF\x04\x00\x00\x00WAVE", "bad-wav"),
        (b"RIFF\x20\x00\x00\x00WAVEfmt \x08\x00\x00\x00" + bytes(8), "bad-fmt"),
        (
            b"RIFF\x30\x00\x00\x00WAVEfmt \x10\x00\x00\x00"
            + bytes.fromhex("5500 0100 401f0000 401f0000 0100 0800")  # MP3-in-WAV
            + b"data\x02\x00\x00\x00\x00\x00",
            "unsupported-format",
        ),
    ],
)
def test_malformed_files_raise_typed_error(tmp_path: Path, data: bytes, reason: str) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(data)
    with pytest.raises(WavError) as info:
        read_wav(path)
    assert info.value.reason == reason
