"""Sealed streams on real sockets make every frame of a direction one size: CBR Opus gives up the bytes that the
ratchet keys, key acks, the SAS reveal and DTMF take (also during fast DH steps); a codec that cannot shrink gets
headroom; the gateway's pass-through (VBR packets sealed as they are) falls in the documented buckets only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from ratchet.session import MediaConfig, MediaSession
from tests.support.ratchet_pairs import make_pair
from tests.testbed.speech import speech_path
from voipgw.active_call import SecureProtector
from voipgw.audio.codecs import PCMU
from voipgw.audio.opus import FRAME_SAMPLES, OpusEncoder
from voipgw.audio.sources import MemorySink, ToneSource
from voipgw.audio.wav import read_wav
from voipgw.gateway.pipes import PASSTHROUGH_BUCKET, PASSTHROUGH_PAYLOAD
from voipgw.media import MAX_CONTROL_BYTES, MediaStream
from voipgw.rtp.packet import parse_rtp

TIMEOUT = 30.0
AUDIO_PT = 111
TE_PT = 101
OVERHEAD = 4 + 1 + 10
"""Header, ctl_len byte, CCM tag: a frame of payload size p is p + 15 bytes on the wire."""


def _run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), TIMEOUT))


def _pair(dh_interval_s: float) -> tuple[SecureProtector, SecureProtector]:
    ko, ka = make_pair(interval_ms=2000)
    now = time.monotonic()
    cfg = MediaConfig(dh_interval_s=dh_interval_s)
    return SecureProtector(MediaSession(ko, now, cfg)), SecureProtector(MediaSession(ka, now, cfg))


def _tap(stream: MediaStream) -> list[bytes]:
    wire: list[bytes] = []
    inner = stream.endpoint._on_rtp_datagram

    def tap(data: bytes, addr: tuple[str, int]) -> None:
        wire.append(data)
        inner(data, addr)

    stream.endpoint._on_rtp_datagram = tap  # type: ignore[method-assign]
    return wire


def _sizes(wire: list[bytes]) -> set[int]:
    packets = [parse_rtp(d) for d in wire]
    assert {p.payload_type for p in packets} <= {AUDIO_PT, 0}
    return {len(p.payload) for p in packets}


def test_dh_steps_dtmf_and_the_sas_reveal_leave_one_frame_size_per_direction() -> None:
    async def main() -> None:
        a, b = await MediaStream.bind(), await MediaStream.bind()
        to_a, to_b = _tap(a), _tap(b)
        pa, pb = _pair(dh_interval_s=0.4)
        try:
            for s, p, r in ((a, pa, b.local), (b, pb, a.local)):
                await s.start(
                    p,
                    r,
                    source=ToneSource(440.0, seconds=60.0),
                    sink=MemorySink(),
                    payload_type=AUDIO_PT,
                    telephone_event_pt=TE_PT,
                )
            await asyncio.sleep(0.5)
            pb.session.reveal_sas()  # the answerer's reveal, mid-call
            a.send_dtmf("0123456789*#")
            b.send_dtmf("ABCD", duration_ms=200)
            got_b = "".join([await asyncio.wait_for(b.dtmf.get(), TIMEOUT) for _ in range(12)])
            got_a = "".join([await asyncio.wait_for(a.dtmf.get(), TIMEOUT) for _ in range(4)])
            await a.dtmf_sent()
            await b.dtmf_sent()
            while min(pa.session.stats.local_epoch, pb.session.stats.local_epoch) < 4:
                await asyncio.sleep(0.1)
        finally:
            await a.stop()
            await b.stop()
        assert (got_b, got_a) == ("0123456789*#", "ABCD")
        assert pa.session.sas_revealed and pb.session.sas_revealed and pa.session.sas == pb.session.sas
        # Each side followed the other's steps (the ack-before-switch schedule ran its course several times).
        assert pb.session.stats.peer_epoch >= 3 and pa.session.stats.peer_epoch >= 3
        assert a.stats.refused == {} and b.stats.refused == {}
        assert pa.session.stats.oversize_frames == pb.session.stats.oversize_frames == 0
        assert len(to_a) > 100 and len(to_b) > 100
        assert _sizes(to_a) == _sizes(to_b) == {60 + OVERHEAD}  # CBR 24 kbps: p = 60

    _run(main)


def test_a_codec_that_cannot_shrink_gets_headroom_and_stays_one_size() -> None:
    async def main() -> None:
        a, b = await MediaStream.bind(payload_type=0), await MediaStream.bind(payload_type=0)
        to_b = _tap(b)
        pa, pb = _pair(dh_interval_s=0.4)
        try:
            for s, p, r in ((a, pa, b.local), (b, pb, a.local)):
                await s.start(
                    p,
                    r,
                    source=ToneSource(440.0, seconds=60.0),
                    sink=MemorySink(),
                    codec=PCMU,
                    telephone_event_pt=TE_PT,
                )
            a.send_dtmf("42")
            assert await asyncio.wait_for(b.dtmf.get(), TIMEOUT) == "4"
            await a.dtmf_sent()
            while pa.session.stats.local_epoch < 3:
                await asyncio.sleep(0.1)
        finally:
            await a.stop()
            await b.stop()
        assert b.stats.dtmf_in == 2 and b.stats.decode_failures == 0
        assert _sizes(to_b) == {160 + MAX_CONTROL_BYTES + OVERHEAD}

    _run(main)


def test_passthrough_frames_fall_in_the_documented_buckets_and_cross_unchanged() -> None:
    """A leg that seals a phone's VBR Opus packets as they are (send_payload, no pacing), while DH steps and
    DTMF ride along: every frame is 96 or 160 (+ overhead), never a size that tracks the speech."""

    async def main() -> None:
        a, b = await MediaStream.bind(), await MediaStream.bind()
        to_b = _tap(b)
        received: list[bytes] = []
        b.relay = received.append
        pa, pb = _pair(dh_interval_s=0.4)
        speech = read_wav(speech_path())
        encoder = OpusEncoder()  # the phone's: VBR
        sent: list[bytes] = []
        try:
            await b.start(pb, a.local, source=None, sink=None, payload_type=AUDIO_PT, telephone_event_pt=TE_PT)
            # A relaying leg (OpusRelay.idle_tick) keeps its source but stops pacing: frames leave by send_payload.
            source = ToneSource(440.0, seconds=60.0)
            await a.start(pa, b.local, source=source, sink=None, payload_type=AUDIO_PT, telephone_event_pt=TE_PT)
            a.stop_pacing()
            a.set_payload_size(PASSTHROUGH_PAYLOAD, bucket=PASSTHROUGH_BUCKET)
            loop = asyncio.get_running_loop()
            start = loop.time()
            for k in range(len(speech) // FRAME_SAMPLES):
                if k == 20:
                    a.send_dtmf("73")
                packet = encoder.encode(speech[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES])
                sent.append(packet)
                a.send_payload(packet)
                b.send_payload(b"ack")  # the peer talks back, so the acks of a's steps come home
                await asyncio.sleep(max(0.0, start + (k + 1) * 0.02 - loop.time()))
            await asyncio.sleep(0.2)
        finally:
            await a.stop()
            await b.stop()
        assert received == sent  # sealed as they are: bit-exact across
        assert b.stats.dtmf_in == 2 and pa.session.stats.local_epoch >= 3
        sizes = _sizes(to_b)
        buckets = {PASSTHROUGH_PAYLOAD + k * PASSTHROUGH_BUCKET + OVERHEAD for k in range(3)}
        assert sizes <= buckets and PASSTHROUGH_PAYLOAD + OVERHEAD in sizes, sorted(sizes)
        assert len({len(p) for p in sent}) > 20  # the phone's packets did vary with the speech

    _run(main)
