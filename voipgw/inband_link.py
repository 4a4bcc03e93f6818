"""The key exchange in the media path (docs/PROTOCOL.md §C.6), on one call's RTP stream: the I/O half of
``ratchet.inband``.

Behind a PBX that rebuilds the SDP (a B2BUA: Asterisk, FreeSWITCH, hosted PBXs), ``a=voipgw`` never reaches the
far end, but the Opus RTP payloads do. The same signed offer and answer then travel as RTP packets of the
negotiated Opus payload type: chunked (``chunk_message``), retransmitted on a schedule (``Retransmitter``) until
the peer's reply or sealed media shows they arrived, and reassembled (``Reassembler``, bounded) from whatever
arrives. Nothing received here is trusted: a reassembled message is only bytes until ``answer_offer`` /
``Offerer.accept_answer`` has checked its signature, freshness, AORs and the replay cache.

An ``InbandLink`` hooks the stream's receive path (``MediaStream.inband``) for the stream's whole life, so in-band
packets never reach the jitter buffer or the early-packet queue, and packets that come after the exchange (a
retransmission, an attacker's) are counted and dropped. It never latches: only a sealed frame that opens moves
the RTP destination.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from ratchet.errors import InbandError
from ratchet.inband import InbandKind, Reassembler, Retransmitter, chunk_message, is_inband
from voipgw.media import MediaStream
from voipgw.rtp.endpoint import Address
from voipgw.rtp.packet import RtpPacket

log = logging.getLogger("voipgw.inband")

MAX_QUEUED = 4
"""Complete messages of the kind we wait for, held until read (a flood of valid-looking ones cannot grow it)."""
MAX_REPLIES = 8
"""Times a finished answerer re-sends its answer when the same offer arrives again (its answer was lost)."""


class InbandLink:
    """``link = InbandLink(stream, remote, payload_type)``; ``link.send(kind, message, give_up_s)``;
    ``await link.receive(kind, timeout_s)``; ``link.finish()`` when the exchange is over (sending stops; late
    packets are counted and dropped for the stream's life)."""

    def __init__(self, stream: MediaStream, remote: Address, payload_type: int) -> None:
        self.stream = stream
        endpoint = stream.endpoint
        if endpoint.remote is None:
            endpoint.remote = remote
        if endpoint.payload_type is None:
            endpoint.payload_type = payload_type
        self._reassembler = Reassembler()
        self._want: InbandKind | None = None
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=MAX_QUEUED)
        self._retransmitter: Retransmitter | None = None
        self._task: asyncio.Task[None] | None = None
        self._until: Callable[[], bool] | None = None
        self._reply_to: bytes | None = None
        """The offer we answered: when it comes again, our answer is re-sent (bounded by MAX_REPLIES)."""
        self._reply: list[bytes] = []
        self._replies = 0
        self.finished = False
        self.packets_sent = 0
        stream.inband = self._on_packet

    # --- sending -------------------------------------------------------------------------------------------

    def send(
        self, kind: InbandKind, message: bytes, give_up_s: float, *, until: Callable[[], bool] | None = None
    ) -> None:
        """Send ``message`` now and on the retransmission schedule until ``stop_sending()``, ``until()`` is true
        (checked before each burst: e.g. the first sealed frame opened) or ``give_up_s`` passed."""
        self.stop_sending()
        packets = chunk_message(kind, message)
        loop = asyncio.get_running_loop()
        self._retransmitter = Retransmitter(packets, loop.time(), give_up_s)
        self._until = until
        if kind is InbandKind.ANSWER:
            self._reply = packets
        for packet in self._retransmitter.due(loop.time()):  # the first burst now, before anything else is sent
            self._send_packet(packet)
        self._task = loop.create_task(self._send_loop(self._retransmitter), name=f"inband-{self.stream.local[1]}")

    def answered(self, offer: bytes) -> None:
        """We answered ``offer``: its retransmissions (our answer was lost) get the answer again."""
        self._reply_to = offer

    async def _send_loop(self, retransmitter: Retransmitter) -> None:
        loop = asyncio.get_running_loop()
        while not retransmitter.finished:
            if self._until is not None and self._until():
                retransmitter.stop()
                break
            for packet in retransmitter.due(loop.time()):
                self._send_packet(packet)
            due = retransmitter.next_due()
            if due is None:
                break
            await asyncio.sleep(max(0.0, due - loop.time()))

    def _send_packet(self, packet: bytes) -> None:
        if self.stream.endpoint.send(packet):
            self.packets_sent += 1
            self.stream.stats.inband_sent += 1

    def stop_sending(self) -> None:
        if self._retransmitter is not None:
            self._retransmitter.stop()
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def finish(self) -> None:
        """The exchange is over: stop sending (an answerer keeps its answer for a repeated offer) and drop
        partial messages; from now on complete messages are counted and dropped (``inband-late``)."""
        self.stop_sending()
        self.finished = True
        self._want = None
        self._reassembler.clear()
        while not self._queue.empty():
            self._queue.get_nowait()

    async def close(self) -> None:
        self.finish()
        self._reply = []
        self._reply_to = None

    # --- receiving -----------------------------------------------------------------------------------------

    async def receive(self, kind: InbandKind, timeout_s: float) -> bytes | None:
        """The next complete message of ``kind`` (unverified bytes), or None after ``timeout_s``."""
        if self._want is not kind:
            self._want = kind
            while not self._queue.empty():
                self._queue.get_nowait()
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self._queue.get(), timeout_s)
        return None

    def _on_packet(self, pkt: RtpPacket, addr: Address) -> bool:
        """The stream's hook: True when ``pkt`` was an in-band packet (handled here), False for anything else."""
        if not is_inband(pkt.payload):
            return False
        stats = self.stream.stats
        stats.inband_received += 1
        try:
            message = self._reassembler.add(bytes(pkt.payload))
        except InbandError as exc:
            stats.refuse_inband(exc.reason)
            return True
        if message is None:
            return True
        if self._reply_to is not None and message.kind is InbandKind.OFFER and message.message == self._reply_to:
            # Our answer was lost (the caller still sends its offer): send it again, a bounded number of times.
            if self._replies < MAX_REPLIES and (self._retransmitter is None or self._retransmitter.finished):
                self._replies += 1
                for packet in self._reply:
                    self._send_packet(packet)
            return True
        if self.finished or message.kind is not self._want:
            stats.refuse_inband("inband-late" if self.finished else "inband-unexpected-kind")
            return True
        if self._queue.full():
            stats.refuse_inband("inband-queue-full")
            return True
        self._queue.put_nowait(message.message)
        return True
