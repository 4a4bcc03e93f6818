"""Audio codecs behind one small interface: 20 ms frames of 48 kHz mono int16 in and out, whatever the codec's
own rate (opus, pcmu, pcma, g722), plus the registry that maps SDP encoding names to them.

Owns the codecs' rate conversion (streaming polyphase FIR, 48 kHz <-> 8/16 kHz). Never sees keys, sockets or SDP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from G722 import G722  # type: ignore[import-not-found]

from voipgw.audio import g711
from voipgw.audio.opus import OpusDecoder, OpusEncoder
from voipgw.audio.pcm import Floats, Pcm

PCM_RATE = 48000
FRAME_MS = 20
FRAME_SAMPLES = PCM_RATE * FRAME_MS // 1000
TAPS_PER_PHASE = 16
"""FIR length per polyphase branch (16 input samples at the low rate: ~-70 dB stopband, 1 ms delay at 8 kHz)."""
KAISER_BETA = 7.0
CUTOFF = 0.90
"""Passband edge as a fraction of the low rate's Nyquist frequency (3.6 kHz for 8 kHz)."""
G722_BITRATE = 64000
G722_SAMPLE_RATE = 16000


class AudioEncoder(Protocol):
    def encode(self, pcm: Pcm) -> bytes:
        """One 20 ms frame (960 samples at 48 kHz) -> one RTP payload."""
        ...


class AudioDecoder(Protocol):
    @property
    def failed(self) -> int:
        """Payloads the codec could not decode (each played as silence)."""
        ...

    def decode(self, payload: bytes | None) -> Pcm:
        """One RTP payload (None: a lost frame, concealed) -> 960 samples at 48 kHz, never garbage."""
        ...


class UnknownCodec(ValueError):
    """No codec of that name is registered."""

    reason = "unknown-codec"


@dataclass(frozen=True)
class CodecInfo:
    """One codec as the media stream and the SDP see it."""

    name: str
    """Lower-case SDP encoding name (opus, pcmu, pcma, g722)."""
    rtp_clock_rate: int
    """The RTP timestamp clock (G.722 is 8000 although it samples at 16 kHz: RFC 3551 §4.5.2)."""
    static_payload_type: int | None
    """The RFC 3551 payload type, or None for a dynamic one (Opus)."""
    new_encoder: Callable[[], AudioEncoder]
    new_decoder: Callable[[], AudioDecoder]

    @property
    def timestamp_step(self) -> int:
        """RTP timestamp increment per 20 ms frame (960 for Opus, 160 for G.711 and G.722)."""
        return self.rtp_clock_rate * FRAME_MS // 1000


def _design_lowpass(factor: int) -> Floats:
    """Kaiser-windowed sinc for a factor-``factor`` rate change, unity DC gain at the high rate."""
    n = TAPS_PER_PHASE * factor
    t = np.arange(n) - (n - 1) / 2.0
    fc = CUTOFF / (2.0 * factor)  # cycles per high-rate sample
    taps = 2.0 * fc * np.sinc(2.0 * fc * t) * np.kaiser(n, KAISER_BETA)
    out: Floats = taps / taps.sum()
    return out


class Downsampler:
    """Streaming 48 kHz -> 48/``factor`` kHz: keeps the filter history across frames, so frame edges are seamless."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self._taps = _design_lowpass(factor)
        self._history = np.zeros(len(self._taps) - 1)

    def process(self, pcm: Pcm) -> Floats:
        if len(pcm) % self.factor:
            raise ValueError(f"frame of {len(pcm)} samples is not a multiple of {self.factor}")
        buf = np.concatenate([self._history, pcm.astype(np.float64)])
        self._history = buf[len(buf) - len(self._history) :]
        # Only every factor-th output is needed: one dot product per kept sample.
        n_out = len(pcm) // self.factor
        idx = np.arange(n_out)[:, None] * self.factor + np.arange(len(self._taps))[None, :]
        out: Floats = buf[idx] @ self._taps[::-1]
        return out


class Upsampler:
    """Streaming 48/``factor`` kHz -> 48 kHz (polyphase: ``factor`` short filters, no zero-stuffing work)."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        taps = _design_lowpass(factor) * factor
        # Phase p of output sample factor*n + p uses taps p, p+factor, ...: one row per phase.
        self._phases = taps.reshape(TAPS_PER_PHASE, factor).T[:, ::-1].copy()
        self._history = np.zeros(TAPS_PER_PHASE - 1)

    def process(self, low: npt.ArrayLike) -> Floats:
        x = np.asarray(low, dtype=np.float64)
        buf = np.concatenate([self._history, x])
        self._history = buf[len(buf) - len(self._history) :]
        idx = np.arange(len(x))[:, None] + np.arange(TAPS_PER_PHASE)[None, :]
        windows = buf[idx]  # (n_in, taps): the TAPS_PER_PHASE inputs ending at each new input sample
        out: Floats = (windows @ self._phases.T).reshape(-1)
        return out


