"""G.711 tables against the ITU reference algorithm, the codec registry, the 48 kHz rate conversion, and a
MediaStream pair carrying PCMU on loopback (payload type 0, timestamp step 160)."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from tests.testbed.speech import speech_path
from voipgw.audio import g711
from voipgw.audio.codecs import (
    CODECS,
    FRAME_SAMPLES,
    PCMU,
    Downsampler,
    UnknownCodec,
    Upsampler,
    get_codec,
)
from voipgw.audio.compare import compare_audio
from voipgw.audio.sources import ArrayPlayer, MemorySink
from voipgw.audio.wav import read_wav
from voipgw.media import MediaStream, PlainProtector
from voipgw.rtp.packet import RtpPacket

# --- scalar reference: Sun Microsystems' g711.c (the ITU-T G.711 reference code), line by line ---------------


def _search(value: int, table: tuple[int, ...]) -> int:
    for i, end in enumerate(table):
        if value <= end:
            return i
    return len(table)


def ref_linear2ulaw(pcm: int) -> int:
    pcm >>= 2
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, 8159) + 0x21
    seg = _search(pcm, (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF))
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0xF)) ^ mask


def ref_linear2alaw(pcm: int) -> int:
    pcm >>= 3
    if pcm >= 0:
        mask = 0xD5
    else:
        mask, pcm = 0x55, -pcm - 1
    seg = _search(pcm, (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF))
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= ((pcm >> 1) if seg < 2 else (pcm >> seg)) & 0xF
    return aval ^ mask


def ref_ulaw2linear(u: int) -> int:
    u = ~u & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return 0x84 - t if u & 0x80 else t - 0x84


def ref_alaw2linear(a: int) -> int:
    a ^= 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = t + 8 if seg == 0 else (t + 0x108) << max(seg - 1, 0)
    return t if a & 0x80 else -t


ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)


def test_known_ulaw_and_alaw_values() -> None:
    # Values from the G.711 tables: silence, the largest magnitudes, and a mid-range sample.
    assert g711.ulaw_encode([0, 32767, -32768, -1, 1000]) == bytes([0xFF, 0x80, 0x00, 0x7E, 0xCE])
    assert g711.alaw_encode([0, 32767, -32768, -1, 1000]) == bytes([0xD5, 0xAA, 0x2A, 0x55, 0xFA])
    assert g711.ulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00, 0xCE])).tolist() == [0, 0, 32124, -32124, 988]
    assert g711.alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A, 0xFA])).tolist() == [8, -8, 32256, -32256, 1008]


def test_encoders_match_the_reference_for_every_16_bit_sample() -> None:
    ulaw = np.frombuffer(g711.ulaw_encode(ALL_SAMPLES), dtype=np.uint8)
    alaw = np.frombuffer(g711.alaw_encode(ALL_SAMPLES), dtype=np.uint8)
    ref_u = np.array([ref_linear2ulaw(int(x)) for x in ALL_SAMPLES], dtype=np.uint8)
    ref_a = np.array([ref_linear2alaw(int(x)) for x in ALL_SAMPLES], dtype=np.uint8)
    assert np.array_equal(ulaw, ref_u)
    assert np.array_equal(alaw, ref_a)


def test_decoders_match_the_reference_and_reencode_to_the_same_level() -> None:
    codes = bytes(range(256))
    u = g711.ulaw_decode(codes)
    a = g711.alaw_decode(codes)
    assert u.tolist() == [ref_ulaw2linear(c) for c in range(256)]
    assert a.tolist() == [ref_alaw2linear(c) for c in range(256)]
    # Decoding is a fixed point: a decoded level re-encodes to a code that decodes to the same level.
    assert np.array_equal(g711.ulaw_decode(g711.ulaw_encode(u)), u)
    assert np.array_equal(g711.alaw_decode(g711.alaw_encode(a)), a)


@pytest.mark.parametrize("law", ["pcmu", "pcma"])
def test_round_trip_snr_on_speech_at_8k(law: str) -> None:
    speech = read_wav(speech_path(), rate=8000).astype(np.float64)
    enc, dec = g711.G711Encoder(law), g711.G711Decoder(law)
    n = len(speech) // g711.FRAME_SAMPLES * g711.FRAME_SAMPLES
    x = speech[:n].astype(np.int16)
    y = np.concatenate([dec.decode(enc.encode(x[i : i + g711.FRAME_SAMPLES])) for i in range(0, n, g711.FRAME_SAMPLES)])
    noise = y.astype(np.float64) - x
    snr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum(noise**2))
    assert snr >= 30.0, snr  # G.711 gives about 38 dB on speech near full scale
    assert dec.decoded == n // g711.FRAME_SAMPLES and dec.failed == 0


def test_g711_concealment_fades_the_last_frame_then_goes_silent() -> None:
    dec = g711.G711Decoder("pcmu")
    assert not np.any(dec.decode(None))  # nothing heard yet: silence, not a guess
    frame = g711.G711Encoder("pcmu").encode(np.full(g711.FRAME_SAMPLES, 8000, dtype=np.int16))
    heard = dec.decode(frame)
    levels = [float(np.abs(dec.decode(None)).mean()) for _ in range(5)]
    base = float(np.abs(heard).mean())
    assert levels[:3] == pytest.approx([base * g for g in g711.CONCEAL_GAINS], rel=0.01)
    assert levels[3:] == [0.0, 0.0]
    assert dec.concealed == 3
    assert not np.any(dec.decode(b"\x80" * 80)) and dec.failed == 1  # 10 ms payload: counted, silent
    assert np.any(dec.decode(frame)) and dec.failed == 1


def test_registry_names_rates_and_timestamp_steps() -> None:
    assert set(CODECS) == {"opus", "pcmu", "pcma", "g722"}
    steps = {name: (c.rtp_clock_rate, c.timestamp_step, c.static_payload_type) for name, c in CODECS.items()}
    assert steps == {
        "opus": (48000, 960, None),
        "pcmu": (8000, 160, 0),
        "pcma": (8000, 160, 8),
        "g722": (8000, 160, 9),  # 16 kHz audio, 8 kHz RTP clock (RFC 3551 §4.5.2)
    }
    assert get_codec("PCMU") is PCMU
    with pytest.raises(UnknownCodec):
        get_codec("g729")


@pytest.mark.parametrize("name", ["opus", "pcmu", "pcma", "g722"])
def test_every_codec_carries_speech_at_48k(name: str) -> None:
    codec = get_codec(name)
    speech = read_wav(speech_path())[: 48000 * 3]
    enc, dec = codec.new_encoder(), codec.new_decoder()
    sizes = set()
    out = []
    for i in range(0, len(speech), FRAME_SAMPLES):
        payload = enc.encode(speech[i : i + FRAME_SAMPLES])
        sizes.add(len(payload))
        pcm = dec.decode(payload)
        assert pcm.shape == (FRAME_SAMPLES,) and pcm.dtype == np.int16
        out.append(pcm)
    if name != "opus":
        assert sizes == {160}  # 64 kbit/s: one byte per 8 kHz sample (G.722: two 4-bit subbands at 16 kHz)
    match = compare_audio(speech, np.concatenate(out))
    assert match.correlation >= 0.95, match
    assert dec.failed == 0


def _tone(freq: float, rate: int, seconds: float, amp: float = 10000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


def test_downsampler_keeps_the_voice_band_and_removes_what_would_alias() -> None:
    for freq, lo, hi in ((1000.0, 0.97, 1.03), (3000.0, 0.9, 1.05), (6000.0, 0.0, 0.01)):
        down = Downsampler(6)
        x = _tone(freq, 48000, 0.5).astype(np.int16)
        y = np.concatenate([down.process(x[i : i + 960]) for i in range(0, len(x), 960)])
        ratio = _rms(y[200:]) / _rms(x)
        assert lo <= ratio <= hi, (freq, ratio)


def test_resampling_in_frames_equals_resampling_in_one_block() -> None:
    x = _tone(440.0, 48000, 0.2).astype(np.int16)
    a, b = Downsampler(6), Downsampler(6)
    framed = np.concatenate([a.process(x[i : i + 960]) for i in range(0, len(x), 960)])
    assert np.allclose(framed, b.process(x))
    low = _tone(440.0, 8000, 0.2)
    c, d = Upsampler(6), Upsampler(6)
    framed_up = np.concatenate([c.process(low[i : i + 160]) for i in range(0, len(low), 160)])
    whole = d.process(low)
    assert np.allclose(framed_up, whole)
    assert 0.97 <= _rms(whole[200:]) / _rms(low) <= 1.03


@pytest.mark.integration  # takes seconds
def test_a_media_stream_pair_carries_pcmu_with_payload_type_0_and_160_sample_steps() -> None:
    speech = read_wav(speech_path())[: 48000 * 2]
    wire: list[RtpPacket] = []

    async def main() -> tuple[MediaStream, MediaStream, MemorySink]:
        a = await MediaStream.bind(rtcp_interval=0)
        b = await MediaStream.bind(rtcp_interval=0)
        inner = b.endpoint.on_payload
        assert inner is not None

        def tap(pkt: RtpPacket, addr: tuple[str, int]) -> bool:
            wire.append(pkt)
            return inner(pkt, addr)

        b.endpoint.on_payload = tap
        sink = MemorySink()
        kw = {"allow_insecure": True, "codec": PCMU, "payload_type": 0}
        await a.start(PlainProtector(), b.local, source=ArrayPlayer(speech), sink=None, **kw)  # type: ignore[arg-type]
        await b.start(PlainProtector(), a.local, source=None, sink=sink, **kw)  # type: ignore[arg-type]
        await asyncio.wait_for(a.source_finished.wait(), 10)
        for _ in range(200):  # bounded: until b's jitter buffer has played everything
            if b.jitter.buffered == 0 and b.stats.frames_opened == a.stats.frames_sent:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        await a.stop()
        await b.stop()
        return a, b, sink

    a, b, sink = asyncio.run(asyncio.wait_for(main(), 20))
    assert a.stats.frames_sent == 100 == len(wire)
    assert {p.payload_type for p in wire} == {0}
    assert {len(p.payload) for p in wire} == {160}
    steps = {(q.timestamp - p.timestamp) & 0xFFFFFFFF for p, q in itertools.pairwise(wire)}
    assert steps == {160}
    assert a.codec is PCMU and b.codec is PCMU
    assert b.stats.refused == {} and b.stats.decode_failures == 0
    match = compare_audio(speech, sink.pcm)
    assert match.correlation >= 0.9, match
