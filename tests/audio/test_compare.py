"""The audio comparison used by tests and the demo: positives near 1, negative controls near 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.testbed.speech import make_tone, speech_path
from voipgw.audio.compare import compare_audio
from voipgw.audio.wav import read_wav


def test_delayed_copy_is_found_with_its_lag() -> None:
    speech = read_wav(speech_path())
    received = np.concatenate([np.zeros(4321, dtype=np.int16), speech // 2])
    match = compare_audio(speech, received)
    assert match.correlation > 0.999 and match.windowed > 0.999
    assert abs(match.lag_seconds - 4321 / 48000) < 1e-6
    assert match.windows >= 8


def test_speech_vs_tone_negative_control_is_low(tmp_path: Path) -> None:
    speech = read_wav(speech_path())
    tone = read_wav(make_tone(tmp_path / "tone.wav", rate=8000, seconds=len(speech) / 48000))
    match = compare_audio(speech, tone)
    assert match.correlation < 0.1, match
    assert match.windowed < 0.15, match


def test_speech_vs_noise_and_vs_other_speech_are_low() -> None:
    speech = read_wav(speech_path())
    noise = np.random.default_rng(5).normal(0, 3000, len(speech)).astype(np.int16)
    assert compare_audio(speech, noise).windowed < 0.15
    # Different words of the same voice: the first half against the second half.
    half = len(speech) // 2
    assert compare_audio(speech[:half], speech[half:]).correlation < 0.3


def test_time_stretch_hurts_global_but_not_windowed() -> None:
    speech = read_wav(speech_path())
    # 60 ms of silence every second (a jitter buffer rebuffering): windows re-align, the global peak cannot.
    parts = []
    for start in range(0, len(speech), 48000):
        parts += [speech[start : start + 48000], np.zeros(2880, dtype=np.int16)]
    match = compare_audio(speech, np.concatenate(parts))
    assert match.windowed > 0.9
    assert match.correlation < match.windowed


def test_empty_and_silent_inputs() -> None:
    assert compare_audio([], [1, 2, 3]).correlation == 0.0
    assert compare_audio(np.zeros(48000), np.zeros(48000)).windowed == 0.0
