"""The pass-through relay's per-packet path (``voipgw.media_relay``, issue 17), on real sockets: a relayed stream
hands each opened payload on unchanged and counts what it refuses exactly as the general path does; forged and
replayed frames from another address are refused and never move the stream; a source rule still refuses every
other address and port although its one accepted source skips the admission call."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

from ratchet.session import MediaConfig, MediaSession
from tests.support.ratchet_pairs import make_pair
from voipgw.active_call import SecureProtector
from voipgw.media import MediaStream, PlainProtector
from voipgw.rtp.packet import build_rtp
from voipgw.rtp.source import SourceRule

TIMEOUT = 20.0
AUDIO_PT = 111
ATTACKER = "127.0.0.66"


def _run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), TIMEOUT))


async def _until(done: Callable[[], bool]) -> None:
    while not done():
        await asyncio.sleep(0.01)


def _udp(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


async def _plain_relay(rule: SourceRule) -> tuple[MediaStream, list[bytes]]:
    """A started plain relayed stream under ``rule`` and the list its relayed payloads go to."""
    b = await MediaStream.bind(latch=False)
    got: list[bytes] = []
    await b.start(PlainProtector(), None, source=None, sink=None, allow_insecure=True, payload_type=AUDIO_PT)
    b.endpoint.secure(rule, None)
    b.relay = got.append
    return b, got


def _send_from_each(
    seq: int, dest: tuple[str, int], phone: socket.socket, other_port: socket.socket, attacker: socket.socket
) -> None:
    """One packet each from the phone (``ok``), another port of its host and the attacker's host."""
    phone.sendto(build_rtp(AUDIO_PT, seq, seq * 960, 7, b"ok%d" % seq), dest)
    other_port.sendto(build_rtp(AUDIO_PT, seq, seq * 960, 7, b"port"), dest)
    attacker.sendto(build_rtp(AUDIO_PT, seq, seq * 960, 7, b"evil"), dest)


def test_a_relayed_sealed_stream_hands_on_what_opened_and_refuses_forgeries_and_replays() -> None:
    async def main() -> None:
        a, b = await MediaStream.bind(), await MediaStream.bind()
        ko, ka = make_pair(interval_ms=2000)
        now = time.monotonic()
        pa, pb = (
            SecureProtector(MediaSession(ko, now, MediaConfig())),
            SecureProtector(MediaSession(ka, now, MediaConfig())),
        )
        wire: list[bytes] = []
        inner = b.endpoint._on_rtp_datagram

        def tap(data: bytes, addr: tuple[str, int]) -> None:
            wire.append(data)
            inner(data, addr)

        b.endpoint._on_rtp_datagram = tap  # type: ignore[method-assign]
        got: list[bytes] = []
        attacker = _udp(ATTACKER)
        try:
            await a.start(pa, b.local, source=None, sink=None, payload_type=AUDIO_PT)
            await b.start(pb, a.local, source=None, sink=None, payload_type=AUDIO_PT)
            b.relay = got.append
            sent = [bytes([0xF8, i]) + bytes(range(i % 40)) for i in range(60)]
            for payload in sent:
                assert a.send_payload(payload)
                await asyncio.sleep(0.002)
            await _until(lambda: len(got) >= len(sent))
            # A forged frame (a valid RTP header, made-up sealed bytes) and a replayed genuine one, from elsewhere.
            header = wire[-1][:12]
            attacker.sendto(header + bytes(80), b.local)
            attacker.sendto(wire[5], b.local)
            await _until(lambda: sum(b.stats.refused.values()) >= 2)
        finally:
            attacker.close()
            await a.stop()
            await b.stop()
        assert got == sent
        assert b.stats.frames_received == len(sent) + 2 and b.stats.frames_opened == len(sent)
        assert sum(b.stats.refused.values()) == 2
        assert b.endpoint.remote == a.local and not b.endpoint.latched  # neither moved the stream

    _run(main)


def test_a_source_rule_refuses_every_other_address_and_port_on_the_relay_path() -> None:
    async def main() -> None:
        phone, other_port, attacker = _udp("127.0.0.1"), _udp("127.0.0.1"), _udp(ATTACKER)
        phone_addr = phone.getsockname()
        b, got = await _plain_relay(SourceRule("127.0.0.1", phone_addr[1]))
        try:
            for seq in range(10):
                _send_from_each(seq, b.local, phone, other_port, attacker)
            await _until(lambda: len(got) >= 10 and sum(b.endpoint.stats.refused.values()) >= 20)
            await asyncio.sleep(0.05)
        finally:
            for s in (phone, other_port, attacker):
                s.close()
            await b.stop()
        assert got == [b"ok%d" % seq for seq in range(10)]
        assert b.endpoint.stats.refused == {"wrong-port": 10, "wrong-source": 10}
        assert b.endpoint.remote == phone_addr

    _run(main)


def test_behind_nat_the_first_packet_pins_the_port_and_the_relay_path_refuses_the_others() -> None:
    async def main() -> None:
        phone, other_port, attacker = _udp("127.0.0.1"), _udp("127.0.0.1"), _udp(ATTACKER)
        phone_addr = phone.getsockname()
        b, got = await _plain_relay(SourceRule("127.0.0.1", None))
        try:
            phone.sendto(build_rtp(AUDIO_PT, 0, 0, 7, b"first"), b.local)
            await _until(lambda: len(got) == 1)
            for seq in range(1, 6):
                _send_from_each(seq, b.local, phone, other_port, attacker)
            await _until(lambda: len(got) >= 6 and sum(b.endpoint.stats.refused.values()) >= 10)
            await asyncio.sleep(0.05)
        finally:
            for s in (phone, other_port, attacker):
                s.close()
            await b.stop()
        assert got == [b"first"] + [b"ok%d" % seq for seq in range(1, 6)]
        assert b.endpoint.stats.refused == {"wrong-port": 5, "wrong-source": 5}
        assert b.endpoint.pinned == b.endpoint.remote == phone_addr

    _run(main)
