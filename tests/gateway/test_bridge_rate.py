"""The rate a transcoding bridge's PCM runs at (``pipes.bridge_rate``, a table) and the switchable Opus coders at
that rate: the gateway's own 48 kHz audio still goes out, as the same CBR packet size, and the far side's packets
come in at the bridge's rate. Codec objects only: no sockets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from voipgw.audio.codecs import G722_CODEC, OPUS, PCMA, PCMU, CodecInfo
from voipgw.audio.opus import OpusEncoder, cbr_packet_bytes
from voipgw.gateway.pipes import OpusRelay, Passthrough, bridge_rate, switch_codec


@dataclass
class Leg:
    """What bridge_rate reads of a MediaStream: the coders that registered with it when it started."""

    codec_parts: list[Any] = field(default_factory=list)


def _leg(codec: CodecInfo) -> Leg:
    leg = Leg()
    for part in (codec.new_encoder(), codec.new_decoder()):
        attach = getattr(part, "attach_stream", None)
        if attach is not None:
            attach(leg)
    return leg


def _sealed_opus() -> CodecInfo:
    return switch_codec(OpusRelay(), OpusRelay(), Passthrough())


@pytest.mark.parametrize(
    ("inside", "outside", "rate"),
    [
        (PCMU, _sealed_opus(), 8000),  # the usual gateway call: libopus codes 8 kHz PCM directly
        (PCMA, _sealed_opus(), 8000),
        (G722_CODEC, _sealed_opus(), 16000),
        (PCMU, OPUS, 48000),  # a plain Opus outside leg's coders stay at 48 kHz: so does the bridge
        (PCMU, PCMA, 8000),  # G.711 both sides (a NOT SECURE outside leg): no resampling at all
        (PCMU, G722_CODEC, 8000),  # the G.722 encoder converts the 8 kHz frames itself
    ],
    ids=["pcmu-sealed", "pcma-sealed", "g722-sealed", "pcmu-plain-opus", "pcmu-pcma", "pcmu-g722"],
)
def test_bridge_rate(inside: CodecInfo, outside: CodecInfo, rate: int) -> None:
    assert bridge_rate(_leg(inside), _leg(outside)) == rate


def test_a_narrowband_switch_encoder_sends_the_gateway_cue_and_the_phone_alike() -> None:
    codec = _sealed_opus()
    enc, dec = codec.new_encoder(), codec.new_decoder()
    assert not isinstance(enc, OpusEncoder)  # a switchable coder, whose libopus state is made on first use
    leg = Leg()
    for part in (enc, dec):
        part.attach_stream(leg)  # type: ignore[attr-defined]
        part.use_rate(8000)  # type: ignore[attr-defined]
    enc.use_cbr()  # type: ignore[attr-defined]  # a sealed leg's
    size = cbr_packet_bytes(24000)
    t = np.arange(960) / 48000
    cue = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)  # the gateway's own audio, 48 kHz
    phone = cue[::6].copy()  # a G.711 phone's frame, decoded at the bridge's rate
    packets = [enc.encode(cue, size), enc.encode(phone, size), enc.encode(cue, size)]  # type: ignore[call-arg]
    assert [len(p) for p in packets] == [size] * 3
    heard = [dec.decode(p) for p in packets]
    assert [len(h) for h in heard] == [160] * 3
    assert dec.decode(None).shape == (160,)  # concealment too
