"""The media between a gateway call's two legs: bounded PCM pipes, Opus pass-through relays and the switchable
Opus codec. No SIP here, and nothing that decides policy."""

from __future__ import annotations

import numpy as np

from voipgw.audio.codecs import OPUS as OPUS_CODEC
from voipgw.audio.codecs import (
    PCM_RATE,
    CodecInfo,
    CodecParts,
    RateConverter,
    ResamplingDecoder,
    ResamplingEncoder,
)
from voipgw.audio.opus import DEFAULT_BITRATE, FRAME_SAMPLES, OpusDecoder, OpusEncoder, cbr_packet_bytes
from voipgw.audio.pcm import Pcm
from voipgw.media import SKIP_TICK, MediaStream

PASSTHROUGH_PAYLOAD = 120
"""Pass-through seals the phone's Opus packets as they are (it cannot shrink them), so a sealed frame's control +
content is padded to 120 bytes, or to the next bucket above: 120, 184, 248, 312... (on the wire 15 more: 135,
199, 263...). Our SDP asks for ``maxaveragebitrate=24000;cbr=1`` (RFC 7587), which baresip honours: 60-byte CBR
packets, so 60 + the most control data (60) fits and every pass-through frame is 120. Measured in
tests/gateway/test_passthrough_sizes.py; without that fmtp baresip sent VBR 100-396 bytes (mostly 248), which
64-byte buckets would spread over 7 sizes. Before pass-through starts (the gateway's own cue or ringback), the
outside leg's frames are its CBR size (60)."""
PASSTHROUGH_BUCKET = 64

PIPE_MAX_FRAMES = 5
"""Frames (100 ms) a bridge pipe holds before it drops the oldest: bounds the latency two pacing loops add."""
IDLE: Pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
"""What an open pipe with nothing queued yields, and a pass-through decoder's output: silence that says "nothing
of our own to play" (identity-compared; never written to)."""
CLOSED: Pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
"""What a closed pipe with nothing queued yields: silence in the middle of something (a cue between two frames)."""


class Passthrough:
    """Whether a bridge relays Opus frames untouched (an Opus inside phone and a sealed outside leg). One per
    bridge, shared by its relays and switchable codecs: it is decided once the outside leg is up, after the outside
    leg's codec was made."""

    def __init__(self) -> None:
        self.on = False


class PcmPipe:
    """One direction of the bridge: the sink of one leg's MediaStream and the source of the other's.

    Closed (until both legs are up) it drops what it is given and yields silence; it never ends (a None frame
    would stop the reading stream for good). The gateway may queue frames of its own (a cue, ringback) while it
    is closed.

    Direct (``send_directly``, a transcoding bridge once both legs are up): an open pipe with nothing of the
    gateway's own queued hands each frame to the reading stream, which encodes and sends it at once, inside the
    writing stream's receive callback (``MediaStream.play_direct``: no jitter buffer either). The reading stream's
    ticks then only play the gateway's own frames (``SKIP_TICK`` otherwise). Measured (issue 17): a jitter buffer
    of 60-120 ms, this pipe's standing depth (up to 100 ms) and the two pacing loops' phase (0-20 ms) in each
    gateway were 198 ms p50 of a transcoded call's one-way delay through two gateways."""

    def __init__(self) -> None:
        self.open = False
        self.outside_codec: CodecInfo | None = None
        """Set on the pipe that feeds the outside leg: the Opus codec that leg's stream must use."""
        self.frames: list[Pcm] = []
        """(Lists here: an empty deque is 600 bytes, two pipes and two relays per call, and they hold <= 5.)"""
        self.passed = 0
        self.dropped = 0
        self.reader: MediaStream | None = None
        """Direct: the stream this pipe feeds, which sends each frame as it is written."""

    def send_directly(self, reader: MediaStream) -> None:
        self.reader = reader

    def write_frame(self, pcm: Pcm) -> None:
        if not self.open:
            return
        reader = self.reader
        if reader is not None:
            if self.frames:
                self.dropped += 1  # the last of the gateway's own frames still play (at most tones.TONE_QUEUE)
            else:
                self.passed += 1
                reader.send_pcm(pcm)
            return
        self.frames.append(pcm)
        if len(self.frames) > PIPE_MAX_FRAMES:
            self.frames.pop(0)
            self.dropped += 1

    def read_frame(self) -> Pcm | None:
        if self.frames:
            self.passed += 1
            return self.frames.pop(0)
        if not self.open:
            return CLOSED
        return SKIP_TICK if self.reader is not None else IDLE

    def close(self) -> None:
        """The streams close their source and sink on stop; the pipe outlives neither, so nothing to do."""


def transcode_directly(inside: MediaStream, outside: MediaStream, to_outside: PcmPipe, to_inside: PcmPipe) -> int:
    """Both legs of a transcoding bridge are up: each frame a leg opens is decoded, encoded and sent on the other
    leg at once (see PcmPipe), at the bridge's rate (``bridge_rate``, returned). Not for pass-through, whose
    OpusRelay already sends frames as they come."""
    rate = bridge_rate(inside, outside)
    if rate != PCM_RATE:
        for stream in (inside, outside):
            for part in stream.codec_parts:
                if isinstance(part, _RATE_AWARE):
                    part.use_rate(rate)
    to_outside.send_directly(outside)
    to_inside.send_directly(inside)
    inside.play_direct()
    outside.play_direct()
    return rate


