"""G.711 μ-law (PCMU) and A-law (PCMA) at 8 kHz: lookup-table encode/decode and a repeat-and-fade concealment.

Bit-exact with the ITU-T G.711 reference (Sun's g711.c), built once as numpy tables; audioop is deprecated.
Works on 8 kHz int16 samples only (rate conversion is voipgw.audio.codecs's job); never sees keys or sockets.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from voipgw.audio.pcm import Pcm

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160
"""20 ms at 8 kHz: also the payload size in bytes and the RTP timestamp step."""
CONCEAL_GAINS = (0.8, 0.5, 0.25)
"""Gains for the 1st, 2nd, 3rd consecutive lost frame (the last good frame, repeated); then silence, so a
long gap fades instead of buzzing a 50 Hz loop."""
ULAW_CLIP = 8159
"""Largest 14-bit magnitude μ-law codes (G.711 §A: 8159 + bias 33 = 0x2000)."""

Codes = npt.NDArray[np.uint8]


def _segment(values: npt.NDArray[np.int64], ends: tuple[int, ...]) -> npt.NDArray[np.int64]:
    """Index of the first segment end >= value (8 when above every end), as g711.c's search()."""
    return np.searchsorted(np.asarray(ends), values, side="left").astype(np.int64)


def _build_ulaw_encode() -> Codes:
    pcm = np.arange(-32768, 32768, dtype=np.int64) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.where(pcm < 0, -pcm, pcm), ULAW_CLIP) + 0x21
    seg = _segment(mag, (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF))
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0x0F))
    return (code ^ mask).astype(np.uint8)


def _build_alaw_encode() -> Codes:
    pcm = np.arange(-32768, 32768, dtype=np.int64) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = _segment(mag, (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF))
    s = np.minimum(seg, 7)
    mant = np.where(s < 2, (mag >> 1) & 0x0F, (mag >> s) & 0x0F)
    code = np.where(seg >= 8, 0x7F, (s << 4) | mant)
    return (code ^ mask).astype(np.uint8)


def _build_ulaw_decode() -> Pcm:
    u = ~np.arange(256, dtype=np.int64) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _build_alaw_decode() -> Pcm:
    a = np.arange(256, dtype=np.int64) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _by_bits(table: Codes) -> Codes:
    """The encode table re-indexed by the sample's 16 bits read unsigned (0..32767, then -32768..-1): a frame
    indexes it through a zero-copy uint16 view, with no widening and no offset (a third of G.711's cost)."""
    return np.concatenate([table[32768:], table[:32768]])


# Encode tables are indexed by sample + 32768 (64 KiB each); decode tables by code.
_ULAW_ENC = _build_ulaw_encode()
_ALAW_ENC = _build_alaw_encode()
_ULAW_ENC_BITS = _by_bits(_ULAW_ENC)
_ALAW_ENC_BITS = _by_bits(_ALAW_ENC)
_ULAW_DEC = _build_ulaw_decode()
_ALAW_DEC = _build_alaw_decode()


def _index(pcm: npt.ArrayLike) -> npt.NDArray[np.int64]:
    return np.asarray(pcm, dtype=np.int16).astype(np.int64) + 32768


def ulaw_encode(pcm: npt.ArrayLike) -> bytes:
    """int16 samples -> μ-law bytes (one per sample)."""
    return _ULAW_ENC[_index(pcm)].tobytes()


def alaw_encode(pcm: npt.ArrayLike) -> bytes:
    """int16 samples -> A-law bytes (one per sample)."""
    return _ALAW_ENC[_index(pcm)].tobytes()


def ulaw_decode(data: bytes) -> Pcm:
    out: Pcm = _ULAW_DEC[np.frombuffer(data, dtype=np.uint8)]
    return out


def alaw_decode(data: bytes) -> Pcm:
    out: Pcm = _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)]
    return out


class G711Encoder:
    """One 20 ms frame (160 samples at 8 kHz) -> 160 bytes. ``law`` is "pcmu" or "pcma"."""

    def __init__(self, law: str) -> None:
        if law not in ("pcmu", "pcma"):
            raise ValueError(f"unknown G.711 law {law!r}")
        self.law = law
        self._table = _ULAW_ENC_BITS if law == "pcmu" else _ALAW_ENC_BITS

    def encode(self, pcm: Pcm) -> bytes:
        if pcm.shape != (FRAME_SAMPLES,):
            raise ValueError(f"expected {FRAME_SAMPLES} samples, got {pcm.shape}")
        if pcm.dtype != np.int16:
            pcm = pcm.astype(np.int16)
        return self._table[pcm.view(np.uint16)].tobytes()


class G711Decoder:
    """160 bytes -> 160 samples at 8 kHz. ``decode(None)`` conceals a lost frame (the last one, fading);
    a payload that is not exactly one 20 ms frame is counted in ``failed`` and plays as silence."""

    def __init__(self, law: str) -> None:
        if law not in ("pcmu", "pcma"):
            raise ValueError(f"unknown G.711 law {law!r}")
        self.law = law
        self._table = _ULAW_DEC if law == "pcmu" else _ALAW_DEC
        self._last: Pcm | None = None
        self._lost = 0
        self.decoded = 0
        self.concealed = 0
        self.failed = 0

    def decode(self, payload: bytes | None) -> Pcm:
        if payload is None:
            return self._conceal()
        if len(payload) != FRAME_SAMPLES:
            # Another ptime (10/30 ms) would need a timestamp-driven buffer; playing it as 20 ms would garble.
            self.failed += 1
            self._last = None
            return np.zeros(FRAME_SAMPLES, dtype=np.int16)
        pcm: Pcm = self._table[np.frombuffer(payload, dtype=np.uint8)]
        self._last = pcm
        self._lost = 0
        self.decoded += 1
        return pcm

    def _conceal(self) -> Pcm:
        self._lost += 1
        if self._last is None or self._lost > len(CONCEAL_GAINS):
            return np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.concealed += 1
        faded = self._last.astype(np.float64) * CONCEAL_GAINS[self._lost - 1]
        return np.round(faded).astype(np.int16)
