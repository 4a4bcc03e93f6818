"""Opus mono, 20 ms frames (opuslib over the system libopus0): encode (VBR, or CBR with a per-frame byte budget for
sealed streams whose frames must all be one size), decode, loss concealment. PCM at 48 kHz by default, or at 8, 12,
16 or 24 kHz (``rate``): libopus codes such PCM directly, with the same wire format (RTP Opus is always 48000/2),
which a gateway bridging a narrowband phone uses instead of resampling to 48 kHz around a 48 kHz coder.

A failed decode yields silence and a counter, never garbage. Never sees keys or sockets.
"""

from __future__ import annotations

import ctypes

import numpy as np
import opuslib
import opuslib.api.ctl as _opus_ctl
import opuslib.api.decoder as _opus_dec
import opuslib.api.encoder as _opus_enc

from voipgw.audio.pcm import Pcm

SAMPLE_RATE = 48000
CHANNELS = 1
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
RATES = (8000, 12000, 16000, 24000, 48000)
"""The PCM rates libopus encodes from and decodes to (opus_encoder_create / opus_decoder_create ``Fs``)."""
DEFAULT_BITRATE = 24000
MAX_PACKET = 1275
"""Largest Opus packet for one frame (RFC 6716 §3.4 R2)."""
MIN_BUDGET = 12
"""Below this many bytes a sealed frame carries no Opus at all (the receiver conceals it): measured on the test
speech with DH steps every 2 s, starved 10-byte packets correlate worse (0.883) than concealment (0.900)."""

_libopus = _opus_enc.opuslib.api.libopus
_packet_pad = _libopus.opus_packet_pad
_packet_pad.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]
_packet_pad.restype = ctypes.c_int
_encode = _opus_enc.libopus_encode
_decode = _opus_dec.libopus_decode
_INT16_P = ctypes.POINTER(ctypes.c_int16)


def frame_samples(rate: int) -> int:
    """Samples in one 20 ms frame at ``rate``; raises ValueError for a rate libopus does not take."""
    if rate not in RATES:
        raise ValueError(f"Opus takes PCM at {RATES} Hz, not {rate}")
    return rate * FRAME_MS // 1000


class OpusBudgetError(ValueError):
    """A byte budget libopus cannot meet (below 1 byte, above MAX_PACKET)."""

    reason = "opus-budget"


