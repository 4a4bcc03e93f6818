"""Opus at 48 kHz mono, 20 ms frames (opuslib over the system libopus0): encode (VBR, or CBR with a per-frame
byte budget for sealed streams whose frames must all be one size), decode, loss concealment.

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
    ) -> None:
        self._enc = opuslib.Encoder(SAMPLE_RATE, CHANNELS, opuslib.APPLICATION_VOIP)
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
        """Encode exactly one 20 ms frame (960 int16 samples).

        ``max_bytes`` caps the packet; in CBR the packet is then exactly ``min(max_bytes, packet_bytes)`` long
        (libopus does this itself; should it ever return less, the packet is padded losslessly)."""
        if pcm.shape != (FRAME_SAMPLES,):
            raise ValueError(f"expected {FRAME_SAMPLES} samples, got {pcm.shape}")
        data = np.ascontiguousarray(pcm, dtype=np.int16).tobytes()
        if max_bytes is None:
            out: bytes = self._enc.encode(data, FRAME_SAMPLES)
            return out
        if not 1 <= max_bytes <= MAX_PACKET:
            raise OpusBudgetError(f"budget of {max_bytes} bytes outside [1, {MAX_PACKET}]")
        packet: bytes = _opus_enc.encode(self._enc.encoder_state, data, FRAME_SAMPLES, max_bytes)
        if self.cbr:
            target = min(max_bytes, cbr_packet_bytes(self.bitrate))
            if len(packet) < target:
                packet = pad_packet(packet, target)
        return packet


class OpusDecoder:
    """Opus decoder that never returns garbage: ``decode(None)`` conceals a lost frame; bad packet -> silence.

    Calls libopus directly into a reused buffer: opuslib's wrapper spends ~80 of its ~137 µs converting lists.
    """

    def __init__(self) -> None:
        self._dec = opuslib.Decoder(SAMPLE_RATE, CHANNELS)
        self._buf = (ctypes.c_int16 * (FRAME_SAMPLES * CHANNELS))()
        self._ptr = ctypes.cast(self._buf, ctypes.POINTER(ctypes.c_int16))
        self.decoded = 0
        self.concealed = 0
        self.failed = 0
        """Packets libopus rejected (played as silence)."""

    def decode(self, payload: bytes | None) -> Pcm:
        """One 20 ms frame of PCM. None (a lost frame) or an empty payload (a sealed frame whose whole budget
        went to control data: libopus's own meaning of a zero-length packet) runs packet-loss concealment."""
        if not payload:
            n = _opus_dec.libopus_decode(self._dec.decoder_state, None, 0, self._ptr, FRAME_SAMPLES, 0)
            if n < 0:
                self.failed += 1
                return silence()
            self.concealed += 1
        else:
            if len(payload) > MAX_PACKET:
                self.failed += 1
                return silence()
            n = _opus_dec.libopus_decode(self._dec.decoder_state, payload, len(payload), self._ptr, FRAME_SAMPLES, 0)
            if n != FRAME_SAMPLES:
                # Negative = libopus error; a different length = a packet that is not one 20 ms frame.
                # Either way the output is not trustworthy audio for this tick.
                self.failed += 1
                return silence()
            self.decoded += 1
        out: Pcm = np.frombuffer(memoryview(self._buf).cast("B"), dtype=np.int16, count=FRAME_SAMPLES).copy()
        if n < FRAME_SAMPLES:
            out[max(n, 0) :] = 0
        return out
