"""DTMF through two real MediaStreams on loopback: inside the sealed audio frames of real ratchet sessions (both
directions, one payload type, one frame size, one timestamp step), telephone-event packets from an attacker
refused on a sealed stream, plain RFC 4733 on plain streams, and the errors send_dtmf raises."""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from collections.abc import Awaitable, Callable

import pytest

from ratchet.session import MediaConfig, MediaSession
from tests.support.ratchet_pairs import make_pair
from voipgw.audio.sources import MemorySink, ToneSource
from voipgw.leg import SecureProtector
from voipgw.media import MediaError, MediaStream, PlainProtector
from voipgw.rtp.dtmf import BadDigit, BadDuration, TelephoneEvent
from voipgw.rtp.packet import parse_rtp

TIMEOUT = 30.0
AUDIO_PT = 111
TE_PT = 101
ATTACKER = "127.0.0.66"


def _run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), TIMEOUT))


def _secure_pair() -> tuple[SecureProtector, SecureProtector]:
    ko, ka = make_pair(interval_ms=2000)
    now = time.monotonic()
    cfg = MediaConfig(dh_interval_s=0)
    return SecureProtector(MediaSession(ko, now, cfg)), SecureProtector(MediaSession(ka, now, cfg))


async def _digits(stream: MediaStream, count: int) -> str:
    return "".join([await asyncio.wait_for(stream.dtmf.get(), TIMEOUT) for _ in range(count)])


async def _start(
    a: MediaStream, b: MediaStream, pa: object, pb: object, remote_a: tuple[str, int], remote_b: tuple[str, int]
) -> None:
    for s, p, r in ((a, pa, remote_a), (b, pb, remote_b)):
        await s.start(
            p,  # type: ignore[arg-type]
            r,
            source=ToneSource(440.0 if s is a else 660.0, seconds=60.0),
            sink=MemorySink(),
            allow_insecure=not getattr(p, "secure", False),
            clock=time.monotonic,
            payload_type=AUDIO_PT,
            telephone_event_pt=TE_PT,
        )


def _tap(stream: MediaStream) -> list[bytes]:
    """Every datagram that reaches ``stream``'s RTP socket, as it came (what a capture of that port shows)."""
    wire: list[bytes] = []
    inner = stream.endpoint._on_rtp_datagram

    def tap(data: bytes, addr: tuple[str, int]) -> None:
        wire.append(data)
        inner(data, addr)

    stream.endpoint._on_rtp_datagram = tap  # type: ignore[method-assign]
    return wire


def test_sealed_digits_cross_both_ways_once_inside_equal_audio_frames() -> None:
    async def main() -> None:
        a, b = await MediaStream.bind(), await MediaStream.bind()
        to_a, to_b = _tap(a), _tap(b)
        pa, pb = _secure_pair()
        try:
            await _start(a, b, pa, pb, b.local, a.local)
            await asyncio.sleep(0.2)
            a.send_dtmf("159#")
            b.send_dtmf("*0d", duration_ms=60)
            assert await _digits(b, 4) == "159#"
            assert await _digits(a, 3) == "*0D"
            await a.dtmf_sent()
            await b.dtmf_sent()
            await asyncio.sleep(0.3)  # the last end packets and the audio after them
            assert a.stats.dtmf_out == 4 and b.stats.dtmf_in == 4
            assert b.stats.dtmf_out == 3 and a.stats.dtmf_in == 3
            assert b.stats.events_received >= 4 * 4  # every packet of every train opened (repeats included)
            assert a.stats.refused == {} and b.stats.refused == {}
            assert a.dtmf.empty() and b.dtmf.empty()
            # Events ride in audio frames: no counter was taken from the audio, the jitter buffers miss nothing.
            assert a.jitter.stats.missing == 0 and b.jitter.stats.missing == 0
            assert b.stats.frames_opened > 20
        finally:
            await a.stop()
            await b.stop()
        for wire in (to_a, to_b):
            packets = [parse_rtp(d) for d in wire]
            assert {p.payload_type for p in packets} == {AUDIO_PT}  # no telephone-event packet at all
            assert len({len(p.payload) for p in packets}) == 1, sorted({len(p.payload) for p in packets})
            steps = {(q.timestamp - p.timestamp) & 0xFFFFFFFF for p, q in itertools.pairwise(packets)}
            assert steps == {960}  # one timestamp step: a key press has no timestamp of its own

    _run(main)


