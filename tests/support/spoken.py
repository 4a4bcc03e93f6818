"""Finding the gateway's own sounds in a phone's recording: each shipped prompt (or a tone cue) is located by
normalized cross-correlation, so a test can read back the SAS the phone was told, and which cue it heard."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ratchet.sas import B32_ALPHABET
from voipgw.gateway.prompts import load_prompt, symbol_key
from voipgw.gateway.tones import Pattern, tone_samples

Floats = npt.NDArray[np.float64]
MIN_MATCH = 0.8
"""A prompt counts as heard where its normalized correlation with the recording reaches this: the right prompt
scores 0.99 after 8 kHz resampling and noise, while another symbol, or the cue's words, scores up to 0.65."""


@dataclass(frozen=True)
class Heard:
    symbol: str
    at_s: float
    score: float


def ncc(haystack: Floats, needle: Floats) -> Floats:
    """Normalized cross-correlation of ``needle`` at every offset where it fits inside ``haystack`` (FFT)."""
    n, h = len(needle), len(haystack)
    if h < n:
        return np.zeros(0)
    size = 1 << (h + n - 1).bit_length()
    dots = np.fft.irfft(np.fft.rfft(haystack, size) * np.conj(np.fft.rfft(needle, size)), size)[: h - n + 1]
    energy = np.concatenate([[0.0], np.cumsum(haystack * haystack)])
    norms = np.sqrt(np.maximum(energy[n:] - energy[:-n], 0.0)) * float(np.linalg.norm(needle))
    return np.where(norms > 1e-6 * float(np.linalg.norm(needle)) ** 2, dots / np.maximum(norms, 1e-12), 0.0)


def spoken_symbols(recording: npt.ArrayLike, rate: int) -> list[Heard]:
    """Every SAS symbol prompt heard in ``recording`` (mono, at ``rate``), in order: the best match first, then
    the next best that does not overlap it, and so on, while a match reaches MIN_MATCH."""
    rec = np.asarray(recording, dtype=np.float64)
    scores = {s: ncc(rec, load_prompt(symbol_key(s), rate).astype(np.float64)) for s in B32_ALPHABET}
    lengths = {s: len(load_prompt(symbol_key(s), rate)) for s in B32_ALPHABET}
    taken: list[tuple[int, int]] = []
    found: list[Heard] = []
    while True:
        best = max(((float(c.max()) if len(c) else 0.0, s) for s, c in scores.items()), default=(0.0, ""))
        if best[0] < MIN_MATCH:
            break
        symbol = best[1]
        at = int(np.argmax(scores[symbol]))
        span = (at, at + lengths[symbol])
        for s, c in scores.items():  # nothing else can be heard where this prompt was
            c[max(0, span[0] - lengths[s] + 1) : span[1]] = 0.0
        if not any(a < span[1] and span[0] < b for a, b in taken):
            taken.append(span)
            found.append(Heard(symbol, at / rate, best[0]))
    return sorted(found, key=lambda h: h.at_s)


def cue_score(recording: npt.ArrayLike, pattern: Pattern, rate: int) -> float:
    """How well a tone cue matches the recording at its best offset (1.0: exactly there)."""
    from voipgw.audio.wav import resample

    cue = resample(tone_samples(pattern).astype(np.float64), 48000, rate)
    scores = ncc(np.asarray(recording, dtype=np.float64), cue)
    return float(scores.max()) if len(scores) else 0.0
