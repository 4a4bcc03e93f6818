"""How well received audio matches what was sent: FFT-aligned normalized cross-correlation,
global and windowed.

The windowed median (0.5 s chunks, each re-aligned within ±150 ms) tolerates the time stretching of jitter
buffers and concealment; the global peak does not. Pure computation: never touches files, devices or sockets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DEFAULT_RATE = 48000
WINDOW_SECONDS = 0.5
SEARCH_SECONDS = 0.150
QUIET_FRACTION = 0.1
"""Windows of the sent signal quieter than this fraction of its overall RMS are skipped (speech pauses)."""
SILENT_RATIO = 1e-3
"""A stretch of ``received`` 60 dB below the sent window it is compared with counts as silence."""
_EPS = 1e-12


@dataclass(frozen=True)
class AudioMatch:
    """Result of :func:`compare_audio`."""

    correlation: float
    """Global peak of the cross-correlation divided by both signals' norms (1.0 = identical up to delay)."""
    lag_seconds: float
    """Delay of ``received`` relative to ``sent`` at the global peak."""
    windowed: float
    """Median over 0.5 s windows of the best normalized correlation within ±150 ms of the global lag."""
    windows: int
    """Windows that contributed (loud enough in ``sent``)."""
    windowed_min: float
    """The worst window (useful to spot a dropout)."""


def _as_float(x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return np.asarray(x, dtype=np.float64).ravel()


def _xcorr(long: npt.NDArray[np.float64], short: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """c[k] = sum_n long[n + k] * short[n] for k in [-(len(short) - 1), len(long) - 1], via FFT."""
    n = len(long) + len(short) - 1
    size = 1 << (n - 1).bit_length()
    spec = np.fft.rfft(long, size) * np.conj(np.fft.rfft(short, size))
    full = np.fft.irfft(spec, size)
    # Negative lags wrap to the end of the circular result.
    return np.concatenate([full[size - (len(short) - 1) :], full[: len(long)]])


def compare_audio(sent: npt.ArrayLike, received: npt.ArrayLike, rate: int = DEFAULT_RATE) -> AudioMatch:
    """Compare two mono signals at the same ``rate`` (int16 or float)."""
    a = _as_float(sent)
    b = _as_float(received)
    if len(a) == 0 or len(b) == 0:
        return AudioMatch(0.0, 0.0, 0.0, 0, 0.0)
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm < _EPS:
        return AudioMatch(0.0, 0.0, 0.0, 0, 0.0)
    c = _xcorr(b, a)
    peak = int(np.argmax(c))
    lag = peak - (len(a) - 1)
    correlation = float(c[peak] / norm)

    win = int(WINDOW_SECONDS * rate)
    search = int(SEARCH_SECONDS * rate)
    rms = float(np.sqrt(np.mean(a * a)))
    scores: list[float] = []
    for start in range(0, len(a) - win + 1, win):
        chunk = a[start : start + win]
        chunk_norm = float(np.linalg.norm(chunk))
        if chunk_norm / np.sqrt(win) < QUIET_FRACTION * rms:
            continue
        lo = max(0, start + lag - search)
        hi = min(len(b), start + lag + search + win)
        region = b[lo:hi]
        if len(region) < win:
            scores.append(0.0)
            continue
        dots = _xcorr(region, chunk)[win - 1 : len(region)]  # only lags where the chunk fits inside the region
        energy = np.concatenate([[0.0], np.cumsum(region * region)])
        region_norms = np.sqrt(np.maximum(energy[win:] - energy[:-win], 0.0))
        # A near-silent stretch of ``received`` makes both the dot products (FFT rounding noise) and the norms tiny:
        # their ratio is noise that can exceed 1, so such lags score 0 and no score exceeds Cauchy-Schwarz's 1.
        audible = region_norms > SILENT_RATIO * chunk_norm
        ncc = np.where(audible, dots / np.maximum(region_norms * chunk_norm, _EPS), 0.0)
        scores.append(min(1.0, float(np.max(ncc))))
    windowed = float(np.median(scores)) if scores else 0.0
    return AudioMatch(
        correlation=correlation,
        lag_seconds=lag / rate,
        windowed=windowed,
        windows=len(scores),
        windowed_min=float(min(scores)) if scores else 0.0,
    )
