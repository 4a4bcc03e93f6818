"""The audio check the hardening tests rely on cannot be fooled by a silent recording.

Found while measuring the start-offset bug: a nearly silent recording scored ``windowed`` 2.7 (up to 238 418)
because FFT rounding noise was divided by a near-zero norm; a silent call could pass a ``>= 0.9`` check.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.phones import SPEECH
from voipgw.audio.compare import compare_audio
from voipgw.audio.wav import read_wav

pytestmark = pytest.mark.hardening


def test_a_silent_or_near_silent_recording_scores_zero() -> None:
    speech = read_wav(SPEECH)
    for received in (np.zeros(len(speech), dtype=np.int16), np.eye(1, len(speech), 5, dtype=np.int16)[0]):
        match = compare_audio(speech, received)
        assert match.windowed == 0.0 and match.windowed_min == 0.0, match


def test_scores_stay_within_one_and_the_real_thing_still_matches() -> None:
    speech = read_wav(SPEECH)
    rng = np.random.default_rng(3)
    partly = np.zeros(len(speech) + 4800, dtype=np.int16)
    partly[4800 + 100_000 : 4800 + 148_000] = speech[100_000:148_000]  # one second heard, the rest silent
    noisy = (speech + rng.normal(0, 300, len(speech))).astype(np.int16)
    for received in (partly, noisy, speech):
        match = compare_audio(speech, received)
        assert 0.0 <= match.windowed_min <= match.windowed <= 1.0, match
    assert compare_audio(speech, speech).windowed > 0.999
    assert compare_audio(speech, noisy).windowed > 0.9
    assert compare_audio(speech, partly).windowed < 0.2
