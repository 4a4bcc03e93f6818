"""Two MediaStreams on loopback carry speech; refused frames give silence; impairment; no leaks."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import socket
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ratchet.errors import KeyDesync, MalformedFrame, ReplayedFrame, TamperedFrame
from tests.support.requires import requires
from tests.testbed.impair import Impairment, ImpairmentRelay
from tests.testbed.speech import make_variant, speech_path
from voipgw.audio.compare import compare_audio
from voipgw.audio.opus import OpusDecoder
from voipgw.audio.sources import ArrayPlayer, AudioSource, MemorySink, ToneSource, WavPlayer, WavRecorder
from voipgw.audio.wav import read_wav
from voipgw.media import MAX_CONCEAL_TICKS, FrameProtector, InsecureMediaRefused, MediaStream, PlainProtector
from voipgw.rtp.packet import RtpPacket, build_rtp

SPEECH_SECONDS = 3.0
CALL_TIMEOUT = 20.0


class XorCounterProtector:
    """TEST ONLY, not cryptography: a counter, a hash keystream XOR and a 4-byte keyed tag.

    Stands in for the ratchet session so the media plumbing can be tested on its own: it has a frame index
    (``last_index``), refuses tampered and replayed frames with the real FrameError classes.
    """

    secure = True

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._next = 0
        self._seen: set[int] = set()
        self.last_index: int | None = None

    def _stream(self, index: int, n: int) -> bytes:
        out = b""
        block = 0
        while len(out) < n:
            out += hashlib.blake2s(index.to_bytes(8, "big") + block.to_bytes(4, "big"), key=self._key).digest()
            block += 1
        return out[:n]

    def _tag(self, head_body: bytes) -> bytes:
        return hashlib.blake2s(head_body, key=self._key, digest_size=4, person=b"tag").digest()

    def seal(self, payload: bytes, now: float) -> bytes:
        index = self._next
        self._next += 1
        head = index.to_bytes(4, "big")
        body = bytes(a ^ b for a, b in zip(payload, self._stream(index, len(payload)), strict=True))
        return head + body + self._tag(head + body)

    def open(self, frame: bytes, now: float) -> bytes:
        if len(frame) < 9:
            raise MalformedFrame("short")
        head, body, tag = frame[:4], frame[4:-4], frame[-4:]
        if tag != self._tag(head + body):
            raise TamperedFrame()
        index = int.from_bytes(head, "big")
        if index in self._seen:
            raise ReplayedFrame()
        self._seen.add(index)
        self.last_index = index
        return bytes(a ^ b for a, b in zip(body, self._stream(index, len(body)), strict=True))


class RefuseAllProtector(XorCounterProtector):
    """Seals like the toy, but opening always fails as a key mismatch would."""

    def open(self, frame: bytes, now: float) -> bytes:
        raise KeyDesync("keys disagree")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return read_wav(speech_path())[: int(48000 * SPEECH_SECONDS)]


def _run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), CALL_TIMEOUT))


async def _settle(*streams: MediaStream, quiet_ticks: int = 10) -> None:
    """Wait until no stream has received anything for ``quiet_ticks`` ticks and the jitter buffers drained."""
    last = -1
    quiet = 0
    while quiet < quiet_ticks:
        now = sum(s.stats.frames_received for s in streams)
        quiet = quiet + 1 if now == last and all(s.jitter.buffered == 0 for s in streams) else 0
        last = now
        await asyncio.sleep(0.02)


@dataclass
class Call:
    a: MediaStream
    b: MediaStream
    sink_a: MemorySink
    sink_b: MemorySink


async def _call(
    prot_a: FrameProtector,
    prot_b: FrameProtector,
    source_a: AudioSource | None,
    source_b: AudioSource | None,
    *,
    allow_insecure: bool = False,
    relay: Impairment | None = None,
    sink_a: MemorySink | None = None,
    sink_b: MemorySink | None = None,
) -> tuple[Call, ImpairmentRelay | None]:
    a = await MediaStream.bind(rtcp_mux=relay is not None, rtcp_interval=0.5)
    b = await MediaStream.bind(rtcp_mux=relay is not None, rtcp_interval=0.5)
    impair = None
    remote_a, remote_b = b.local, a.local
    if relay is not None:
        impair = await ImpairmentRelay.open(relay, a.local, b.local)
        remote_a, remote_b = impair.addr_a, impair.addr_b
    call = Call(a, b, sink_a or MemorySink(), sink_b or MemorySink())
    await a.start(prot_a, remote_a, source=source_a, sink=call.sink_a, allow_insecure=allow_insecure)
    await b.start(prot_b, remote_b, source=source_b, sink=call.sink_b, allow_insecure=allow_insecure)
    return call, impair


async def _finish(call: Call, impair: ImpairmentRelay | None = None, quiet_ticks: int = 10) -> None:
    for s in (call.a, call.b):
        if s._source is not None:
            await asyncio.wait_for(s.source_finished.wait(), CALL_TIMEOUT)
    if impair is not None:
        await impair.drain()
    await _settle(call.a, call.b, quiet_ticks=quiet_ticks)
    await call.a.stop()
    await call.b.stop()
    if impair is not None:
        await impair.close()


@pytest.mark.integration  # takes seconds
@requires("sox")
def test_plain_call_both_directions_through_wav_files(tmp_path: Path, speech: np.ndarray) -> None:
    """A user-level run: a 16 kHz WAV file in each direction, each side records a WAV file."""
    clip = make_variant(tmp_path / "in16k.wav", 16000, seconds=SPEECH_SECONDS)

    async def main() -> None:
        rec_a, rec_b = WavRecorder(tmp_path / "a.wav"), WavRecorder(tmp_path / "b.wav")
        call, _ = await _call(
            PlainProtector(), PlainProtector(), WavPlayer(clip), WavPlayer(clip), allow_insecure=True,
            sink_a=rec_a, sink_b=rec_b,
        )  # fmt: skip
        await _finish(call)
        for stream in (call.a, call.b):
            assert stream.stats.frames_sent == 150
            assert stream.stats.frames_opened == 150
            # A loaded machine may deliver a backlog at once; the excess is trimmed, everything else plays.
            assert stream.stats.frames_played + stream.jitter.stats.trimmed == 150
            assert stream.stats.refused == {}

    _run(main)
    source = read_wav(clip)
    for name in ("a.wav", "b.wav"):
        match = compare_audio(source, read_wav(tmp_path / name))
        assert match.correlation >= 0.9, (name, match)


@pytest.mark.integration  # takes seconds
def test_protected_call_correlates_and_wire_is_not_opus(speech: np.ndarray) -> None:
    key = os.urandom(32)
    wire: list[bytes] = []

    async def main() -> None:
        call, _ = await _call(XorCounterProtector(key), XorCounterProtector(key), ArrayPlayer(speech), None)
        # Observe what b's socket receives, as a capture would.
        original = call.b.endpoint.on_payload
        assert original is not None

        def tap(pkt: RtpPacket, addr: tuple[str, int]) -> bool:
            wire.append(pkt.payload)
            return original(pkt, addr)

        call.b.endpoint.on_payload = tap
        await _finish(call, quiet_ticks=30)
        assert call.a.stats.frames_sent == 150 == len(wire)
        assert call.b.stats.frames_opened == 150 and call.b.stats.refused == {}
        assert call.b.endpoint.stats.latches == 0
        match = compare_audio(speech, call.sink_b.pcm)
        assert match.correlation >= 0.9, match
        # Once the peer goes quiet, concealment is bounded and the tail is digital silence.
        assert call.b.stats.frames_silent > MAX_CONCEAL_TICKS
        assert not np.any(call.sink_b.pcm[-48000 // 10 :])

    _run(main)
    # The sealed payloads decoded as plain Opus are not the speech (the demo's wire check in miniature).
    dec = OpusDecoder()
    as_opus = np.concatenate([dec.decode(p) for p in wire])
    assert compare_audio(speech, as_opus).correlation < 0.3


@pytest.mark.integration  # takes seconds
def test_refused_frames_play_pure_silence_and_are_counted(speech: np.ndarray) -> None:
    key = os.urandom(32)

    async def main() -> None:
        call, _ = await _call(XorCounterProtector(key), RefuseAllProtector(key), ArrayPlayer(speech), None)
        await _finish(call)
        stats = call.b.stats
        assert stats.frames_received == call.a.stats.frames_sent == 150
        assert stats.refused == {"key-desync": 150} and stats.frames_refused == 150
        assert stats.frames_opened == stats.frames_played == stats.frames_concealed == 0
        pcm = call.sink_b.pcm
        assert len(pcm) > 0 and not np.any(pcm)  # garbage is never played
        assert not call.b.endpoint.latched

    _run(main)


def test_require_policy_refuses_plain_protector_and_sends_nothing() -> None:
    async def main() -> None:
        a = await MediaStream.bind()
        b = await MediaStream.bind()
        try:
            with pytest.raises(InsecureMediaRefused):
                await a.start(PlainProtector(), b.local, source=ToneSource(), sink=None)
            assert not a.running
            await b.start(XorCounterProtector(b"k" * 32), a.local, source=None, sink=None)
            await asyncio.sleep(0.1)
            assert a.stats.frames_sent == 0 and b.stats.frames_received == 0
        finally:
            await a.stop()
            await b.stop()

    _run(main)


@pytest.mark.integration  # takes seconds
def test_latches_to_authenticated_source_only(speech: np.ndarray) -> None:
    key = os.urandom(32)

    async def main() -> None:
        a = await MediaStream.bind()
        b = await MediaStream.bind()
        attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink_a = MemorySink()
        try:
            # b's SDP told it a wrong port (a NAT rewrote it); a sends from its real port.
            await b.start(XorCounterProtector(key), ("127.0.0.1", 9), source=ArrayPlayer(speech), sink=None)
            for i in range(20):
                attacker.sendto(build_rtp(111, i, i * 960, 7, os.urandom(60)), b.local)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 2
            while b.stats.frames_received < 20 and loop.time() < deadline:
                await asyncio.sleep(0.01)
            assert b.stats.refused == {"tampered": 20}
            assert not b.endpoint.latched
            await a.start(XorCounterProtector(key), b.local, source=SilenceFor(0.5), sink=sink_a)
            await asyncio.wait_for(b.source_finished.wait(), CALL_TIMEOUT)
            await _settle(a, b)
            assert b.endpoint.latched and b.endpoint.remote == a.local
            assert a.stats.frames_opened > 100  # b's speech reached a after latching
        finally:
            attacker.close()
            await a.stop()
            await b.stop()

    _run(main)


class SilenceFor:
    """A bounded silent source (a receive-mostly side still sends, which is what makes the peer latch)."""

    def __init__(self, seconds: float) -> None:
        self._left = int(seconds / 0.02)

    def read_frame(self) -> np.ndarray | None:
        if self._left <= 0:
            return None
        self._left -= 1
        return np.zeros(960, dtype=np.int16)

    def close(self) -> None:
        self._left = 0


def test_frames_arriving_before_start_are_kept_and_opened(speech: np.ndarray) -> None:
    """The answerer may send before the offerer has processed the 200 OK: those first frames still play."""
    key = os.urandom(32)

    async def main() -> None:
        a = await MediaStream.bind()
        b = await MediaStream.bind()
        sink = MemorySink()
        try:
            await a.start(XorCounterProtector(key), b.local, source=ArrayPlayer(speech[:48000]), sink=None)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while b.stats.frames_received < 10 and loop.time() < deadline:
                await asyncio.sleep(0.01)
            early = b.stats.frames_received
            assert early >= 10 and b.stats.frames_opened == 0 and b.stats.refused == {}
            await b.start(XorCounterProtector(key), a.local, source=None, sink=sink)
            assert b.stats.frames_opened == early  # opened at start, in order
            await asyncio.wait_for(a.source_finished.wait(), CALL_TIMEOUT)
            await _settle(a, b)
            assert b.stats.frames_opened == a.stats.frames_sent == 50
            # The backlog beyond the target delay is trimmed (latency over completeness), the rest plays.
            assert b.stats.frames_played + b.jitter.stats.trimmed == 50
            assert b.jitter.stats.trimmed <= early
        finally:
            await a.stop()
            await b.stop()

    _run(main)


class BuggyProtector(XorCounterProtector):
    """Raises a non-FrameError on every other frame, like a parser bug would."""

    def open(self, frame: bytes, now: float) -> bytes:
        if frame[3] % 2:
            raise IndexError("bug")
        return super().open(frame, now)


def test_protector_bug_costs_frames_not_the_stream(speech: np.ndarray) -> None:
    key = os.urandom(32)

    async def main() -> None:
        call, _ = await _call(XorCounterProtector(key), BuggyProtector(key), ArrayPlayer(speech[:48000]), None)
        await _finish(call)
        b = call.b.stats
        assert b.refused == {"protector-error": 25} and b.frames_opened == 25
        assert call.b.error is None and b.frames_played + call.b.jitter.stats.trimmed == 25
        # The odd frames were concealed, never decoded from unopened bytes.
        assert b.frames_concealed >= 24 - call.b.jitter.stats.trimmed

    _run(main)


@pytest.mark.integration  # takes seconds
@pytest.mark.parametrize(
    "impairment",
    [
        Impairment(loss=0.10, reorder=0.10, duplicate=0.05, jitter=0.010, seed=11),
        Impairment(loss=0.10, reorder=0.10, duplicate=0.05, jitter=0.010, seed=13),
        Impairment(loss=0.0, burst_enter=0.03, burst_exit=0.4, reorder=0.10, duplicate=0.05, seed=5),
    ],
    ids=["loss10-a", "loss10-b", "burst"],
)
def test_impaired_path_still_correlates_and_counters_reconcile(speech: np.ndarray, impairment: Impairment) -> None:
    key = os.urandom(32)

    async def main() -> None:
        call, relay = await _call(
            XorCounterProtector(key), XorCounterProtector(key), ArrayPlayer(speech), None, relay=impairment
        )
        assert relay is not None
        await _finish(call, relay)
        fwd = relay.stats.a_to_b
        a, b = call.a.stats, call.b.stats
        # Sender -> relay -> receiver, nothing unexplained.
        assert a.frames_sent == 150 == fwd.received
        assert fwd.pending_at_close == 0
        assert fwd.forwarded == fwd.received - fwd.dropped + fwd.duplicated
        assert b.frames_received == fwd.forwarded
        assert 0.05 * 150 < fwd.dropped < 0.25 * 150 and fwd.reordered > 0 and fwd.duplicated > 0
        # Every duplicate is refused by the replay check; everything else opens.
        assert b.refused == {"replayed": fwd.duplicated}
        assert b.frames_opened == fwd.received - fwd.dropped
        js = call.b.jitter.stats
        assert js.received == b.frames_opened
        assert js.received == js.played + js.late + js.duplicate + js.trimmed + js.overflow + call.b.jitter.buffered
        assert b.frames_played == js.played
        # Lost frames left gaps that were filled (concealment, or silence after a long burst), not skipped.
        assert b.frames_concealed + b.frames_silent >= fwd.dropped - js.late - js.trimmed
        match = compare_audio(speech, call.sink_b.pcm)
        assert match.windowed >= 0.75, match
        assert relay.stats.a_to_b.rtcp + relay.stats.b_to_a.rtcp > 0  # RTCP (muxed) crossed the relay too

    _run(main)


@pytest.mark.integration  # takes seconds
def test_fifty_start_stop_cycles_leak_nothing() -> None:
    key = os.urandom(32)

    async def cycle() -> None:
        call, _ = await _call(
            XorCounterProtector(key),
            XorCounterProtector(key),
            ToneSource(seconds=0.06),
            ToneSource(seconds=0.06),
        )
        await asyncio.sleep(0.05)
        await call.a.stop()
        await call.b.stop()

    async def main() -> None:
        for _ in range(3):
            await cycle()  # warm-up: first-use allocations (codec libraries, loop internals, free lists)
        gc.collect()
        fds = len(os.listdir("/proc/self/fd"))
        tasks = len(asyncio.all_tasks())
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(50):
                await cycle()
            await asyncio.sleep(0)
            gc.collect()
            growth = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(os.listdir("/proc/self/fd")) == fds
        assert len(asyncio.all_tasks()) == tasks
        # Each stream holds ~1 MB while running (codecs, buffers); a leak of one stream per cycle would
        # show as tens of MB here.
        assert growth < 512 * 1024, growth

    _run(main)