def bridge_rate(inside: CodecParts, outside: CodecParts) -> int:
    """The rate the PCM between a transcoding bridge's legs runs at: the lowest codec's own rate (a G.711 phone
    and a sealed Opus leg: 8 kHz, which libopus codes directly), so nothing is resampled to 48 kHz and back and
    libopus works on a sixth of the samples for the same audio (a G.711 phone never sent more than 4 kHz of it).
    48 kHz unless both legs' encoder and decoder can change rate (a plain Opus leg's coders cannot).

    The wire does not change: Opus over RTP is 48000/2 whatever rate the coder runs at (RFC 7587 §4), and the
    far end's decoder reads each packet's bandwidth from its TOC byte."""
    parts = [p for s in (inside, outside) for p in s.codec_parts if isinstance(p, _RATE_AWARE)]
    encoders = {id(s) for s in (inside, outside) for p in s.codec_parts if isinstance(p, _ENCODERS)}
    decoders = {id(s) for s in (inside, outside) for p in s.codec_parts if isinstance(p, _DECODERS)}
    if len(encoders) < 2 or len(decoders) < 2:
        return PCM_RATE
    return min((p.native_rate for p in parts if isinstance(p, ResamplingEncoder | ResamplingDecoder)), default=PCM_RATE)


class OpusRelay:
    """One direction of Opus pass-through: payloads the receiving leg opened, for the other leg to seal as they
    are (no decode, no re-encode).

    Until both legs' streams have started under pass-through, frames wait here (bounded like PcmPipe) for the
    sending leg's pacing loop. Then the relay turns direct: the sending leg plays out what it still has of its
    own (the caller's security cue, ringback; the other leg's frames are dropped meanwhile, as a closed pipe
    would), and at its first idle tick it stops pacing and each opened frame is sealed and sent at once, inside
    the receive callback (no jitter buffer, no pacing loop: the phone at the far end paces and de-jitters)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.passed = 0
        self.dropped = 0
        self.receiver: MediaStream | None = None
        """The leg whose decoder pushes here (it received the frames)."""
        self.sender: MediaStream | None = None
        """The leg whose encoder pops from here (it sends them on)."""
        self.direct = False
        """Both legs are up under pass-through: the receiving leg hands its frames over in its receive path."""
        self.flowing = False
        """The sending leg has stopped pacing: handed-over frames go straight out."""

    def attach(self, stream: MediaStream, *, receiving: bool, passthrough: Passthrough) -> None:
        if receiving:
            self.receiver = stream
        else:
            self.sender = stream
        if passthrough.on and self.receiver is not None and self.sender is not None and not self.direct:
            self.direct = True
            self.receiver.relay = self._hold
            # The sender seals the phone's packets from now on (a no-op on the plain inside leg).
            self.sender.set_payload_size(PASSTHROUGH_PAYLOAD, bucket=PASSTHROUGH_BUCKET)

    def _hold(self, payload: bytes) -> None:
        self.dropped += 1

    def idle_tick(self) -> None:
        """The sending leg's pacing loop had nothing of its own to play: let frames through directly, and stop
        its pacing if its own receive path is direct too (then its codec states are released: ~60 KB)."""
        sender, receiver = self.sender, self.receiver
        assert sender is not None and receiver is not None
        if not self.flowing:
            self.flowing = True
            send = sender.send_payload

            def forward(payload: bytes) -> None:
                self.passed += 1
                send(payload)

            receiver.relay = forward
        if sender.relay is not None:
            sender.stop_pacing()
            parts, sender.codec_parts = sender.codec_parts, []
            for part in parts:
                part.release()

    def push(self, payload: bytes) -> None:
        self.frames.append(payload)
        if len(self.frames) > PIPE_MAX_FRAMES:
            self.frames.pop(0)
            self.dropped += 1

    def pop(self) -> bytes | None:
        if self.frames:
            self.passed += 1
            return self.frames.pop(0)
        return None


_SILENCE_PACKET: list[bytes] = []


def _silence_packet() -> bytes:
    """One 20 ms Opus frame of silence, encoded once per process."""
    if not _SILENCE_PACKET:
        _SILENCE_PACKET.append(OpusEncoder().encode(np.zeros(FRAME_SAMPLES, dtype=np.int16)))
    return _SILENCE_PACKET[0]


class _SwitchEncoder:
    """Encodes the PCM the pacing loop reads, unless pass-through is on and the other leg sent an Opus frame:
    that frame goes out as it came (the PCM is then silence from a closed pipe, or unused)."""

    def __init__(self, relay: OpusRelay, passthrough: Passthrough) -> None:
        self._relay = relay
        self._passthrough = passthrough
        self._encoder: OpusEncoder | None = None
        """Made on first use: a relayed leg never encodes, and libopus's encoder state is about 43 KB."""
        self._cbr = False
        self._rate = PCM_RATE
        self._convert: RateConverter | None = None
        """Frames at another rate than the coder's (the gateway's own 48 kHz audio on a narrowband bridge)."""

    def use_rate(self, rate: int) -> None:
        """Encode PCM at ``rate`` from now on (libopus's own, no resampling; see ``bridge_rate``). The coder is
        made anew: until now this leg sent only the gateway's silence or cue, so nothing audible is cut."""
        if rate != self._rate:
            self._rate = rate
            self._encoder = None
            self._convert = RateConverter(rate) if rate != PCM_RATE else None

    @property
    def packet_bytes(self) -> int | None:
        """A sealed leg that transcodes encodes CBR like any sealed stream (voipgw.media.BudgetEncoder)."""
        return cbr_packet_bytes(DEFAULT_BITRATE) if self._cbr else None

    def use_cbr(self) -> None:
        self._cbr = True
        if self._encoder is not None:
            self._encoder.use_cbr()

    def attach_stream(self, stream: MediaStream) -> None:
        # On the stream, not in a module-level registry: a WeakKeyDictionary whose value (this coder, its relay)
        # refers back to its key kept every transcoded call's whole object graph alive (~170 KB a call).
        stream.codec_parts.append(self)
        self._relay.attach(stream, receiving=False, passthrough=self._passthrough)

    def release(self) -> None:
        self._encoder = None

    def encode(self, pcm: Pcm, max_bytes: int | None = None) -> bytes:
        """A relayed frame is returned as it came (``max_bytes`` does not apply: the stream's size buckets do)."""
        relay = self._relay
        if self._passthrough.on:
            if relay.direct:
                # Under pass-through the other leg only ever writes silence here (IDLE, or the zeros a stream
                # plays before it hears anything): only the gateway's own cue or ringback is worth pacing.
                if pcm is IDLE or (pcm is not CLOSED and not pcm.any()):
                    relay.idle_tick()  # this tick still sends (silence): the loop expects a frame
                    if self._encoder is None:
                        # Released by idle_tick (or never made): the last tick's silence needs no coder. Making
                        # one here kept a 43 KB libopus encoder alive in every pass-through stream for the rest of
                        # the call, ~86 KB a call (issue 17, found by ``voipgw bench memory``).
                        return _silence_packet()
            else:
                payload = relay.pop()
                if payload is not None:
                    return payload
        encoder = self._encoder
        if encoder is None:
            encoder = self._encoder = OpusEncoder(cbr=self._cbr, rate=self._rate)
        if len(pcm) != encoder.frame_samples:
            if self._convert is None:
                self._convert = RateConverter(self._rate)
            pcm = self._convert.convert(pcm)
        return encoder.encode(pcm, max_bytes)


