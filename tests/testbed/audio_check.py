"""Compare received audio with what was sent: WAV I/O, resampling, FFT cross-correlation (global, windowed).

Pure numpy on arrays and files it is given; never touches sockets or processes.
Pitfalls: jitter buffers stretch time, so a single global lag under-reports long calls; the windowed median
(0.5 s chunks, each searched within +-150 ms, speech-bearing chunks only) is robust to that.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float64]

WINDOW_S = 0.5
SEARCH_S = 0.15
# A window whose reference RMS is below this share of the loudest window's RMS is a pause: skip it.
ACTIVE_WINDOW_SHARE = 0.1


def read_wav(path: Path) -> tuple[Samples, int]:
    """Mono float samples in [-1, 1) and the sample rate (channels are averaged)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM supported, got {8 * w.getsampwidth()}-bit")
        rate = w.getframerate()
        channels = w.getnchannels()
        raw = w.readframes(w.getnframes())
    data = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    if channels > 1:
        data = data[: len(data) - len(data) % channels].reshape(-1, channels).mean(axis=1)
    return data, rate


def write_wav(path: Path, samples: Samples, rate: int) -> Path:
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def resample(samples: Samples, src_rate: int, dst_rate: int) -> Samples:
    """Band-limited FFT resampling (fine for clips of a few seconds)."""
    if src_rate == dst_rate or len(samples) == 0:
        return samples
    n_out = round(len(samples) * dst_rate / src_rate)
    spec = np.fft.rfft(samples)
    n_bins = n_out // 2 + 1
    if n_bins <= len(spec):
        spec = spec[:n_bins]
    else:
        spec = np.concatenate([spec, np.zeros(n_bins - len(spec), dtype=spec.dtype)])
    out: Samples = np.fft.irfft(spec, n_out) * (n_out / len(samples))
    return out


def _xcorr_best(ref: Samples, sig: Samples) -> tuple[float, int]:
    """Best normalized correlation of `ref` in `sig` over all lags, and that lag (sig index of ref[0])."""
    n = len(ref) + len(sig) - 1
    size = 1 << (n - 1).bit_length()
    cc = np.fft.irfft(np.fft.rfft(sig, size) * np.conj(np.fft.rfft(ref, size)), size)
    # Lags: 0..len(sig)-1 are sig shifted right; negative lags wrap to the end.
    lags = np.concatenate([np.arange(0, len(sig)), np.arange(-(len(ref) - 1), 0)])
    cc = np.concatenate([cc[: len(sig)], cc[size - (len(ref) - 1) :]])
    best = int(np.argmax(np.abs(cc)))
    lag = int(lags[best])
    # Normalize over the overlapping part only, so a partial overlap cannot inflate the figure.
    r0, s0 = max(0, -lag), max(0, lag)
    m = min(len(ref) - r0, len(sig) - s0)
    if m <= 0:
        return 0.0, lag
    a, b = ref[r0 : r0 + m], sig[s0 : s0 + m]
    denom = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return (float(np.dot(a, b)) / denom if denom > 0 else 0.0), lag


def correlation(ref: Samples, sig: Samples) -> float:
    """Global normalized cross-correlation at the best alignment (|value|, 0..1)."""
    if len(ref) == 0 or len(sig) == 0:
        return 0.0
    return abs(_xcorr_best(ref, sig)[0])


def windowed_correlation(ref: Samples, sig: Samples, rate: int) -> float:
    """Median normalized correlation of 0.5 s speech windows of `ref`, each searched in `sig` within +-150 ms
    of the global alignment; windows that fall outside `sig` are skipped. 0.0 when nothing aligns."""
    if len(ref) == 0 or len(sig) == 0:
        return 0.0
    _, lag = _xcorr_best(ref, sig)
    win, search = int(WINDOW_S * rate), int(SEARCH_S * rate)
    starts = range(0, len(ref) - win + 1, win)
    rms = [float(np.sqrt(np.mean(ref[s : s + win] ** 2))) for s in starts]
    if not rms:
        return 0.0
    loud = max(rms)
    scores: list[float] = []
    for s, level in zip(starts, rms, strict=True):
        if loud == 0 or level < ACTIVE_WINDOW_SHARE * loud:
            continue
        lo = max(0, s + lag - search)
        hi = min(len(sig), s + lag + win + search)
        if s + lag < 0 or s + lag + win > len(sig):
            continue  # outside the overlap: a truncated recording is judged on what it holds
        scores.append(abs(_xcorr_best(ref[s : s + win], sig[lo:hi])[0]))
    return float(np.median(scores)) if scores else 0.0


def compare_files(sent: Path, received: Path) -> tuple[float, float]:
    """(global, windowed) correlation of `received` against `sent`, at the received file's rate."""
    ref, ref_rate = read_wav(sent)
    sig, rate = read_wav(received)
    ref = resample(ref, ref_rate, rate)
    return correlation(ref, sig), windowed_correlation(ref, sig, rate)


def rms(samples: Samples) -> float:
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0
