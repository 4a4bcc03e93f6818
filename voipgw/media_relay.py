"""The pass-through relay's per-packet path of a media stream (issue 17): an opened audio payload goes from the
receiving endpoint to the other leg's seal and send in as few Python frames as the checks allow.

The same counters and refusals as the general path (``MediaStream._on_payload``/``_open``/``_send``), which still
takes every packet this path does not (an in-band key exchange's, telephone events, a stream not started yet).
Owns no state: ``MediaStream`` (its subclass) holds it. No ``recvmmsg``/``sendmmsg`` batching: every call has its
own sockets, each with one packet per 20 ms, so a batch would hold one packet (docs/RELIABILITY.md "Efficiency").
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

from ratchet.errors import FrameError, RatchetError
from voipgw.audio.pcm import Pcm
from voipgw.media_stats import MediaStats
from voipgw.protector import FrameProtector, SealedStream
from voipgw.rtp.endpoint import Address, RtpEndpoint
from voipgw.rtp.packet import RTP_HEADER_SIZE, RtpPacket

log = logging.getLogger("voipgw.media")  # the media stream's log lines keep the name operators filter on

_B1_SEQ_TS_SSRC = struct.Struct("!BHII")


class RelayPath:
    """``MediaStream``'s relay path; the attributes and the general-path methods below are MediaStream's."""

    __slots__ = ("_first_send", "_relay", "_sent_at")  # the ones assigned here; MediaStream names the rest
    _first_send: bool
    _relay: Callable[[bytes], object] | None
    _sent_at: float

    endpoint: RtpEndpoint
    protector: FrameProtector | None
    stats: MediaStats
    inband: Callable[[RtpPacket, Address], bool] | None
    _sealed: SealedStream | None
    _sealed_events: list[tuple[bytes, bool]]
    _payload_size: int | None
    _clock: Callable[[], float]
    _ts_step: int

    @property
    def relay(self) -> Callable[[bytes], object] | None:
        """Pass-through (the gateway): each opened audio payload goes here at once, never to the jitter buffer.
        Set, the endpoint hands its usual audio packet straight to ``_relay_audio`` (no RtpPacket is made)."""
        return self._relay

    @relay.setter
    def relay(self, relay: Callable[[bytes], object] | None) -> None:
        self._relay = relay
        self.endpoint.on_audio = self._relay_audio if relay is not None else None

    def _relay_audio(self, data: bytes, addr: Address) -> bool:
        """``_on_payload`` then ``_open`` for the usual audio packet of a relayed stream (the endpoint checked its
        source, SRTP and header): returns True iff the payload authenticated."""
        protector = self.protector
        if self.inband is not None or protector is None:  # not started, or the in-band key exchange may take it
            b1, seq, ts, ssrc = _B1_SEQ_TS_SSRC.unpack_from(data, 1)
            return self._on_payload(RtpPacket(b1 & 0x7F, seq, ts, ssrc, data[RTP_HEADER_SIZE:], b1 > 0x7F), addr)
        stats = self.stats
        stats.frames_received += 1
        try:
            payload = protector.open(data[RTP_HEADER_SIZE:], self._clock())
        except Exception as exc:
            return self._refused(exc)
        stats.frames_opened += 1
        if self._sealed is not None:
            for event in self._sealed.take_telephone_events():
                self._on_sealed_event(event)
        relay = self._relay
        if relay is None:  # a digit of those events ended the relay
            return self._deliver(payload, int.from_bytes(data[2:4], "big"), None)
        relay(payload)
        return True

    def _refused(self, exc: Exception) -> bool:
        """Count a frame the protector refused (a FrameError's reason; anything else is a protector bug)."""
        if isinstance(exc, FrameError):
            self.stats.refuse(exc.reason)
            return False
        # A protector bug must cost one frame, not the receive path (and never a traceback per packet).
        if "protector-error" not in self.stats.refused:
            log.error("protector.open raised a non-FrameError; counting such frames as refused", exc_info=exc)
        self.stats.refuse("protector-error")
        return False

    def send_payload(self, payload: bytes) -> bool:
        """Seal and send one encoded frame now (a pass-through relay's, see ``relay``): sealed as it is, so on a
        sealed stream its size falls in the buckets of ``set_payload_size``. A frame that must carry a telephone
        event, or the first of a sealed stream without a size yet, takes ``_send``."""
        protector = self.protector
        if protector is None or self._sealed_events or (self._sealed is not None and self._payload_size is None):
            return self._send(payload=payload)
        now = self._clock()
        try:
            frame = protector.seal(payload, now)
        except RatchetError:
            self.stats.seal_errors += 1
            return False
        # The same send tail as MediaStream._send, inlined on purpose: this runs for every relayed packet, and a
        # shared helper would add a Python call to each. The marker bit flags a talkspurt's start (RFC 3551 §4.1).
        if self.endpoint.send(frame, marker=self._first_send, samples=self._ts_step):
            self.stats.frames_sent += 1
            self._first_send = False
            self._sent_at = now
            return True
        return False

    # --- MediaStream's general path ---------------------------------------------------------------------------

    def _on_payload(self, pkt: RtpPacket, addr: Address) -> bool:
        raise NotImplementedError

    def _on_sealed_event(self, data: bytes) -> None:
        raise NotImplementedError

    def _deliver(self, payload: bytes, sequence: int, arrival: float | None) -> bool:
        raise NotImplementedError

    def _send(self, *, pcm: Pcm | None = None, payload: bytes | None = None) -> bool:
        raise NotImplementedError