class _SwitchDecoder:
    """Decodes Opus to PCM for the bridge, or under pass-through hands the payload on and plays silence."""

    def __init__(self, relay: OpusRelay, passthrough: Passthrough) -> None:
        self._relay = relay
        self._passthrough = passthrough
        self._decoder: OpusDecoder | None = None
        """Made on first use, like _SwitchEncoder's."""
        self._failed_before = 0
        self._rate = PCM_RATE

    def use_rate(self, rate: int) -> None:
        """Decode to PCM at ``rate`` from now on (libopus decodes to it directly; see ``bridge_rate``)."""
        if rate != self._rate:
            self._rate = rate
            self.release()

    @property
    def failed(self) -> int:
        return self._failed_before + (self._decoder.failed if self._decoder is not None else 0)

    def attach_stream(self, stream: MediaStream) -> None:
        stream.codec_parts.append(self)
        self._relay.attach(stream, receiving=True, passthrough=self._passthrough)

    def release(self) -> None:
        self._failed_before = self.failed
        self._decoder = None

    def decode(self, payload: bytes | None) -> Pcm:
        if self._passthrough.on:
            if payload is not None:
                self._relay.push(payload)
            return IDLE
        if self._decoder is None:
            self._decoder = OpusDecoder(self._rate)
        return self._decoder.decode(payload)


_ENCODERS = (_SwitchEncoder, ResamplingEncoder)
_DECODERS = (_SwitchDecoder, ResamplingDecoder)
_RATE_AWARE = _ENCODERS + _DECODERS


def switch_codec(rx: OpusRelay, tx: OpusRelay, passthrough: Passthrough) -> CodecInfo:
    """An Opus CodecInfo for one leg of a bridge: received frames go to ``rx``, sent ones come from ``tx`` while
    ``passthrough.on`` is True (a shared flag: the inside codec is known only after the outside leg is up)."""
    return CodecInfo(
        OPUS_CODEC.name,
        OPUS_CODEC.rtp_clock_rate,
        None,
        lambda: _SwitchEncoder(tx, passthrough),
        lambda: _SwitchDecoder(rx, passthrough),
    )
