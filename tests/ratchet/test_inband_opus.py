"""Every in-band packet is refused by a real Opus decoder (libopus through opuslib), so a plain phone that receives
one conceals a frame instead of playing noise (docs/PROTOCOL.md §C.6: TOC code 3 with a frame count of 0, RFC 6716
§3.2.5 [R5])."""

from __future__ import annotations

import json

import opuslib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratchet.inband import INBAND_PREFIX, MAX_MESSAGE, InbandKind, chunk_message
from tests.vectors import gen_inband

FRAME = 960  # 20 ms at 48 kHz


def _refused(decoder: opuslib.Decoder, packet: bytes) -> None:
    with pytest.raises(opuslib.OpusError) as exc:
        decoder.decode(packet, FRAME)
    assert exc.value.code == opuslib.constants.INVALID_PACKET  # not a buffer or state error


@pytest.mark.parametrize("channels", [1, 2])
def test_every_vector_packet_is_an_invalid_opus_packet(channels: int) -> None:
    decoder = opuslib.Decoder(48000, channels)
    vectors = json.loads((gen_inband.VECTOR_DIR / gen_inband.FILE).read_text())
    packets = [bytes.fromhex(p) for case in vectors["messages"] for p in case["packets"]]
    assert len(packets) >= 4
    for packet in packets:
        _refused(decoder, packet)
    # The decoder is still usable afterwards: a real Opus frame decodes to one frame of samples.
    encoder = opuslib.Encoder(48000, channels, opuslib.APPLICATION_VOIP)
    pcm = encoder.encode(b"\x00\x00" * FRAME * channels, FRAME)
    assert len(decoder.decode(pcm, FRAME)) == FRAME * 2 * channels


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=MAX_MESSAGE), st.sampled_from(list(InbandKind)))
def test_any_chunked_message_is_refused_by_libopus(message: bytes, kind: InbandKind) -> None:
    decoder = opuslib.Decoder(48000, 1)
    for packet in chunk_message(kind, message):
        _refused(decoder, packet)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=1100))
def test_the_prefix_alone_makes_any_payload_invalid_opus(tail: bytes) -> None:
    _refused(opuslib.Decoder(48000, 1), INBAND_PREFIX + tail)