def test_forged_or_relabelled_event_packets_on_a_sealed_stream_are_refused_and_change_nothing() -> None:
    async def main() -> None:
        a, b = await MediaStream.bind(), await MediaStream.bind()
        wire = _tap(b)
        pa, pb = _secure_pair()
        loop = asyncio.get_running_loop()
        attacker, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(ATTACKER, 0))
        try:
            await _start(a, b, pa, pb, b.local, a.local)
            await asyncio.sleep(0.3)
            genuine = parse_rtp(wire[-1])
            # A genuine audio frame relabelled as a telephone event, a fresh copy of it, and a clear RFC 4733 "5".
            relabelled = bytes([wire[-1][0], TE_PT]) + wire[-1][2:]
            forged = struct.pack("!BBHII", 0x80, TE_PT, genuine.sequence + 1, genuine.timestamp, genuine.ssrc)
            forged += TelephoneEvent(5, False, 10, 400).encode()
            before = (pb.session.stats, pb.last_index)
            for data in (relabelled, forged, forged):
                attacker.sendto(data, b.local)
            await asyncio.sleep(0.2)
            assert b.stats.refused == {"event-pt-on-secure-stream": 3}
            assert b.stats.dtmf_in == 0 and b.dtmf.empty() and b.stats.events_received == 0
            assert b.endpoint.remote == a.local and b.endpoint.stats.latches == 0  # never moved to the attacker
            assert pb.session.stats.refused == before[0].refused  # the session never saw them
            assert pb.last_index > before[1]  # the genuine audio kept opening
        finally:
            attacker.close()
            await a.stop()
            await b.stop()

    _run(main)


def test_plain_streams_carry_standard_rfc4733() -> None:
    async def main() -> None:
        a, b = await MediaStream.bind(), await MediaStream.bind()
        wire: list[bytes] = []
        inner = b.endpoint._on_rtp_datagram

        def tap(data: bytes, addr: tuple[str, int]) -> None:
            wire.append(data)
            inner(data, addr)

        b.endpoint._on_rtp_datagram = tap  # type: ignore[method-assign]
        try:
            await _start(a, b, PlainProtector(), PlainProtector(), b.local, a.local)
            a.send_dtmf("8")
            assert await _digits(b, 1) == "8"
            await a.dtmf_sent()
            await asyncio.sleep(0.1)
            events = [p for p in map(parse_rtp, wire) if p.payload_type == TE_PT]
            assert len(events) == 4  # one update + three end packets for 100 ms
            assert events[0].marker and len({p.timestamp for p in events}) == 1
            decoded = [TelephoneEvent.decode(p.payload) for p in events]
            assert [e.end for e in decoded] == [False, True, True, True]
            assert {e.digit for e in decoded} == {"8"} and decoded[-1].duration == 800
        finally:
            await a.stop()
            await b.stop()

    _run(main)


def test_send_dtmf_refuses_what_it_cannot_send() -> None:
    async def main() -> None:
        a = await MediaStream.bind()
        try:
            with pytest.raises(MediaError):
                a.send_dtmf("1")  # not started
            await a.start(PlainProtector(), ("127.0.0.1", 9), source=None, sink=None, allow_insecure=True)
            with pytest.raises(MediaError):
                a.send_dtmf("1")  # no telephone-event negotiated
            a.set_telephone_event(TE_PT)
            with pytest.raises(BadDigit):
                a.send_dtmf("12E")
            with pytest.raises(BadDuration):
                a.send_dtmf("1", duration_ms=10)
            with pytest.raises(MediaError):
                a.set_telephone_event(8)
            a.send_dtmf("")
            await a.dtmf_sent()
            assert a.stats.dtmf_out == 0
        finally:
            await a.stop()

    _run(main)


def test_garbled_plain_events_are_counted_not_delivered() -> None:
    async def main() -> None:
        b = await MediaStream.bind()
        try:
            await b.start(PlainProtector(), None, source=None, sink=None, allow_insecure=True, telephone_event_pt=TE_PT)
            loop = asyncio.get_running_loop()
            tr, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
            try:
                for i, payload in enumerate([b"\x01\x0a", bytes([16, 10, 1, 0]), bytes([2, 10, 1, 0])]):
                    hdr = struct.pack("!BBHII", 0x80, TE_PT, i, 1000 + i, 42)
                    tr.sendto(hdr + payload, b.local)
                assert await _digits(b, 1) == "2"
            finally:
                tr.close()
            assert b.stats.refused == {"dtmf-malformed": 1, "dtmf-unknown-event": 1}
        finally:
            await b.stop()

    _run(main)
