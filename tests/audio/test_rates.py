"""Frames at a codec's own rate: Opus coded at 8/16 kHz keeps the wire format and the speech; G.711 and G.722 take
and give frames at their own rate when told; the rate converter and the G.711 bit-indexed tables agree with the
48 kHz path they shortcut."""

from __future__ import annotations

import numpy as np
import pytest

from tests.testbed.speech import speech_path
from voipgw.audio import g711
from voipgw.audio.codecs import (
    G722_CODEC,
    PCM_RATE,
    PCMA,
    PCMU,
    RateConverter,
    ResamplingDecoder,
    ResamplingEncoder,
    frame_rate,
)
from voipgw.audio.compare import compare_audio
from voipgw.audio.opus import OpusDecoder, OpusEncoder, cbr_packet_bytes, frame_samples
from voipgw.audio.pcm import Pcm
from voipgw.audio.wav import read_wav

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)


def _frames(pcm: Pcm, n: int) -> list[Pcm]:
    return [pcm[i : i + n] for i in range(0, len(pcm) - n + 1, n)]


def test_g711_bit_indexed_encode_matches_the_offset_table_for_every_sample() -> None:
    for law, table in (("pcmu", g711._ULAW_ENC), ("pcma", g711._ALAW_ENC)):
        enc = g711.G711Encoder(law)
        frames = [*_frames(ALL_SAMPLES, g711.FRAME_SAMPLES), ALL_SAMPLES[-g711.FRAME_SAMPLES :]]  # and the tail
        got = b"".join(enc.encode(frame) for frame in frames)
        want = np.concatenate([table[f.astype(np.int64) + 32768] for f in frames]).tobytes()
        assert got == want, law


@pytest.mark.parametrize("rate", [8000, 12000, 16000, 24000, 48000])
def test_opus_at_any_rate_makes_packets_a_48k_decoder_plays(rate: int) -> None:
    """The wire is the same whatever rate the coder runs at: a 48 kHz peer decodes a narrowband gateway's packets
    and the other way round, with the speech intact."""
    speech48 = read_wav(speech_path())[: PCM_RATE * 3]
    speech = read_wav(speech_path(), rate=rate)[: rate * 3]
    n = frame_samples(rate)
    enc = OpusEncoder(rate=rate, cbr=True)
    size = cbr_packet_bytes(enc.bitrate)
    packets = [enc.encode(frame, size) for frame in _frames(speech, n)]
    assert {len(p) for p in packets} == {size}  # CBR sizes do not depend on the coder's rate
    heard48 = np.concatenate([d.decode(p) for d in [OpusDecoder()] for p in packets])
    assert compare_audio(speech48[: len(heard48)], heard48).windowed > 0.9
    wide = OpusEncoder()
    back = OpusDecoder(rate)
    heard = np.concatenate([back.decode(wide.encode(frame)) for frame in _frames(speech48, 960)])
    assert len(heard) == len(_frames(speech48, 960)) * n
    assert compare_audio(speech[: len(heard)], heard, rate=rate).windowed > 0.9


def test_opus_refuses_rates_libopus_does_not_take_and_frames_of_another_size() -> None:
    with pytest.raises(ValueError, match="44100"):
        OpusEncoder(rate=44100)
    with pytest.raises(ValueError, match="44100"):
        OpusDecoder(44100)
    with pytest.raises(ValueError, match="expected 160"):
        OpusEncoder(rate=8000).encode(np.zeros(960, dtype=np.int16))


def test_narrowband_opus_concealment_and_bad_packets_keep_the_frame_size() -> None:
    dec = OpusDecoder(8000)
    assert dec.decode(None).shape == (160,) and dec.concealed == 1
    assert dec.decode(b"\xff" * 2000).shape == (160,) and dec.failed == 1


@pytest.mark.parametrize(("pcm_len", "rate"), [(960, 48000), (480, 24000), (320, 16000), (240, 12000), (160, 8000)])
def test_a_frame_says_its_rate_by_its_length(pcm_len: int, rate: int) -> None:
    assert frame_rate(np.zeros(pcm_len, dtype=np.int16)) == rate


@pytest.mark.parametrize("bad", [0, 159, 961, 1920])
def test_a_frame_of_no_20_ms_length_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="not 20 ms"):
        frame_rate(np.zeros(bad, dtype=np.int16))


def test_rate_converter_passes_its_own_rate_through_and_resamples_the_rest() -> None:
    conv = RateConverter(8000)
    own = np.arange(160, dtype=np.int16)
    assert conv.convert(own) is own
    speech48 = read_wav(speech_path())[: PCM_RATE * 2]
    speech8 = read_wav(speech_path(), rate=8000)[: 8000 * 2]
    down = np.concatenate([conv.convert(f) for f in _frames(speech48, 960)])
    assert compare_audio(speech8, down, rate=8000).windowed > 0.98
    up16 = RateConverter(8000)
    speech16 = read_wav(speech_path(), rate=16000)[: 16000 * 2]
    via48 = np.concatenate([up16.convert(f) for f in _frames(speech16, 320)])
    assert len(via48) == len(speech8) and compare_audio(speech8, via48, rate=8000).windowed > 0.98


@pytest.mark.parametrize("codec", [PCMU, PCMA, G722_CODEC], ids=lambda c: c.name)
def test_a_resampled_codec_takes_and_gives_frames_at_its_own_rate_when_told(codec: object) -> None:
    from voipgw.audio.codecs import CodecInfo

    assert isinstance(codec, CodecInfo)
    enc, dec = codec.new_encoder(), codec.new_decoder()
    assert isinstance(enc, ResamplingEncoder) and isinstance(dec, ResamplingDecoder)
    rate = dec.native_rate
    n = rate // 50
    speech = read_wav(speech_path(), rate=rate)[: rate * 2]
    assert dec.decode(enc.encode(speech[:n])).shape == (960,)  # 48 kHz until told
    dec.use_rate(rate)
    heard = np.concatenate([dec.decode(enc.encode(f)) for f in _frames(speech, n)[1:]])
    assert len(heard) == len(speech) - n
    assert compare_audio(speech[n:], heard, rate=rate).windowed > 0.95
    dec.use_rate(PCM_RATE)
    assert dec.decode(enc.encode(speech[:n])).shape == (960,)


def _bridge_chain(rate: int) -> float:
    """PCMU phone -> gateway A -> sealed-size Opus -> gateway B -> PCMU phone, with the bridges at ``rate``."""
    speech = read_wav(speech_path())
    phone = PCMU.new_encoder()
    sent = [phone.encode(f) for f in _frames(speech, 960)]
    dec_a, enc_b, listener = PCMU.new_decoder(), PCMU.new_encoder(), PCMU.new_decoder()
    assert isinstance(dec_a, ResamplingDecoder)
    dec_a.use_rate(rate)
    opus_a, opus_b = OpusEncoder(cbr=True, rate=rate), OpusDecoder(rate)
    size = cbr_packet_bytes(opus_a.bitrate)
    heard = np.concatenate(
        [listener.decode(enc_b.encode(opus_b.decode(opus_a.encode(dec_a.decode(p), size)))) for p in sent]
    )
    return compare_audio(speech[: len(heard)], heard).windowed


def test_an_8k_bridge_carries_speech_at_least_as_well_as_the_48k_one() -> None:
    """The case for coding narrowband: a G.711 phone's audio loses nothing (measured 0.960 vs 0.957 windowed)."""
    narrow, wide = _bridge_chain(8000), _bridge_chain(PCM_RATE)
    assert narrow >= wide - 0.005, (narrow, wide)
    assert narrow > 0.93
