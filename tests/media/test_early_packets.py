"""A media stream bound before its payload type is known holds early packets of any type instead of refusing them
(the inside phone's first packet, sent as it answers; a hardening fix)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from voipgw.audio.codecs import get_codec
from voipgw.media import MediaError, MediaStream, PlainProtector
from voipgw.rtp.packet import build_rtp

pytestmark = pytest.mark.hardening


def test_a_stream_bound_before_its_payload_type_is_known_holds_early_packets_of_any_type() -> None:
    async def main() -> tuple[dict[str, int], int, dict[str, int], bool, dict[str, int]]:
        undecided = await MediaStream.bind("127.0.0.1", payload_type=None)
        default = await MediaStream.bind("127.0.0.1")  # Opus (111) until start(): the old behaviour, kept
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for stream in (undecided, default):
                    s.sendto(build_rtp(0, 1, 160, 7, b"\xff" * 160), stream.local)  # PCMU, as baresip answers
                    s.sendto(build_rtp(13, 2, 320, 7, b"\x40"), stream.local)  # comfort noise: not negotiated
            for _ in range(100):  # bounded: both datagrams reached each socket
                if undecided.stats.frames_received >= 2 and sum(default.endpoint.stats.refused.values()) >= 2:
                    break
                await asyncio.sleep(0.01)
            refused_before = dict(undecided.endpoint.stats.refused)
            with contextlib.suppress(MediaError):
                await undecided.start(PlainProtector(), None, source=None, sink=None, allow_insecure=True)
            unstarted = not undecided.running  # a stream without a payload type cannot start
            await undecided.start(
                PlainProtector(), None, source=None, sink=None, allow_insecure=True, codec=get_codec("pcmu"),
                payload_type=0,
            )  # fmt: skip
            return (
                refused_before,
                undecided.stats.frames_opened,
                dict(undecided.endpoint.stats.refused),
                unstarted,
                dict(default.endpoint.stats.refused),
            )
        finally:
            await undecided.stop()
            await default.stop()

    before, opened, after, unstarted, default = asyncio.run(asyncio.wait_for(main(), 20))
    assert before == {}, before  # nothing refused while the answer was pending
    assert unstarted
    assert opened == 1 and after == {"payload-type": 1}, (opened, after)  # PCMU kept, the CN packet refused
    assert default == {"payload-type": 2}, default