def cbr_packet_bytes(bitrate: int) -> int:
    """The size of every CBR packet at ``bitrate`` (20 ms frames): 60 bytes at 24 kbps."""
    return max(1, min(MAX_PACKET, bitrate * FRAME_MS // 8000))


def pad_packet(packet: bytes, size: int) -> bytes:
    """``packet`` grown to exactly ``size`` bytes by libopus's own padding (RFC 6716 §3.2.5): the decoder
    ignores it, so the audio is bit-identical. Raises OpusBudgetError if libopus cannot (smaller size, bad packet)."""
    if size == len(packet):
        return packet
    buf = ctypes.create_string_buffer(packet, max(size, len(packet)))
    if size < len(packet) or size > MAX_PACKET or _packet_pad(buf, len(packet), size) != 0:
        raise OpusBudgetError(f"cannot pad a {len(packet)}-byte packet to {size}")
    return buf.raw[:size]


def silence() -> Pcm:
    return np.zeros(FRAME_SAMPLES, dtype=np.int16)


class OpusEncoder:
    """VoIP-mode Opus encoder; FEC and DTX off by default (a frame every tick keeps the counter steady).

    VBR by default (plain calls, the gateway's bridge). ``cbr=True`` (or :meth:`use_cbr`), for sealed streams:
    every packet is ``packet_bytes`` long whatever the speech (RFC 6562), and ``encode(pcm, max_bytes=n)`` makes
    exactly ``n`` bytes, so a frame that carries control data gives up that many Opus bytes instead of growing."""

    def __init__(
        self,
        bitrate: int = DEFAULT_BITRATE,
        *,
        fec: bool = False,
        dtx: bool = False,
        complexity: int = 5,
        cbr: bool = False,
        rate: int = SAMPLE_RATE,
    ) -> None:
        self.rate = rate
        self.frame_samples = frame_samples(rate)
        self._enc = opuslib.Encoder(rate, CHANNELS, opuslib.APPLICATION_VOIP)
        self._out = ctypes.create_string_buffer(MAX_PACKET)
        """Reused output buffer: opuslib's wrapper allocates one per call and copies it twice."""
        self._enc.bitrate = bitrate
        self._enc.complexity = complexity
        self.bitrate = bitrate
        self.cbr = False
        # opuslib 3.0.1's inband_fec/dtx property setters are broken (missing value / wrong request).
        state = self._enc.encoder_state
        _opus_enc.encoder_ctl(state, _opus_ctl.set_inband_fec, int(fec))
        # DTX would send 1-byte packets in silences: a size that says "silence" on the wire.
        _opus_enc.encoder_ctl(state, _opus_ctl.set_dtx, int(dtx and not cbr))
        if cbr:
            self.use_cbr()

    @property
    def packet_bytes(self) -> int | None:
        """Every packet's size in CBR (60 at 24 kbps); None in VBR."""
        return cbr_packet_bytes(self.bitrate) if self.cbr else None

    def use_cbr(self) -> None:
        """Switch to constant bitrate (a sealed stream); DTX off. Idempotent."""
        state = self._enc.encoder_state
        _opus_enc.encoder_ctl(state, _opus_ctl.set_vbr, 0)
        _opus_enc.encoder_ctl(state, _opus_ctl.set_dtx, 0)
        self.cbr = True

    def encode(self, pcm: Pcm, max_bytes: int | None = None) -> bytes:
        """Encode exactly one 20 ms frame (``frame_samples`` int16 samples: 960 at 48 kHz, 160 at 8 kHz).

        ``max_bytes`` caps the packet; in CBR the packet is then exactly ``min(max_bytes, packet_bytes)`` long
        (libopus does this itself; should it ever return less, the packet is padded losslessly)."""
        n = self.frame_samples
        if pcm.shape != (n,):
            raise ValueError(f"expected {n} samples, got {pcm.shape}")
        budget = MAX_PACKET if max_bytes is None else max_bytes
        if not 1 <= budget <= MAX_PACKET:
            raise OpusBudgetError(f"budget of {max_bytes} bytes outside [1, {MAX_PACKET}]")
        if pcm.dtype != np.int16 or not pcm.flags.c_contiguous:
            pcm = np.ascontiguousarray(pcm, dtype=np.int16)
        # Straight from the array's memory into a reused buffer (opuslib copied both ways: ~10 us a frame).
        size = _encode(self._enc.encoder_state, pcm.ctypes.data_as(_INT16_P), n, self._out, budget)
        if size < 0:
            raise opuslib.OpusError(size)
        packet = ctypes.string_at(self._out, size)
        if self.cbr and max_bytes is not None:
            target = min(max_bytes, cbr_packet_bytes(self.bitrate))
            if len(packet) < target:
                packet = pad_packet(packet, target)
        return packet


class OpusDecoder:
    """Opus decoder that never returns garbage: ``decode(None)`` conceals a lost frame; bad packet -> silence.

    Calls libopus directly into a reused buffer: opuslib's wrapper spends ~80 of its ~137 µs converting lists.
    """

    def __init__(self, rate: int = SAMPLE_RATE) -> None:
        self.rate = rate
        self.frame_samples = frame_samples(rate)
        self._dec = opuslib.Decoder(rate, CHANNELS)
        self._buf = (ctypes.c_int16 * (self.frame_samples * CHANNELS))()
        self._ptr = ctypes.cast(self._buf, _INT16_P)
        self.decoded = 0
        self.concealed = 0
        self.failed = 0
        """Packets libopus rejected (played as silence)."""

    def decode(self, payload: bytes | None) -> Pcm:
        """One 20 ms frame of PCM at ``rate``. None (a lost frame) or an empty payload (a sealed frame whose whole
        budget went to control data: libopus's own meaning of a zero-length packet) runs packet-loss concealment."""
        want = self.frame_samples
        if not payload:
            n = _decode(self._dec.decoder_state, None, 0, self._ptr, want, 0)
            if n < 0:
                self.failed += 1
                return np.zeros(want, dtype=np.int16)
            self.concealed += 1
        else:
            if len(payload) > MAX_PACKET:
                self.failed += 1
                return np.zeros(want, dtype=np.int16)
            n = _decode(self._dec.decoder_state, payload, len(payload), self._ptr, want, 0)
            if n != want:
                # Negative = libopus error; a different length = a packet that is not one 20 ms frame.
                # Either way the output is not trustworthy audio for this tick.
                self.failed += 1
                return np.zeros(want, dtype=np.int16)
            self.decoded += 1
        out: Pcm = np.frombuffer(memoryview(self._buf).cast("B"), dtype=np.int16, count=want).copy()
        if n < want:
            out[max(n, 0) :] = 0
        return out
