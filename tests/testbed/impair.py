"""A seeded UDP impairment relay for tests: loss, burst loss, reordering, duplication, jitter.

Binds only loopback; every random choice comes from one seeded generator so a failure replays exactly.
RTCP (RFC 5761 range) is forwarded unimpaired and counted apart, so frame counters can be reconciled.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field

Address = tuple[str, int]


@dataclass(frozen=True)
class Impairment:
    """What the relay does to RTP in each direction (probabilities are per packet, 0..1)."""

    loss: float = 0.0
    burst_enter: float = 0.0
    """Gilbert-Elliott: chance of entering the lossy burst state on a packet in the good state."""
    burst_exit: float = 0.5
    """Chance of leaving the burst state on each packet in it (mean burst = 1/burst_exit packets)."""
    burst_loss: float = 1.0
    """Loss probability inside a burst."""
    reorder: float = 0.0
    """Chance a packet is held back by ``reorder_delay`` so later packets overtake it."""
    reorder_delay: float = 0.045
    duplicate: float = 0.0
    jitter: float = 0.0
    """Uniform extra delay in [0, jitter] seconds for every packet."""
    seed: int = 1


@dataclass
class DirectionStats:
    received: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    forwarded: int = 0
    """Datagrams actually sent on (duplicates included)."""
    rtcp: int = 0
    pending_at_close: int = 0
    """Datagrams still delayed when the relay closed (never delivered)."""


@dataclass
class RelayStats:
    a_to_b: DirectionStats = field(default_factory=DirectionStats)
    b_to_a: DirectionStats = field(default_factory=DirectionStats)


def next_burst_state(in_burst: bool, enter: float, leave: float, rng: random.Random) -> bool:
    """One packet's step of the Gilbert-Elliott loss model: whether the path is in its lossy burst state now.
    Draws from ``rng`` only as needed (none while ``enter`` is 0 in the good state), so seeded runs replay."""
    if in_burst:
        return not rng.random() < leave
    return bool(enter) and rng.random() < enter


def _is_rtcp(data: bytes) -> bool:
    return len(data) >= 2 and 192 <= data[1] <= 223


class _Side(asyncio.DatagramProtocol):
    def __init__(self, relay: ImpairmentRelay, side: str) -> None:
        self.relay = relay
        self.side = side

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.relay._received(self.side, data, addr)

    def error_received(self, exc: Exception) -> None:
        return None


class ImpairmentRelay:
    """Peer A sends to ``addr_a``, peer B to ``addr_b``; each is forwarded, impaired, to the other peer.

    Peer addresses are given (the SDP ones) and also learnt from the first datagram on each side.
    """

    def __init__(self, impairment: Impairment, peer_a: Address | None, peer_b: Address | None) -> None:
        self.impairment = impairment
        self.peer = {"a": peer_a, "b": peer_b}
        self.stats = RelayStats()
        self._rng = random.Random(impairment.seed)
        self._burst = {"a": False, "b": False}
        self._transports: dict[str, asyncio.DatagramTransport] = {}
        self._timers: dict[asyncio.TimerHandle, DirectionStats] = {}
        self._closed = False

    @classmethod
    async def open(
        cls, impairment: Impairment, peer_a: Address | None = None, peer_b: Address | None = None
    ) -> ImpairmentRelay:
        relay = cls(impairment, peer_a, peer_b)
        loop = asyncio.get_running_loop()
        for side in ("a", "b"):
            tr, _ = await loop.create_datagram_endpoint(
                lambda s=side: _Side(relay, s),  # type: ignore[misc]
                local_addr=("127.0.0.1", 0),
            )
            relay._transports[side] = tr
        return relay

    @property
    def addr_a(self) -> Address:
        """Where peer A must send (the relay's A-facing socket)."""
        name = self._transports["a"].get_extra_info("sockname")
        return (name[0], name[1])

    @property
    def addr_b(self) -> Address:
        name = self._transports["b"].get_extra_info("sockname")
        return (name[0], name[1])

    @property
    def pending(self) -> int:
        return len(self._timers)

    def _received(self, side: str, data: bytes, addr: Address) -> None:
        if self._closed:
            return
        self.peer[side] = addr
        out = "b" if side == "a" else "a"
        stats = self.stats.a_to_b if side == "a" else self.stats.b_to_a
        if _is_rtcp(data):
            stats.rtcp += 1
            self._send(out, data)
            return
        stats.received += 1
        imp = self.impairment
        rng = self._rng
        self._burst[side] = next_burst_state(self._burst[side], imp.burst_enter, imp.burst_exit, rng)
        lose = imp.burst_loss if self._burst[side] else imp.loss
        if lose and rng.random() < lose:
            stats.dropped += 1
            return
        copies = 2 if imp.duplicate and rng.random() < imp.duplicate else 1
        if copies == 2:
            stats.duplicated += 1
        for _ in range(copies):
            delay = rng.uniform(0.0, imp.jitter) if imp.jitter else 0.0
            if imp.reorder and rng.random() < imp.reorder:
                delay += imp.reorder_delay
                stats.reordered += 1
            if delay <= 0:
                self._deliver(out, data, stats)
            else:
                self._later(delay, out, data, stats)

    def _later(self, delay: float, out: str, data: bytes, stats: DirectionStats) -> None:
        loop = asyncio.get_running_loop()
        holder: list[asyncio.TimerHandle] = []

        def fire() -> None:
            self._timers.pop(holder[0], None)
            self._deliver(out, data, stats)

        handle = loop.call_later(delay, fire)
        holder.append(handle)
        self._timers[handle] = stats

    def _deliver(self, out: str, data: bytes, stats: DirectionStats) -> None:
        if self._send(out, data):
            stats.forwarded += 1

    def _send(self, out: str, data: bytes) -> bool:
        target = self.peer[out]
        if target is None or self._closed:
            return False
        with contextlib.suppress(OSError):
            self._transports[out].sendto(data, target)
            return True
        return False

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until every delayed datagram has been delivered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._timers and loop.time() < deadline:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._closed:
            return
        for handle, stats in self._timers.items():
            handle.cancel()
            stats.pending_at_close += 1
        self._closed = True
        self._timers.clear()
        for tr in self._transports.values():
            tr.close()
        await asyncio.sleep(0)
