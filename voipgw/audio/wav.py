"""WAV files: read any common PCM/float WAV and convert to 48 kHz mono int16; write 16-bit WAV.

Owns the resampler (Kaiser-windowed sinc, polyphase over the exact rational ratio). Never plays audio.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from voipgw.audio.pcm import Floats, Pcm

TARGET_RATE = 48000
ZERO_CROSSINGS = 24
"""Sinc lobes on each side of the interpolation point (with KAISER_BETA: stopband below -80 dB)."""
KAISER_BETA = 8.6
ROLLOFF = 0.94
"""Cutoff as a fraction of the lower Nyquist frequency, leaving room for the transition band."""
CHUNK = 1 << 16
"""Output samples computed per vectorized step (bounds the temporary tap matrix to ~25 MB)."""

_PCM = 0x0001
_FLOAT = 0x0003
_ALAW = 0x0006
_ULAW = 0x0007
_EXTENSIBLE = 0xFFFE


class WavError(ValueError):
    """A file is not a WAV we can read (``reason`` is a short code)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _g711_table(ulaw: bool) -> Floats:
    codes = np.arange(256, dtype=np.int64)
    if ulaw:
        u = ~codes & 0xFF
        sign = u & 0x80
        exponent = (u >> 4) & 0x07
        mantissa = u & 0x0F
        mag = (((mantissa << 3) + 0x84) << exponent) - 0x84
        vals = np.where(sign != 0, -mag, mag)
    else:
        a = codes ^ 0x55
        sign = a & 0x80
        exponent = (a >> 4) & 0x07
        mantissa = a & 0x0F
        mag = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
        vals = np.where(sign != 0, mag, -mag)
    return vals.astype(np.float64) / 32768.0


def _decode_samples(raw: bytes, fmt: int, width: int) -> Floats:
    """Samples as floats in [-1, 1), interleaved."""
    if fmt == _PCM:
        if width == 1:
            return (np.frombuffer(raw, np.uint8).astype(np.float64) - 128.0) / 128.0
        if width == 2:
            return np.frombuffer(raw, "<i2").astype(np.float64) / 32768.0
        if width == 3:
            b = np.frombuffer(raw[: len(raw) // 3 * 3], np.uint8).reshape(-1, 3).astype(np.int32)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            v = np.where(v & 0x800000, v - (1 << 24), v)
            return v.astype(np.float64) / float(1 << 23)
        if width == 4:
            return np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)
    elif fmt == _FLOAT and width in (4, 8):
        data = np.frombuffer(raw, "<f4" if width == 4 else "<f8").astype(np.float64)
        return np.nan_to_num(np.clip(data, -1.0, 1.0))
    elif fmt in (_ALAW, _ULAW) and width == 1:
        return _g711_table(fmt == _ULAW)[np.frombuffer(raw, np.uint8)]
    raise WavError("unsupported-format", f"format 0x{fmt:04x} with {8 * width}-bit samples")


def read_wav_raw(path: str | Path) -> tuple[Floats, int]:
    """(float64 samples shaped (frames, channels), rate) for PCM 8/16/24/32, float, A-law, µ-law."""
    data = Path(path).read_bytes()
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        raise WavError("not-wav", str(path))
    if data[:4] == b"RIFX":
        raise WavError("unsupported-format", "big-endian RIFX")
    pos = 12
    fmt_info: tuple[int, int, int, int] | None = None
    raw: bytes | None = None
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise WavError("bad-fmt", "fmt chunk too short")
            fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if fmt == _EXTENSIBLE:
                if len(body) < 40:
                    raise WavError("bad-fmt", "short WAVE_FORMAT_EXTENSIBLE")
                (fmt,) = struct.unpack_from("<H", body, 24)  # first two bytes of the sub-format GUID
            fmt_info = (fmt, channels, rate, bits)
        elif cid == b"data":
            raw = body
            break
        pos += 8 + size + (size & 1)
    if fmt_info is None or raw is None:
        raise WavError("bad-wav", "missing fmt or data chunk")
    fmt, channels, rate, bits = fmt_info
    if channels < 1 or rate < 1000 or bits == 0:
        raise WavError("bad-fmt", f"channels={channels} rate={rate} bits={bits}")
    width = (bits + 7) // 8
    frame_bytes = width * channels
    raw = raw[: len(raw) // frame_bytes * frame_bytes]
    samples = _decode_samples(raw, fmt, width)
    return samples.reshape(-1, channels), rate


def _kaiser_sinc_taps(up: int, down: int) -> tuple[Floats, int]:
    """Polyphase taps: row p interpolates at input offset p/up. Returns (taps[up, 2*half], half)."""
    cutoff = ROLLOFF * min(1.0, up / down)  # relative to the input Nyquist
    half = math.ceil(ZERO_CROSSINGS / cutoff)
    k = np.arange(-half + 1, half + 1, dtype=np.float64)  # input offsets relative to floor(position)
    frac = np.arange(up, dtype=np.float64)[:, None] / up
    t = k[None, :] - frac  # distance of each tap from the interpolation point, in input samples
    window = np.i0(KAISER_BETA * np.sqrt(np.clip(1.0 - (t / half) ** 2, 0.0, 1.0))) / np.i0(KAISER_BETA)
    taps = cutoff * np.sinc(cutoff * t) * window
    return taps, half


def resample(x: Floats, rate_in: int, rate_out: int = TARGET_RATE) -> Floats:
    """Band-limited resampling of a 1-D signal by the exact ratio rate_out/rate_in."""
    if rate_in == rate_out or len(x) == 0:
        return x.astype(np.float64, copy=True)
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    taps, half = _kaiser_sinc_taps(up, down)
    n_out = (len(x) * up) // down
    padded = np.concatenate([np.zeros(half), x.astype(np.float64), np.zeros(half + 1)])
    offsets = np.arange(-half + 1, half + 1)
    out = np.empty(n_out, dtype=np.float64)
    step = max(1, CHUNK // len(offsets))
    for start in range(0, n_out, step):
        n = np.arange(start, min(n_out, start + step), dtype=np.int64)
        pos = n * down
        base = pos // up
        phase = pos % up
        idx = base[:, None] + offsets[None, :] + half
        out[start : start + len(n)] = np.einsum("ij,ij->i", padded[idx], taps[phase])
    return out


def float_to_int16(x: Floats) -> Pcm:
    """Scale samples in [-1, 1) to int16 (x 32768), rounding and clipping."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def read_wav(path: str | Path, rate: int = TARGET_RATE) -> Pcm:
    """Read a WAV of any common format, downmix to mono (channel mean) and resample to ``rate``."""
    samples, rate_in = read_wav_raw(path)
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return float_to_int16(resample(mono, rate_in, rate))


def wav_header(data_bytes: int, rate: int = TARGET_RATE) -> bytes:
    """The 44-byte header of a mono 16-bit PCM WAV whose data chunk holds ``data_bytes`` bytes."""
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, _PCM, 1, rate, rate * 2, 2, 16)
    return header + fmt + b"data" + struct.pack("<I", data_bytes)


def write_wav(path: str | Path, pcm: Pcm, rate: int = TARGET_RATE) -> None:
    """Write mono 16-bit PCM."""
    body = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
    Path(path).write_bytes(wav_header(len(body), rate) + body)