def clip_to_int16(x: Floats) -> Pcm:
    """Round and clip samples already on the int16 scale (a resampler's output)."""
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


class ResamplingEncoder:
    """Adapts a codec that runs at 48/``factor`` kHz to 48 kHz frames."""

    def __init__(self, inner: AudioEncoder, factor: int) -> None:
        self._inner = inner
        self._down = Downsampler(factor)

    def encode(self, pcm: Pcm) -> bytes:
        if pcm.shape != (FRAME_SAMPLES,):
            raise ValueError(f"expected {FRAME_SAMPLES} samples, got {pcm.shape}")
        return self._inner.encode(clip_to_int16(self._down.process(pcm)))


class ResamplingDecoder:
    """Adapts a 48/``factor`` kHz decoder to 48 kHz frames; concealment runs at the codec's rate and is then
    filtered like real audio, so it joins the signal without a click."""

    def __init__(self, inner: AudioDecoder, factor: int) -> None:
        self._inner = inner
        self._up = Upsampler(factor)

    @property
    def failed(self) -> int:
        return self._inner.failed

    def decode(self, payload: bytes | None) -> Pcm:
        return clip_to_int16(self._up.process(self._inner.decode(payload)))


class G722Encoder:
    """G.722 at 64 kbit/s (the ``G722`` package sippy depends on): 320 samples at 16 kHz -> 160 bytes."""

    def __init__(self) -> None:
        self._codec = G722(G722_SAMPLE_RATE, G722_BITRATE)

    def encode(self, pcm: Pcm) -> bytes:
        return bytes(self._codec.encode(np.ascontiguousarray(pcm, dtype=np.int16)))


class G722Decoder:
    """160 bytes -> 320 samples at 16 kHz; a lost frame repeats the last one, fading, then silence."""

    FRAME_BYTES = 160
    FRAME_SAMPLES = 320

    def __init__(self) -> None:
        self._codec = G722(G722_SAMPLE_RATE, G722_BITRATE, use_numpy=False)
        self._last: Pcm | None = None
        self._lost = 0
        self.failed = 0

    def decode(self, payload: bytes | None) -> Pcm:
        if payload is None:
            self._lost += 1
            if self._last is None or self._lost > len(g711.CONCEAL_GAINS):
                return np.zeros(self.FRAME_SAMPLES, dtype=np.int16)
            return np.round(self._last * g711.CONCEAL_GAINS[self._lost - 1]).astype(np.int16)
        if len(payload) != self.FRAME_BYTES:
            self.failed += 1
            self._last = None
            return np.zeros(self.FRAME_SAMPLES, dtype=np.int16)
        pcm = np.frombuffer(bytes(self._codec.decode(payload)), dtype=np.int16).copy()
        self._last = pcm
        self._lost = 0
        return pcm


def _resampled(
    inner_enc: Callable[[], AudioEncoder], inner_dec: Callable[[], AudioDecoder], rate: int
) -> tuple[Callable[[], AudioEncoder], Callable[[], AudioDecoder]]:
    factor = PCM_RATE // rate
    if factor * rate != PCM_RATE:
        raise ValueError(f"{rate} Hz does not divide {PCM_RATE} Hz")
    return (lambda: ResamplingEncoder(inner_enc(), factor)), (lambda: ResamplingDecoder(inner_dec(), factor))


_PCMU = _resampled(lambda: g711.G711Encoder("pcmu"), lambda: g711.G711Decoder("pcmu"), g711.SAMPLE_RATE)
_PCMA = _resampled(lambda: g711.G711Encoder("pcma"), lambda: g711.G711Decoder("pcma"), g711.SAMPLE_RATE)
_G722 = _resampled(G722Encoder, G722Decoder, G722_SAMPLE_RATE)

OPUS = CodecInfo("opus", PCM_RATE, None, OpusEncoder, OpusDecoder)
PCMU = CodecInfo("pcmu", g711.SAMPLE_RATE, 0, *_PCMU)
PCMA = CodecInfo("pcma", g711.SAMPLE_RATE, 8, *_PCMA)
G722_CODEC = CodecInfo("g722", 8000, 9, *_G722)

CODECS: dict[str, CodecInfo] = {c.name: c for c in (OPUS, PCMU, PCMA, G722_CODEC)}


def get_codec(name: str) -> CodecInfo:
    """The codec registered under the SDP encoding ``name`` (case-insensitive); raises UnknownCodec."""
    try:
        return CODECS[name.lower()]
    except KeyError:
        raise UnknownCodec(f"no codec {name!r} (known: {', '.join(CODECS)})") from None
