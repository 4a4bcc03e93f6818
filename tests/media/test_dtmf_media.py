"""DTMF through two real MediaStreams on loopback: sealed by real ratchet sessions (both directions, audio keeps
flowing without a gap), relabelled packets refused by a meddling relay, plain RFC 4733 on plain streams, and the
errors send_dtmf raises."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Awaitable, Callable
from typing import cast

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


def test_sealed_digits_cross_both_ways_once_while_audio_keeps_its_index() -> None:
    async def main() -> None:
        a, b = await MediaStream.bind(), await MediaStream.bind()
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
            # The event frames took counters from the audio sequence; the playout index skips them, so the
            # jitter buffers saw no missing frame at all.
            assert a.jitter.stats.missing == 0 and b.jitter.stats.missing == 0
            assert b.stats.frames_opened > 20
        finally:
            await a.stop()
            await b.stop()

    _run(main)


class _Meddler(asyncio.DatagramProtocol):
    """A relay A -> B that rewrites payload types: the first ``relabel_events`` telephone-event packets go out
    as audio, and ``relabel_audio`` audio packets go out as telephone-events (a hostile or broken network)."""

    def __init__(self, target: tuple[str, int], relabel_events: int, relabel_audio: int) -> None:
        self.target = target
        self.relabel_events = relabel_events
        self.relabel_audio = relabel_audio
        self.transport: asyncio.DatagramTransport | None = None
        self.relabelled = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        pt = data[1] & 0x7F
        new = pt
        if pt == TE_PT and self.relabel_events > 0:
            self.relabel_events -= 1
            new = AUDIO_PT
        elif pt == AUDIO_PT and self.relabel_audio > 0 and data[1] & 0x80 == 0:
            self.relabel_audio -= 1
            new = TE_PT
        if new != pt:
            self.relabelled += 1
            data = bytes([data[0], (data[1] & 0x80) | new]) + data[2:]
        self.transport.sendto(data, self.target)


def test_relabelled_packets_are_refused_and_never_change_meaning() -> None:
    async def main() -> None:
        # No latching: A must keep sending through the one-way relay, and B must not answer to it.
        a, b = await MediaStream.bind(latch=False), await MediaStream.bind(latch=False)
        loop = asyncio.get_running_loop()
        tr, meddler = await loop.create_datagram_endpoint(
            lambda: _Meddler(b.local, relabel_events=2, relabel_audio=5), local_addr=("127.0.0.1", 0)
        )
        pa, pb = _secure_pair()
        try:
            await _start(a, b, pa, pb, tr.get_extra_info("sockname"), a.local)
            await asyncio.sleep(0.2)
            a.send_dtmf("47", duration_ms=200)  # 6 packets per digit: losing 2 to relabelling still reports
            assert await _digits(b, 2) == "47"
            await a.dtmf_sent()
            await asyncio.sleep(0.3)
            assert meddler.relabelled == 7
            assert b.stats.refused == {"wrong-content": 7}
            assert b.stats.dtmf_in == 2 and b.dtmf.empty()  # no audio frame became a digit
            assert b.stats.decode_failures == 0  # no event frame reached the Opus decoder
        finally:
            tr.close()
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


class _BuggyEvents(SecureProtector):
    """A real secure protector whose event opener has a bug (raises something that is not a FrameError)."""

    def __init__(self, session: MediaSession) -> None:
        super().__init__(session)

        def broken(frame: bytes, now: float) -> bytes:
            raise RuntimeError("bug")

        self.open_event = broken


def test_a_protector_bug_in_open_event_costs_the_event_not_the_stream() -> None:
    async def main() -> None:
        a, b = await MediaStream.bind(), await MediaStream.bind()
        pa, pb = _secure_pair()
        try:
            await _start(a, b, pa, _BuggyEvents(pb.session), b.local, a.local)
            a.send_dtmf("1")
            await a.dtmf_sent()
            await asyncio.sleep(0.2)
            assert b.stats.refused == {"protector-error": 4} and b.stats.dtmf_in == 0
            assert b.stats.frames_opened > 10 and b.running  # audio kept flowing
        finally:
            await a.stop()
            await b.stop()

    _run(main)
