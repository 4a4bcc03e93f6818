"""Audio codecs behind one small interface: 20 ms frames of 48 kHz mono int16 in and out, whatever the codec's
own rate (opus, pcmu, pcma, g722), plus the registry that maps SDP encoding names to them.

Owns the codecs' rate conversion (streaming polyphase FIR, 48 kHz <-> 8/16 kHz). A frame's length says its rate
(960 samples: 48 kHz, 320: 16 kHz, 160: 8 kHz): every encoder here takes any of them, and a decoder told
``use_rate`` its own rate (a gateway bridge whose other leg codes at that rate too) skips the conversion to 48 kHz
and back. Never sees keys, sockets or SDP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

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
FRAME_RATES = {rate * FRAME_MS // 1000: rate for rate in (8000, 12000, 16000, 24000, 48000)}
"""Samples in a 20 ms frame -> its rate: how a frame says its rate without a wrapper object."""


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


_WINDOWS: dict[tuple[int, int, int], npt.NDArray[np.intp]] = {}


def _window_index(n_out: int, step: int, width: int) -> npt.NDArray[np.intp]:
    """Row k: the ``width`` buffer indices from ``k * step`` (a filter's input windows), made once per shape."""
    key = (n_out, step, width)
    idx = _WINDOWS.get(key)
    if idx is None:
        idx = _WINDOWS[key] = np.arange(n_out)[:, None] * step + np.arange(width)[None, :]
    return idx


class Downsampler:
    """Streaming 48 kHz -> 48/``factor`` kHz: keeps the filter history across frames, so frame edges are seamless."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self._taps = _design_lowpass(factor)
        self._history = np.zeros(len(self._taps) - 1)
        self._reversed = self._taps[::-1].copy()

    def process(self, pcm: Pcm) -> Floats:
        if len(pcm) % self.factor:
            raise ValueError(f"frame of {len(pcm)} samples is not a multiple of {self.factor}")
        buf = np.concatenate([self._history, pcm.astype(np.float64)])
        self._history = buf[len(buf) - len(self._history) :]
        # Only every factor-th output is needed: one dot product per kept sample.
        out: Floats = buf[_window_index(len(pcm) // self.factor, self.factor, len(self._taps))] @ self._reversed
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
        windows = buf[_window_index(len(x), 1, TAPS_PER_PHASE)]  # the TAPS_PER_PHASE inputs ending at each input
        out: Floats = (windows @ self._phases.T).reshape(-1)
        return out


def clip_to_int16(x: Floats) -> Pcm:
    """Round and clip samples already on the int16 scale (a resampler's output)."""
    out: Pcm = np.clip(np.rint(x), -32768, 32767).astype(np.int16)
    return out


def frame_rate(pcm: Pcm) -> int:
    """The rate of a 20 ms frame, from its length; raises ValueError for a length that is no 20 ms frame."""
    rate = FRAME_RATES.get(len(pcm))
    if rate is None or pcm.ndim != 1:
        raise ValueError(f"a frame of {pcm.shape} samples is not 20 ms at any of {sorted(FRAME_RATES.values())} Hz")
    return rate


class RateConverter:
    """20 ms frames at whatever rate they come to one ``rate``: the gateway's own audio (48 kHz cues, ringback)
    into a coder that runs narrowband. One streaming resampler per source rate, made when first needed (a rate
    other than 48 kHz goes up to 48 kHz first: never expected on a bridge, whose decoders run at its rate)."""

    def __init__(self, rate: int) -> None:
        if PCM_RATE % rate:
            raise ValueError(f"{rate} Hz does not divide {PCM_RATE} Hz")
        self.rate = rate
        self.samples = rate * FRAME_MS // 1000
        self._down: Downsampler | None = None
        self._up: dict[int, Upsampler] = {}

    def convert(self, pcm: Pcm) -> Pcm:
        if len(pcm) == self.samples and pcm.ndim == 1:
            return pcm
        rate = frame_rate(pcm)
        if rate != PCM_RATE:
            up = self._up.get(rate)
            if up is None:
                up = self._up[rate] = Upsampler(PCM_RATE // rate)
            pcm = clip_to_int16(up.process(pcm))
            if self.rate == PCM_RATE:
                return pcm
        if self._down is None:
            self._down = Downsampler(PCM_RATE // self.rate)
        return clip_to_int16(self._down.process(pcm))


class CodecParts(Protocol):
    """What a rate-aware coder registers with (a MediaStream): the gateway finds its bridge's coders there."""

    codec_parts: list[Any]


class ResamplingEncoder:
    """Adapts a codec that runs at 48/``factor`` kHz to 20 ms frames at any rate (48 kHz usually; its own rate
    on a gateway bridge: then nothing to convert)."""

    def __init__(self, inner: AudioEncoder, factor: int) -> None:
        self._inner = inner
        self._to_native = RateConverter(PCM_RATE // factor)
        self.native_rate = PCM_RATE // factor

    def encode(self, pcm: Pcm) -> bytes:
        return self._inner.encode(self._to_native.convert(pcm))

    def attach_stream(self, stream: CodecParts) -> None:
        stream.codec_parts.append(self)

    def use_rate(self, rate: int) -> None:
        """Nothing to do: a frame's length says its rate."""

    def release(self) -> None:
        """Nothing worth releasing (the G.711 tables are shared)."""


class ResamplingDecoder:
    """Adapts a 48/``factor`` kHz decoder to 48 kHz frames; concealment runs at the codec's rate and is then
    filtered like real audio, so it joins the signal without a click. After ``use_rate(native_rate)`` its frames
    stay at the codec's own rate (a gateway bridge whose other leg's coder runs at that rate)."""

    def __init__(self, inner: AudioDecoder, factor: int) -> None:
        self._inner = inner
        self._up = Upsampler(factor)
        self.native_rate = PCM_RATE // factor
        self._native = False

    @property
    def failed(self) -> int:
        return self._inner.failed

    def attach_stream(self, stream: CodecParts) -> None:
        stream.codec_parts.append(self)

    def use_rate(self, rate: int) -> None:
        """Decode to ``rate`` from now on: the codec's own rate, or 48 kHz (any other rate: 48 kHz)."""
        self._native = rate == self.native_rate

    def release(self) -> None:
        """Nothing worth releasing."""

    def decode(self, payload: bytes | None) -> Pcm:
        pcm = self._inner.decode(payload)
        if self._native:
            return pcm
        return clip_to_int16(self._up.process(pcm))


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
