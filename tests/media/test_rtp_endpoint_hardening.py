"""Junk at an RTP endpoint is counted by reason (not only as a total), and never reaches the owner or the log."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from voipgw.rtp.endpoint import RtpEndpoint
from voipgw.rtp.packet import RtpPacket, build_rtp

pytestmark = pytest.mark.hardening

JUNK = {
    "too-short": [b"\x80", b"\x80\x6f\x00"],
    "bad-version": [b"\x40" + bytes(20), b"\x00" + bytes(30)],
    "truncated-csrc": [b"\x8f\x6f" + bytes(14)],
    "truncated-extension": [b"\x90\x6f" + bytes(10)],
}


def test_malformed_datagrams_are_counted_by_reason(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> RtpEndpoint:
        ep = await RtpEndpoint.open(rtcp_interval=0)
        got: list[RtpPacket] = []

        def on_payload(pkt: RtpPacket, addr: tuple[str, int]) -> bool:
            got.append(pkt)
            return True

        ep.on_payload = on_payload
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            for datagrams in JUNK.values():
                for i, d in enumerate(datagrams * 50):
                    raw.sendto(d, ep.local)
                    if i % 25 == 24:  # paced: the receive buffer must not drop what is being counted
                        await asyncio.sleep(0.005)
            raw.sendto(build_rtp(111, 1, 1, 1, b"opus"), ep.local)
            for _ in range(300):  # bounded wait for the kernel to hand everything over
                if got:
                    break
                await asyncio.sleep(0.01)
        await ep.close()
        assert [p.payload for p in got] == [b"opus"]
        return ep

    with caplog.at_level(logging.DEBUG, logger="voipgw.rtp"):
        ep = asyncio.run(asyncio.wait_for(main(), 10.0))
    expected = {reason: 50 * len(d) for reason, d in JUNK.items()}
    assert ep.stats.malformed_by_reason == expected
    assert ep.stats.malformed == sum(expected.values())
    assert not [r for r in caplog.records if "malformed" in r.getMessage() or "refused" in r.getMessage()]
