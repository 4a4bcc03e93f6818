"""One asyncio UDP RTP endpoint per call: send/receive RTP, symmetric-RTP latching, RTCP SR/RR, counters, and for
a leg that must not be taken over, a source rule (``voipgw.rtp.source``) and SRTP (``voipgw.rtp.srtp``).

Payloads are opaque here; the owner decides whether a received payload is authentic (``on_payload`` returns
True) and only an authentic packet can move the remote address. Never decodes or blocks; decrypts only SRTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from voipgw.logutil import is_log_point
from voipgw.rtp.packet import (
    RTP_HEADER_SIZE,
    Bye,
    PacketError,
    ReceiverReport,
    ReceptionStats,
    RtpPacket,
    SenderReport,
    SourceDescription,
    build_rtcp,
    build_rtp,
    is_rtcp,
    ntp_from_unix,
    parse_rtcp,
    parse_rtp,
)
from voipgw.rtp.source import SourceRule, SourceVerdict, decide_source
from voipgw.rtp.srtp import SrtpContext, SrtpRefused

log = logging.getLogger(__name__)

_RTP_FIXED = struct.Struct("!BBHII")
_B1_SEQ_TS_SSRC = struct.Struct("!BHII")


Address = tuple[str, int]

DEFAULT_PAYLOAD_TYPE = 111
OPUS_CLOCK_RATE = 48000
SAMPLES_PER_FRAME = 960  # 20 ms at 48 kHz: the RTP timestamp step per frame
RTCP_INTERVAL = 5.0
"""Mean seconds between our RTCP reports (RFC 3550 §6.2 minimum; randomized ±50% to avoid synchronization)."""
MAX_HELD_DATAGRAMS = 50
"""Datagrams kept raw while ``hold`` is on (1 s of audio): a leg whose source rule or SRTP key is not known yet."""
MAX_PORT_PAIR_TRIES = 50
"""Attempts to find an even RTP port whose port+1 is free when RTCP is not muxed."""

OnPayload = Callable[[RtpPacket, Address], bool]
"""Called for every well-formed RTP packet of our payload type (of any type while ``payload_type`` is None);
returns True iff the payload authenticated."""
OnAudio = Callable[[bytes, Address], bool]
"""The relay's lighter ``on_payload``: the whole datagram (version 2, no padding, extension or CSRC, our payload
type: the payload is ``data[RTP_HEADER_SIZE:]``) and its source; returns True iff the payload authenticated."""
OnLatch = Callable[[Address, Address], None]
"""Called with (old remote, new remote) when symmetric RTP moves the destination."""


@dataclass(slots=True)
class EndpointStats:
    """Counters of one endpoint (RTP and RTCP)."""

    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    """Well-formed RTP packets of our payload type handed to ``on_payload``."""
    bytes_received: int = 0
    malformed: int = 0
    """Datagrams that are not valid RTP (or RTCP on the RTCP path)."""
    malformed_by_reason: dict[str, int] = field(default_factory=dict)
    """The same, by PacketError reason (``too-short``, ``bad-version``, ``truncated-csrc``...)."""

    def reject(self, reason: str) -> None:
        """Count a datagram that is not RTP/RTCP at all; never logged (a flood of junk must not reach the log)."""
        self.malformed += 1
        self.malformed_by_reason[reason] = self.malformed_by_reason.get(reason, 0) + 1

    refused: dict[str, int] = field(default_factory=dict)
    """Packets refused here, by reason: ``payload-type``; with a source rule ``wrong-source`` / ``wrong-port``
    (not from the phone's signalled address); with SRTP ``srtp-auth``, ``srtp-replay``, ``srtp-malformed``;
    ``held-overflow`` (arrived before the leg's rule and keys were known, beyond MAX_HELD_DATAGRAMS)."""
    send_errors: int = 0
    rtcp_sent: int = 0
    rtcp_received: int = 0
    latches: int = 0
    """Times the remote address moved to the source of an authenticated packet."""

    def refuse(self, reason: str) -> None:
        count = self.refused.get(reason, 0) + 1
        self.refused[reason] = count
        if is_log_point(count):  # the 1st, 10th, 100th... of each reason: visible, but a flood cannot fill the log
            log.warning("RTP packet refused: %s (%d so far)", reason, count)


class _Datagrams(asyncio.DatagramProtocol):
    __slots__ = ("_endpoint", "_rtcp")

    def __init__(self, endpoint: list[RtpEndpoint], rtcp: bool) -> None:
        self._endpoint = endpoint
        self._rtcp = rtcp

    def datagram_received(self, data: bytes, addr: Address) -> None:
        # The endpoint's method is looked up per datagram (tests wrap it on the instance), without a lambda frame.
        if self._rtcp:
            self._endpoint[0]._on_rtcp_datagram(data, addr)
        else:
            self._endpoint[0]._on_rtp_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port-unreachable from a peer that has not bound yet (or has left) is routine on UDP.
        log.debug("rtp socket error: %s", exc)


def _bind_pair(host: str, port: int, need_pair: bool) -> tuple[socket.socket, socket.socket | None]:
    """Bind the RTP socket (and RTCP on port+1 unless muxed). Port 0 picks a free even/odd pair."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    tries = MAX_PORT_PAIR_TRIES if port == 0 and need_pair else 1
    last_error: OSError | None = None
    for _ in range(tries):
        rtp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            rtp.bind((host, port))
            if not need_pair:
                return rtp, None
            rtp_port = rtp.getsockname()[1]
            if rtp_port % 2 and port == 0:
                rtp.close()
                continue
            rtcp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                rtcp.bind((host, rtp_port + 1))
            except OSError as exc:
                rtcp.close()
                raise exc
            return rtp, rtcp
        except OSError as exc:
            rtp.close()
            last_error = exc
    raise OSError(f"no free RTP/RTCP port pair on {host}: {last_error}")


class RtpEndpoint:
    """An RTP session over one UDP socket (plus one for RTCP unless ``rtcp_mux``).

    Created with :meth:`open`; :meth:`close` releases everything. ``remote`` comes from the SDP; with
    ``latch=True`` it follows the source of authenticated packets (symmetric RTP behind NAT or a relay).
    """

    def __init__(
        self,
        rtp_transport: asyncio.DatagramTransport,
        rtcp_transport: asyncio.DatagramTransport | None,
        *,
        remote: Address | None,
        payload_type: int | None,
        rtcp_mux: bool,
        latch: bool,
        ssrc: int,
        rtcp_interval: float,
        cname: str,
    ) -> None:
        self._rtp = rtp_transport
        self._rtcp = rtcp_transport
        self.remote = remote
        self.payload_type = payload_type
        """Our audio payload type; None while not negotiated yet (an offer that lists several codecs): then every
        well-formed RTP packet goes to ``on_payload`` (the owner holds it until it knows) and nothing is sent."""
        self.rtcp_mux = rtcp_mux
        self.latch = latch
        self.ssrc = ssrc
        self.cname = cname
        self.rtcp_interval = rtcp_interval
        self.reports = True
        """False: this endpoint sends no RTCP (see ``open``)."""
        self.stats = EndpointStats()
        self.reception = ReceptionStats(clock_rate=OPUS_CLOCK_RATE)
        self.latched = False
        """True once the remote moved to an authenticated source other than the SDP address."""
        self.on_payload: OnPayload | None = None
        self.on_audio: OnAudio | None = None
        """Set (a pass-through relay): the usual audio packet goes here instead of ``on_payload``, without an
        RtpPacket made for it; everything else still goes to ``on_payload``."""
        self.event_payload_type: int | None = None
        """The negotiated RFC 4733 telephone-event payload type; its packets go to ``on_event``, not ``on_payload``."""
        self.on_event: OnPayload | None = None
        self.on_latch: OnLatch | None = None
        self.last_sender_report: SenderReport | None = None
        self.last_receiver_report: ReceiverReport | None = None
        self._seq = random.getrandbits(16)
        self._timestamp = random.getrandbits(32)
        self._sent_since_report = False
        self._rtcp_timer: asyncio.TimerHandle | None = None
        """The next periodic report (a timer, not a task: ~200 bytes instead of ~1.5 KB a call, issue 17)."""
        self._closed = False
        self.source_rule: SourceRule | None = None
        """Set (with ``latch`` off): datagrams from anywhere else are dropped and counted before anything else."""
        self.pinned: Address | None = None
        """The NAT port pinned by the first packet from a behind-NAT phone's registered address (see source.py)."""
        self._accepted: Address | None = None
        """The one source ``source_rule`` accepts outright (its address and port, or the pinned NAT port): a
        datagram from it skips ``_admit`` when nothing else (hold, SRTP) needs it (issue 17). None: always admit."""
        self.srtp: SrtpContext | None = None
        """Set: RTP and RTCP are SRTP/SRTCP both ways; what does not authenticate is dropped and counted."""
        self.hold = False
        """On: received datagrams are kept raw (bounded) until :meth:`secure` sets the rule and keys."""
        self._held: list[tuple[bytes, Address, bool]] = []

    @classmethod
    async def open(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        remote: Address | None = None,
        payload_type: int | None = DEFAULT_PAYLOAD_TYPE,
        rtcp_mux: bool = False,
        latch: bool = True,
        rtcp_interval: float = RTCP_INTERVAL,
        ssrc: int | None = None,
        cname: str | None = None,
        rtcp: bool = True,
    ) -> RtpEndpoint:
        """Bind the socket(s) and start the RTCP timer. ``port`` 0 picks a free port (pair).

        ``cname`` defaults to a random one per endpoint (RFC 7022): a fixed name would link a user's calls.
        ``rtcp`` False: send no RTCP at all, not even a BYE (a sealed call's RTCP would be clear, unauthenticated
        and would count its frames for the relay); what arrives is still parsed and counted, and changes nothing."""
        loop = asyncio.get_running_loop()
        rtp_sock, rtcp_sock = _bind_pair(host, port, need_pair=not rtcp_mux)
        holder: list[RtpEndpoint] = []
        try:
            rtp_tr, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(holder, rtcp=False), sock=rtp_sock)
        except BaseException:
            rtp_sock.close()
            if rtcp_sock is not None:
                rtcp_sock.close()
            raise
        rtcp_tr: asyncio.DatagramTransport | None = None
        if rtcp_sock is not None:
            try:
                rtcp_tr, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(holder, rtcp=True), sock=rtcp_sock)
            except BaseException:
                rtp_tr.close()
                rtcp_sock.close()
                raise
        ep = cls(
            rtp_tr,
            rtcp_tr,
            remote=remote,
            payload_type=payload_type,
            rtcp_mux=rtcp_mux,
            latch=latch,
            ssrc=random.getrandbits(32) if ssrc is None else ssrc,
            rtcp_interval=rtcp_interval,
            cname=cname if cname is not None else secrets.token_hex(12),
        )
        ep.reports = rtcp
        holder.append(ep)
        if rtcp and rtcp_interval > 0:
            ep._schedule_report()
        return ep

    @property
    def local(self) -> Address:
        """The bound RTP address (put this in the SDP)."""
        name = self._rtp.get_extra_info("sockname")
        return (str(name[0]), int(name[1]))

    @property
    def remote_rtcp(self) -> Address | None:
        if self.remote is None:
            return None
        return self.remote if self.rtcp_mux else (self.remote[0], self.remote[1] + 1)

    @property
    def closed(self) -> bool:
        return self._closed

    # --- sending ------------------------------------------------------------------------------------------

    def send(self, payload: bytes, *, marker: bool = False, samples: int = SAMPLES_PER_FRAME) -> bool:
        """Send one RTP packet to the current remote; returns False if there is nowhere (or no payload type) yet."""
        if self._closed or self.remote is None or self.payload_type is None:
            return False
        seq = self._seq = (self._seq + 1) & 0xFFFF
        ts = self._timestamp = (self._timestamp + samples) & 0xFFFFFFFF
        # build_rtp's checks without its cost per packet: the payload type was checked when it was set (SDP), no
        # CSRC, extension or padding here.
        pt = self.payload_type
        if not 0 <= pt <= 127:
            raise ValueError(f"payload type {pt} out of range")
        data: bytes | None = _RTP_FIXED.pack(0x80, 0x80 | pt if marker else pt, seq, ts, self.ssrc) + payload
        if self.srtp is not None:
            data = self._protect(data)  # type: ignore[arg-type]  # bytes until here
        if data is None:
            return False
        try:
            self._rtp.sendto(data, self.remote)
        except OSError:
            self.stats.send_errors += 1
            return False
        stats = self.stats
        stats.packets_sent += 1
        stats.bytes_sent += len(payload)
        self._sent_since_report = True
        return True

    @property
    def timestamp(self) -> int:
        """The RTP timestamp of the last audio packet sent (an RFC 4733 event starting now is stamped with it)."""
        return self._timestamp

    def send_event(self, payload: bytes, *, payload_type: int, timestamp: int, marker: bool = False) -> bool:
        """Send one telephone-event packet: its own payload type and the event's start timestamp, which every
        packet of one event repeats (RFC 4733 §2.5.1); the audio timestamp does not advance."""
        if self._closed or self.remote is None:
            return False
        self._seq = (self._seq + 1) & 0xFFFF
        clear = build_rtp(payload_type, self._seq, timestamp & 0xFFFFFFFF, self.ssrc, payload, marker=marker)
        data = self._protect(clear)
        if data is None:
            return False
        try:
            self._rtp.sendto(data, self.remote)
        except OSError:
            self.stats.send_errors += 1
            return False
        self.stats.packets_sent += 1
        self.stats.bytes_sent += len(payload)
        self._sent_since_report = True
        return True

    def _protect(self, data: bytes, rtcp: bool = False) -> bytes | None:
        if self.srtp is None:
            return data
        try:
            return self.srtp.protect_rtcp(data) if rtcp else self.srtp.protect(data)
        except Exception:  # libsrtp refused to protect (key exhausted): never send the packet in the clear
            self.stats.send_errors += 1
            return None

    # --- receiving ----------------------------------------------------------------------------------------

    def secure(self, rule: SourceRule | None, srtp: SrtpContext | None) -> None:
        """From now on accept only what ``rule`` allows (latching off) and, with ``srtp``, only SRTP that
        authenticates; then process the datagrams held meanwhile under the same rules."""
        self.source_rule = rule
        self._accepted = None
        if rule is not None:
            self.latch = False
            if rule.port is not None:
                self.remote = self._accepted = (rule.host, rule.port)
        self.srtp = srtp
        self.hold = False
        held, self._held = self._held, []
        for data, addr, rtcp in held:
            (self._on_rtcp_datagram if rtcp else self._on_rtp_datagram)(data, addr)

    def _admit(self, data: bytes, addr: Address, rtcp: bool) -> bytes | None:
        """The datagram if its source and (with SRTP) its tag pass, else None (counted by reason)."""
        if self.hold:
            if len(self._held) < MAX_HELD_DATAGRAMS:
                self._held.append((data, addr, rtcp))
            else:
                self.stats.refuse("held-overflow")
            return None
        rule = self.source_rule
        if rule is not None:
            if rtcp:
                # RTCP moves nothing and plays nothing: its host is checked, its port (+1, or muxed) is not.
                verdict = SourceVerdict.ACCEPT if addr[0] == rule.host else SourceVerdict.WRONG_SOURCE
            else:
                verdict = decide_source(rule, self.pinned, addr)
            if verdict in (SourceVerdict.WRONG_SOURCE, SourceVerdict.WRONG_PORT):
                self.stats.refuse(verdict.value)
                return None
        if self.srtp is not None:
            try:
                data = self.srtp.unprotect_rtcp(data) if rtcp else self.srtp.unprotect(data)
            except SrtpRefused as exc:
                self.stats.refuse(exc.reason)
                return None
        if rule is not None and rule.port is None and self.pinned is None and not rtcp:
            # NAT: the first authentic packet from the registered address fixes where we send (its NAT mapping).
            self.pinned = self.remote = self._accepted = addr
        return data

    def _on_rtp_datagram(self, data: bytes, addr: Address) -> None:
        if self.rtcp_mux and is_rtcp(data):
            self._on_rtcp_datagram(data, addr)
            return
        # A datagram from the one source the rule accepts outright is what _admit would pass unchanged.
        if self.hold or self.srtp is not None or (self.source_rule is not None and addr != self._accepted):
            admitted = self._admit(data, addr, rtcp=False)
            if admitted is None:
                return
            data = admitted
        if len(data) > RTP_HEADER_SIZE and data[0] == 0x80 and (data[1] & 0x7F) == self.payload_type:
            # The relay's fast path (issue 17): version 2, no padding, extension or CSRC, our payload type (what
            # every peer sends); parse_rtp does the same checks and handles the rest.
            stats = self.stats
            stats.packets_received += 1
            stats.bytes_received += len(data) - RTP_HEADER_SIZE
            if self.reports:  # the reception statistics feed only our RTCP reports
                _b1, seq, ts, ssrc = _B1_SEQ_TS_SSRC.unpack_from(data, 1)
                self.reception.update(seq, ts, ssrc, time.time())
            audio = self.on_audio
            if audio is not None:
                if audio(data, addr) and self.remote != addr:
                    self.confirm_source(addr)
                return
            b1, seq, ts, ssrc = _B1_SEQ_TS_SSRC.unpack_from(data, 1)
            pkt = RtpPacket(b1 & 0x7F, seq, ts, ssrc, data[RTP_HEADER_SIZE:], b1 > 0x7F)
            handler = self.on_payload
            if handler is not None and handler(pkt, addr) and self.remote != addr:
                self.confirm_source(addr)
            return
        try:
            pkt = parse_rtp(data)
        except PacketError as exc:
            self.stats.reject(exc.reason)
            return
        if pkt.payload_type != self.payload_type:
            if pkt.payload_type == self.event_payload_type and self.on_event is not None:
                # Events carry their own timestamps (an event's start, repeated): kept out of the jitter estimate.
                self.stats.packets_received += 1
                self.stats.bytes_received += len(pkt.payload)
                if self.on_event(pkt, addr):
                    self.confirm_source(addr)
                return
            if self.payload_type is not None:
                self.stats.refuse("payload-type")
                return
        self.stats.packets_received += 1
        self.stats.bytes_received += len(pkt.payload)
        self.reception.update(pkt.sequence, pkt.timestamp, pkt.ssrc, time.time())
        handler = self.on_payload
        if handler is not None and handler(pkt, addr):
            self.confirm_source(addr)

    def confirm_source(self, addr: Address) -> None:
        """The owner authenticated a payload from ``addr``: follow it if symmetric RTP is on.

        Only authenticated sources can move the stream, so a spoofed packet can never redirect it; a replayed
        one is refused by the owner's replay window before it gets here.
        """
        if self.remote != addr and self.latch and not self._closed:
            old = self.remote
            self.remote = addr
            self.latched = True
            self.stats.latches += 1
            if self.on_latch is not None and old is not None:
                self.on_latch(old, addr)

    def _on_rtcp_datagram(self, data: bytes, addr: Address) -> None:
        admitted = self._admit(data, addr, rtcp=True)
        if admitted is None:
            return
        try:
            packets = parse_rtcp(admitted)
        except PacketError as exc:
            self.stats.reject(exc.reason)
            return
        self.stats.rtcp_received += 1
        now = time.time()
        for p in packets:
            if isinstance(p, SenderReport):
                self.last_sender_report = p
                self.reception.note_sender_report(p.ntp_timestamp, now)
            elif isinstance(p, ReceiverReport):
                self.last_receiver_report = p

    # --- RTCP ---------------------------------------------------------------------------------------------

    def build_report(self, now: float) -> bytes:
        """Our compound RTCP packet: SR if we sent since the last report, else RR; then SDES CNAME."""
        block = self.reception.report_block(now)
        blocks = (block,) if block is not None else ()
        first: SenderReport | ReceiverReport
        if self._sent_since_report:
            first = SenderReport(
                self.ssrc,
                ntp_from_unix(now),
                self._timestamp,
                self.stats.packets_sent,
                self.stats.bytes_sent,
                blocks,
            )
        else:
            first = ReceiverReport(self.ssrc, blocks)
        self._sent_since_report = False
        return build_rtcp(first) + build_rtcp(SourceDescription(((self.ssrc, self.cname),)))

    def send_report(self) -> bool:
        """Send one RTCP report now (also called by the periodic timer)."""
        if not self.reports:
            return False
        target = self.remote_rtcp
        transport = self._rtp if self.rtcp_mux else self._rtcp
        if self._closed or target is None or transport is None:
            return False
        report = self._protect(self.build_report(time.time()), rtcp=True)
        if report is None:
            return False
        try:
            transport.sendto(report, target)
        except OSError:
            self.stats.send_errors += 1
            return False
        self.stats.rtcp_sent += 1
        return True

    def _schedule_report(self) -> None:
        loop = asyncio.get_running_loop()
        self._rtcp_timer = loop.call_later(self.rtcp_interval * random.uniform(0.5, 1.5), self._periodic_report)

    def _periodic_report(self) -> None:
        if self._closed:
            return
        try:
            self.send_report()
        except Exception:  # a bug, not the network (send_report counts OSErrors): one traceback, then no reports
            log.exception("RTCP report failed; this endpoint sends no more reports")
            return
        self._schedule_report()

    # --- life cycle ---------------------------------------------------------------------------------------

    async def close(self, *, bye: bool = True) -> None:
        """Send RTCP BYE (best effort), stop the timer and close the sockets. Idempotent."""
        if self._closed:
            return
        if bye and self.reports:
            target = self.remote_rtcp
            transport = self._rtp if self.rtcp_mux else self._rtcp
            if target is not None and transport is not None:
                bye_report = self._protect(self.build_report(time.time()) + build_rtcp(Bye((self.ssrc,))), rtcp=True)
                with contextlib.suppress(OSError):
                    if bye_report is not None:
                        transport.sendto(bye_report, target)
        self._closed = True
        timer, self._rtcp_timer = self._rtcp_timer, None
        if timer is not None:
            timer.cancel()
        self._rtp.close()
        if self._rtcp is not None:
            self._rtcp.close()
        # Let the loop run the transports' connection_lost callbacks so the fds are really gone.
        await asyncio.sleep(0)
