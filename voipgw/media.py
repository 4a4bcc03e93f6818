"""One call's media session: RTP endpoint + frame protector + codec (Opus by default) + jitter buffer + audio
source and sink. On a sealed stream every frame has one size (CBR Opus gives up the bytes control data takes) and
DTMF rides inside the audio frames (docs/PROTOCOL.md Part B, TELEPHONE_EVENT).

Never plays or decodes a payload the protector did not open, and never sends clear audio unless the caller
explicitly allowed an insecure (opportunistic) protector. Owns no keys (the protector seals/opens).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol, cast

import numpy as np

from ratchet.errors import RatchetError
from voipgw.audio.codecs import OPUS, AudioDecoder, AudioEncoder, CodecInfo
from voipgw.audio.opus import FRAME_SAMPLES, MAX_PACKET, MIN_BUDGET, OpusDecoder
from voipgw.audio.pcm import Pcm
from voipgw.audio.sources import AudioSink, AudioSource
from voipgw.media_relay import RelayPath
from voipgw.media_stats import MediaStats as MediaStats
from voipgw.protector import BudgetEncoder as BudgetEncoder
from voipgw.protector import FrameProtector as FrameProtector
from voipgw.protector import InsecureMediaRefused as InsecureMediaRefused
from voipgw.protector import MediaError as MediaError
from voipgw.protector import PlainProtector as PlainProtector
from voipgw.protector import SealedStream as SealedStream
from voipgw.rtp.dtmf import (
    CLOCK_RATE,
    DEFAULT_DURATION_MS,
    DTMF_QUEUE,
    GAP_MS,
    MAX_EVENT_COUNTERS,
    MAX_PENDING_DTMF,
    MAX_QUEUED_EVENTS,
    DtmfError,
    DtmfReceiver,
    TelephoneEvent,
    check_digits,
    decode_sealed,
    digit_train,
    encode_sealed,
)
from voipgw.rtp.endpoint import DEFAULT_PAYLOAD_TYPE, Address, RtpEndpoint
from voipgw.rtp.jitter import FRAME_SECONDS, JitterBuffer
from voipgw.rtp.packet import RtpPacket, SeqUnwrapper

log = logging.getLogger(__name__)


MAX_LATE_TICKS = 10
"""If the loop falls this many ticks (200 ms) behind, skip them instead of sending a burst."""
MAX_CONCEAL_TICKS = 10
"""Consecutive gaps concealed with the codec's PLC (200 ms) before playing plain silence (the peer went quiet)."""
MAX_EARLY_PACKETS = 50
"""Packets kept from before start() (1 s): the answerer's first frames can beat the 200 OK to the offerer."""
MAX_CONTROL_BYTES = 60
"""The most control data one sealed frame carries (a 42-byte RATCHET_KEY or SAS_REVEAL, KEY_ACK, TELEPHONE_EVENT):
the headroom a codec that cannot shrink (G.711, G.722) gets on top of its constant frame, so frames stay equal."""
FILL_AFTER_S = 0.060
"""A stream whose frames are sent by the other leg's receive path (``play_direct`` on the other side, a source
that says ``SKIP_TICK``) sends silence on its own ticks once nothing was sent for this long (three frames): the far
end keeps hearing a steady stream (its media timeout, the ratchet's frames) while the phone is quiet or on hold,
and one or two lost packets are left to the far end's concealment."""
SKIP_TICK: Pcm = np.zeros(0, dtype=np.int16)
"""What a source returns for "nothing to send on this tick: someone else sends my frames as they come"
(identity-compared; see FILL_AFTER_S)."""
_SILENCE: Pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)


class Releasable(Protocol):
    def release(self) -> None: ...


class MediaStream(RelayPath):
    """A call's bidirectional audio. Bind first (the SDP needs the port), then start once keys exist.

    ``stream = await MediaStream.bind(); offer(stream.local); await stream.start(protector, remote, ...)``;
    ``await stream.stop()`` cancels the pacing task, closes the socket(s), the source and the sink.
    """

    # Slots, not a __dict__: two streams a gateway call, ~1.5 KB each saved (issue 17). A new attribute needs its
    # name here (AttributeError otherwise).
    __slots__ = tuple(
        """
        _arrival_index _bucket _budgeted _clock _decoder_made _direct _direct_next _dtmf_idle _dtmf_pending
        _dtmf_queue _dtmf_rx _dtmf_task _early _early_events _encoder _event_base _event_indexes
        _gap _heard _jitter _last_event _payload_size _sealed _sealed_events _sink _source
        _source_done _source_event _stopped _task _unwrap codec codec_parts endpoint error inband on_dtmf
        protector stats telephone_event_pt _ts_step _tick_late __weakref__
        """.split()  # noqa: SIM905 (one name list a screen wide, not 43 lines)
    )

    def __init__(self, endpoint: RtpEndpoint) -> None:
        self.endpoint = endpoint
        self.stats = MediaStats()
        self._jitter: JitterBuffer | None = None
        """Made on first use (``jitter``): a relayed or direct stream never buffers (~1.2 KB, issue 17)."""
        self._source_done = False
        self._source_event: asyncio.Event | None = None
        self.protector: FrameProtector | None = None
        self._sealed: SealedStream | None = None
        """The protector again when it makes equal frames and carries DTMF inside (None: plain, or an old one)."""
        self._payload_size: int | None = None
        """The size every sealed frame's control + content has (None: not decided yet, or not a sealed stream)."""
        self._bucket = 32
        self._budgeted = False
        """The encoder gives up the bytes control data takes (CBR Opus); else ``_payload_size`` has headroom."""
        self._sealed_events: list[tuple[bytes, bool]] = []
        """Telephone events waiting for the next sealed frame: (8-byte payload, last packet of its digit). A list:
        an empty deque is 600 bytes, and this holds 0-2 items."""
        self.error: BaseException | None = None
        """An unexpected exception that ended the pacing loop (None while healthy)."""
        self._source: AudioSource | None = None
        self._sink: AudioSink | None = None
        self.codec: CodecInfo = OPUS
        self._ts_step = OPUS.timestamp_step
        """The codec in use (set by start(); Opus until then)."""
        self._encoder: AudioEncoder | None = None
        self._decoder_made: AudioDecoder | None = None
        """Made on first use (``_decoder``): a relayed stream never decodes, and libopus's state is ~18 KB."""
        self._heard = False
        self._gap = 0
        self._early: list[tuple[RtpPacket, Address, float]] = []
        self._first_send = True
        self._task: asyncio.Task[None] | None = None
        self._clock: Callable[[], float] = time.monotonic
        self._arrival_index = 0
        self._unwrap = SeqUnwrapper()
        self._stopped = False
        self.telephone_event_pt: int | None = None
        """The negotiated RFC 4733 payload type (None: no DTMF in this call). See set_telephone_event."""
        self._dtmf_queue: asyncio.Queue[str] | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        """Called with each received digit too (the gateway relays them without polling the queue)."""
        self.inband: Callable[[RtpPacket, Address], bool] | None = None
        """The in-band key exchange's hook (``voipgw.inband_link``): True when it took the packet."""
        self._relay: Callable[[bytes], object] | None = None
        self._direct = False
        """``play_direct``: each opened frame is decoded and written to the sink at once (no jitter buffer)."""
        self._direct_next: int | None = None
        self._sent_at = 0.0  # _clock() of the last frame sent (FILL_AFTER_S)
        self._tick_late = False
        self.codec_parts: list[Releasable] = []
        """This stream's codec objects that pass-through may release once the stream stops pacing (the gateway).
        Kept on the stream, so they die with it."""
        self._dtmf_rx = DtmfReceiver()
        self._dtmf_pending: list[tuple[str, int]] = []
        self._dtmf_task: asyncio.Task[None] | None = None
        self._dtmf_idle: asyncio.Event | None = None
        """Made by send_dtmf (None: nothing was ever queued, so idle)."""
        self._last_event: tuple[int, int] | None = None
        self._early_events: list[tuple[RtpPacket, Address]] = []
        self._event_indexes: list[int] = []
        self._event_base = 0
        endpoint.on_payload = self._on_payload
        endpoint.on_event = self._on_event

    @property
    def jitter(self) -> JitterBuffer:
        if self._jitter is None:
            self._jitter = JitterBuffer()
        return self._jitter

    @jitter.setter
    def jitter(self, buffer: JitterBuffer) -> None:
        self._jitter = buffer

    @property
    def source_finished(self) -> asyncio.Event:
        """Set when the source is exhausted (its last frame was sent). Made on first use (an Event is 1 KB)."""
        if self._source_event is None:
            self._source_event = asyncio.Event()
            if self._source_done:
                self._source_event.set()
        return self._source_event

    def _source_finished(self, done: bool) -> None:
        self._source_done = done
        if self._source_event is not None:
            if done:
                self._source_event.set()
            else:
                self._source_event.clear()

    @property
    def dtmf(self) -> asyncio.Queue[str]:
        """Received digits, each press once ("0"-"9", "*", "#", "A"-"D"); bounded, the oldest dropped when full.
        Made on first use: ~2 KB a stream, and the gateway only reads ``on_dtmf`` (issue 17, memory per call)."""
        if self._dtmf_queue is None:
            self._dtmf_queue = asyncio.Queue(maxsize=DTMF_QUEUE)
        return self._dtmf_queue

    @property
    def _decoder(self) -> AudioDecoder:
        if self._decoder_made is None:
            self._decoder_made = OpusDecoder()
        return self._decoder_made

    @classmethod
    async def bind(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        payload_type: int | None = DEFAULT_PAYLOAD_TYPE,
        rtcp_mux: bool = False,
        rtcp_interval: float = 5.0,
        latch: bool = True,
        rtcp: bool = True,
    ) -> MediaStream:
        """Open the RTP socket(s). Packets that arrive before :meth:`start` are held (bounded) until then.

        ``payload_type`` None: not known yet (we offered several codecs and the answer will pick one); packets of
        every payload type are held until :meth:`start` names it, and those of another type are refused then."""
        ep = await RtpEndpoint.open(
            host,
            port,
            payload_type=payload_type,
            rtcp_mux=rtcp_mux,
            rtcp_interval=rtcp_interval,
            latch=latch,
            rtcp=rtcp,
        )
        return cls(ep)

    @property
    def local(self) -> Address:
        return self.endpoint.local

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(
        self,
        protector: FrameProtector,
        remote: Address | None,
        *,
        source: AudioSource | None,
        sink: AudioSink | None,
        allow_insecure: bool = False,
        jitter: JitterBuffer | None = None,
        encoder: AudioEncoder | None = None,
        clock: Callable[[], float] = time.monotonic,
        codec: CodecInfo = OPUS,
        payload_type: int | None = None,
        telephone_event_pt: int | None = None,
    ) -> None:
        """Start sending (20 ms pacing) and playing. ``source=None`` receives only; ``sink=None`` discards.

        ``telephone_event_pt`` is the negotiated RFC 4733 payload type (None: no DTMF either way).

        ``codec`` is the negotiated codec (Opus by default) and ``payload_type`` its RTP payload type in this
        call (default: the one given to bind()); the RTP timestamp advances by the codec's clock per frame.

        ``clock`` gives the ``now`` passed to the protector: the call clock, in seconds, on which the media session
        was created (``time.monotonic`` by default; never wall-clock time, see ratchet/timekeys.py). Raises
        InsecureMediaRefused for a plain protector unless ``allow_insecure``.
        """
        if self._task is not None or self._stopped:
            raise MediaError("a MediaStream starts once")
        if payload_type is None and self.endpoint.payload_type is None:
            raise MediaError("no payload type: bound without one, start() must name the negotiated one")
        if not protector.secure and not allow_insecure:
            raise InsecureMediaRefused(
                "refusing to send or play clear audio: the protector is not secure and the policy is require"
            )
        self._source = source
        self._sink = sink
        self._clock = clock
        if jitter is not None:
            self.jitter = jitter
        self.codec = codec
        self._ts_step = codec.timestamp_step
        self._encoder = encoder or codec.new_encoder()
        self._use_protector(protector)
        if codec is not OPUS:
            self._decoder_made = codec.new_decoder()
        if payload_type is not None:
            self.endpoint.payload_type = payload_type
        if telephone_event_pt is not None:
            self.set_telephone_event(telephone_event_pt)
        self.endpoint.reception.clock_rate = codec.rtp_clock_rate
        if remote is not None:
            self.endpoint.remote = remote
        early, self._early = self._early, []
        for pkt, addr, arrival in early:
            if pkt.payload_type != self.endpoint.payload_type:
                # Held while the payload type was not known yet (bind(payload_type=None)): not ours after all.
                self.stats.frames_received -= 1
                self.endpoint.stats.packets_received -= 1
                self.endpoint.stats.bytes_received -= len(pkt.payload)
                self.endpoint.stats.refuse("payload-type")
                continue
            if self._open(pkt, arrival):
                self.endpoint.confirm_source(addr)
        early_events, self._early_events = self._early_events, []
        for pkt, addr in early_events:
            if self._on_event(pkt, addr):
                self.endpoint.confirm_source(addr)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"media-{self.local[1]}")
        for part in (self._encoder, self._decoder_made):
            # A codec that relays instead of coding (the gateway's pass-through) learns which stream it serves.
            attach = getattr(part, "attach_stream", None)
            if attach is not None:
                attach(self)

    async def stop(self) -> None:
        """Stop the pacing loop, close the sockets, then the source and sink (a WAV recorder writes now)."""
        if self._stopped:
            return
        self._stopped = True
        self._early.clear()
        self._early_events.clear()
        self._sealed_events.clear()
        for task in (self._task, self._dtmf_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._dtmf_task = None
        self._dtmf_pending.clear()
        if self._dtmf_idle is not None:
            self._dtmf_idle.set()
        await self.endpoint.close()
        for closer in (self._source, self._sink):
            if closer is not None:
                closer.close()

    # --- receive path (runs inside datagram_received) ----------------------------------------------------

    def _on_payload(self, pkt: RtpPacket, addr: Address) -> bool:
        if self.inband is not None and self.inband(pkt, addr):
            return False  # a key-exchange packet: never opened, played or latched on
        self.stats.frames_received += 1
        if self.protector is None:
            if len(self._early) < MAX_EARLY_PACKETS and not self._stopped:
                self._early.append((pkt, addr, asyncio.get_running_loop().time()))
            else:
                self.stats.refuse("not-started")
            return False
        return self._open(pkt, None)

    def _open(self, pkt: RtpPacket, arrival: float | None) -> bool:
        """``arrival`` None: now (read only when the jitter buffer needs it: a relay does not, issue 17)."""
        protector = self.protector
        assert protector is not None
        try:
            payload = protector.open(pkt.payload, self._clock())
        except Exception as exc:
            return self._refused(exc)
        self.stats.frames_opened += 1
        if self._sealed is not None:
            for data in self._sealed.take_telephone_events():
                self._on_sealed_event(data)
        if self._relay is not None:
            self._relay(payload)
            return True
        return self._deliver(payload, pkt.sequence, arrival)

    def _deliver(self, payload: bytes, sequence: int, arrival: float | None) -> bool:
        """An opened payload to the jitter buffer or direct playout, in order of its authenticated index."""
        protector = self.protector
        assert protector is not None
        index = protector.last_index
        if index is None:
            if protector.secure:
                # A secure protector without an index: RTP seq is unauthenticated and relay-rewritten.
                index = self._arrival_index
                self._arrival_index += 1
            else:
                # Plain calls have nothing authenticated anyway; RTP seq is the only order there is.
                index = self._unwrap(sequence)
        if self._event_indexes or self._event_base:
            index = self._audio_index(index)
        if self._direct:
            self._play_now(index, payload)
            return True
        self.jitter.put(index, payload, asyncio.get_running_loop().time() if arrival is None else arrival)
        return True

    def play_direct(self) -> None:
        """From now on decode each opened frame as it arrives and write it to the sink at once: no jitter buffer
        and no playout tick (the gateway's transcoding bridge, whose sink sends on the other leg at once: the phone
        at the far end paces and de-jitters, as under pass-through). A frame older than the last one played is
        dropped (counted in ``jitter.stats.late``); a lost one is left to the far end's concealment."""
        self._direct = True
        self._direct_next = None
        self._jitter = None  # what it held would never play

    def _play_now(self, index: int, payload: bytes) -> None:
        if self._direct_next is not None and index < self._direct_next:
            self.jitter.stats.late += 1
            return
        self._direct_next = index + 1
        pcm = self._decode(payload)
        sink = self._sink
        if sink is None:
            return
        try:
            sink.write_frame(pcm)
        except Exception as exc:
            # Runs inside datagram_received: a failing sink costs its frame, never the receive path.
            if self.error is None:
                self.error = exc
                log.exception("direct playout failed; counting such frames as refused")
            self.stats.refuse("sink-error")

    def _audio_index(self, index: int) -> int:
        """Telephone events use numbers of the audio's sequence (frame counter, or RTP seq on plain calls):
        without this the jitter buffer would play each one as a lost frame (a PLC tick per event packet)."""
        return index - self._event_base - bisect.bisect_left(self._event_indexes, index)

    def _note_event_index(self, index: int) -> None:
        bisect.insort(self._event_indexes, index)
        if len(self._event_indexes) > MAX_EVENT_COUNTERS:
            self._event_indexes.pop(0)
            self._event_base += 1

    # --- DTMF (RFC 4733 on plain calls; inside the sealed audio frames on secure ones) ----------------------

    def set_telephone_event(self, payload_type: int | None) -> None:
        """Use ``payload_type`` for telephone events from now on (None: stop sending and accepting them)."""
        if payload_type is not None and not 96 <= payload_type <= 127:
            raise MediaError(f"telephone-event payload type {payload_type} is not dynamic (96-127)")
        self.telephone_event_pt = payload_type
        self.endpoint.event_payload_type = payload_type

    def send_dtmf(self, digits: str, duration_ms: int = DEFAULT_DURATION_MS) -> None:
        """Queue ``digits`` (0-9 * # A-D) to be sent, one after the other, while the audio keeps flowing: as
        RFC 4733 packets on a plain call; on a sealed stream each packet of the same train rides inside the audio
        frame sealed at (or right after) its time, so the wire shows one payload type, size and timestamp step.
        Raises DtmfError for a bad digit or duration (nothing is queued then) and MediaError if the call
        negotiated no telephone-event, has not started, or its protector cannot carry events."""
        digits = check_digits(digits)
        digit_train("0", duration_ms)  # validates the duration before anything is queued
        if self.telephone_event_pt is None:
            raise MediaError("the peer did not negotiate telephone-event")
        protector = self.protector
        if protector is None or self._stopped:
            raise MediaError("the media stream is not running")
        if protector.secure and self._sealed is None:
            raise MediaError("this secure protector cannot seal telephone events")
        if len(self._dtmf_pending) + len(digits) > MAX_PENDING_DTMF:
            raise MediaError(f"more than {MAX_PENDING_DTMF} digits waiting to be sent")
        if not digits:
            return
        self._dtmf_pending.extend((d, duration_ms) for d in digits)
        if self._dtmf_idle is None:
            self._dtmf_idle = asyncio.Event()
        self._dtmf_idle.clear()
        if self._dtmf_task is None or self._dtmf_task.done():
            self._dtmf_task = asyncio.get_running_loop().create_task(self._send_dtmf_loop(), name="dtmf-send")

    async def dtmf_sent(self) -> None:
        """Wait until every queued digit has been sent (or the stream stopped)."""
        if self._dtmf_idle is not None:
            await self._dtmf_idle.wait()

    def _event_timestamp(self, duration_ms: int) -> int:
        """The event's RTP timestamp: the audio's current one, but never reusing the previous event's (a stream
        with no audio source does not advance its timestamp, and receivers tell presses apart by it)."""
        ts = self.endpoint.timestamp
        if self._last_event is not None:
            last, span = self._last_event
            if (ts - last) & 0xFFFFFFFF < span:
                ts = (last + span) & 0xFFFFFFFF
        self._last_event = (ts, max(1, (duration_ms + GAP_MS) * CLOCK_RATE // 1000))
        return ts

    async def _send_dtmf_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._dtmf_pending:
                digit, duration_ms = self._dtmf_pending.pop(0)
                ts = self._event_timestamp(duration_ms)
                start = loop.time()
                sent = 0
                train = digit_train(digit, duration_ms)
                for i, pkt in enumerate(train):
                    await asyncio.sleep(max(0.0, start + pkt.offset_ms / 1000 - loop.time()))
                    if self._sealed is not None and self.protector is self._sealed:
                        self._queue_sealed_event(encode_sealed(ts, pkt.event), last=i == len(train) - 1)
                    else:
                        sent += self._send_event(pkt.event, ts, pkt.marker)
                while self._sealed_events and not self._stopped:
                    # Each rides on the next sealed frame: the pacing loop's, or a pass-through relay's.
                    await asyncio.sleep(FRAME_SECONDS)
                if sent:
                    self.stats.dtmf_out += 1
                await asyncio.sleep(GAP_MS / 1000)
        finally:
            if not self._dtmf_pending and self._dtmf_idle is not None:
                self._dtmf_idle.set()

    def _send_event(self, event: TelephoneEvent, ts: int, marker: bool) -> bool:
        """One clear RFC 4733 packet (plain calls only: a secure protector never sends events in the clear)."""
        protector, pt = self.protector, self.telephone_event_pt
        if protector is None or pt is None or protector.secure:
            return False
        return self.endpoint.send_event(event.encode(), payload_type=pt, timestamp=ts, marker=marker)

    def _queue_sealed_event(self, data: bytes, *, last: bool) -> None:
        if len(self._sealed_events) >= MAX_QUEUED_EVENTS:  # nothing is sending frames (a stalled loop)
            self._sealed_events.pop(0)
            self.stats.refuse("dtmf-queue-full")
        self._sealed_events.append((data, last))
        if self._source is None or self._source_done:
            # A stream with nothing to say sends no frames: this event needs one (silence, of the usual size).
            self._send(pcm=np.zeros(FRAME_SAMPLES, dtype=np.int16))

    def _on_sealed_event(self, data: bytes) -> None:
        """One authenticated TELEPHONE_EVENT from an opened frame: repeats of a press are dropped by event id."""
        try:
            event_id, event = decode_sealed(data)
            self.stats.events_received += 1
            digit = self._dtmf_rx.feed(event_id, event)
        except DtmfError as exc:
            self.stats.refuse(exc.reason)
            return
        if digit is not None:
            self._deliver_digit(digit)

    def _on_event(self, pkt: RtpPacket, addr: Address) -> bool:
        """A telephone-event packet (runs inside datagram_received). True if it authenticated (latching).

        Plain calls only: a sealed stream's events ride inside its audio frames, so a packet with the
        telephone-event payload type on one is forged or relabelled: refused, and it changes nothing."""
        protector = self.protector
        if protector is None:
            # The answerer's first digits can beat its 200 OK to us, like its first audio frames.
            if len(self._early_events) < MAX_EARLY_PACKETS and not self._stopped:
                self._early_events.append((pkt, addr))
            else:
                self.stats.refuse("not-started")
            return False
        if protector.secure:
            self.stats.refuse("event-pt-on-secure-stream")
            return False
        try:
            self._note_event_index(self._unwrap(pkt.sequence))
            event_id, event = pkt.timestamp, TelephoneEvent.decode(pkt.payload)
            self.stats.events_received += 1
            digit = self._dtmf_rx.feed(event_id, event)
        except DtmfError as exc:
            self.stats.refuse(exc.reason)
            return False
        if digit is not None:
            self._deliver_digit(digit)
        return False  # clear and unauthenticated: never moves the stream

    def _deliver_digit(self, digit: str) -> None:
        self.stats.dtmf_in += 1
        if self.dtmf.full():
            # Nobody is reading the queue (on_dtmf users need not): keep the newest digits, count the loss.
            self.dtmf.get_nowait()
            self.stats.refuse("dtmf-queue-full")
        self.dtmf.put_nowait(digit)
        if self.on_dtmf is not None:
            try:
                self.on_dtmf(digit)
            except Exception:
                log.exception("on_dtmf callback failed")

    # --- pacing loop --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        try:
            while True:
                now = loop.time()
                # A tick that runs a frame late was stalled: what the other leg sent meanwhile is still queued.
                self._tick_late = now - (start + tick * FRAME_SECONDS) > FRAME_SECONDS
                self._tick(now)
                tick += 1
                now = loop.time()
                behind = int((now - start) / FRAME_SECONDS) - tick
                if behind > MAX_LATE_TICKS:
                    tick += behind
                    self.stats.ticks_skipped += behind
                # Sleep until the absolute deadline so scheduling error never accumulates into drift.
                await asyncio.sleep(max(0.0, start + tick * FRAME_SECONDS - loop.time()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = exc
            log.exception("media loop failed")

    def _tick(self, now: float) -> None:
        self._send_one()
        if self._direct or self.relay is not None:
            # The receive path played (or relayed) each frame as it came; a pass-through receiver writing
            # silence here filled a pipe nobody reads (5 frames each way: 10 KB a call, issue 17).
            return
        pcm = self._play_one(now)
        if self._sink is not None:
            self._sink.write_frame(pcm)

    def _send_one(self) -> None:
        if self._source is None or self._source_done:
            return
        pcm = self._source.read_frame()
        if pcm is None:
            self._source_finished(True)
            return
        if pcm is SKIP_TICK:
            if self._tick_late or self._clock() - self._sent_at < FILL_AFTER_S:
                # Never after a stall (queued frames follow): it added frames under overload (bench churn).
                return
            pcm = _SILENCE
        self._send(pcm=pcm)

    def send_pcm(self, pcm: Pcm) -> bool:
        """Encode, seal and send one frame now (the other leg's direct playout, see ``play_direct``)."""
        if self.protector is None or self._stopped:
            return False
        return self._send(pcm=pcm)

    def _send(self, *, pcm: Pcm | None = None, payload: bytes | None = None) -> bool:
        """Seal and send one frame: ``payload`` as it is, or ``pcm`` encoded to what control data leaves free.
        One ``now`` for the budget and the seal, so the control data asked about is the control data sealed."""
        protector = self.protector
        assert protector is not None
        now = self._clock()
        sealed = self._sealed
        event: bytes | None = None
        last = False
        if sealed is not None and self._sealed_events:
            event, last = self._sealed_events[0]
        try:
            if payload is None:
                assert pcm is not None
                payload = self._encode(pcm, now, event is not None)
            if sealed is None:
                frame = protector.seal(payload, now)
            else:
                if self._payload_size is None:
                    # A codec of constant size (G.711, G.722): its frame plus room for the most control data.
                    self.set_payload_size(len(payload) + MAX_CONTROL_BYTES)
                frame = sealed.seal(payload, now, event=event)
        except RatchetError:
            self.stats.seal_errors += 1
            return False
        if event is not None:
            self._sealed_events.pop(0)
            if last:
                self.stats.dtmf_out += 1
        # The marker bit flags the start of a talkspurt (RFC 3551 §4.1): our first frame.
        if self.endpoint.send(frame, marker=self._first_send, samples=self._ts_step):
            self.stats.frames_sent += 1
            self._first_send = False
            self._sent_at = now
            return True
        return False

    def _encode(self, pcm: Pcm, now: float, event: bool) -> bytes:
        encoder = self._encoder
        assert encoder is not None
        sealed, p = self._sealed, self._payload_size
        if sealed is None or p is None or not self._budgeted:
            return encoder.encode(pcm)
        # _budgeted is set only after _use_protector's isinstance check on this encoder (start() sets both; the
        # encoder is never swapped after): a runtime Protocol check here cost 14 us on every sealed frame.
        encoder = cast(BudgetEncoder, encoder)
        budget = min(MAX_PACKET, p - sealed.control_size(now, event=event))
        if budget < MIN_BUDGET:
            # Too few bytes for useful audio: an empty frame, which the peer conceals. The encoder still runs
            # (on a 1-byte budget) so its state follows the speech.
            encoder.encode(pcm, max_bytes=1)
            return b""
        return encoder.encode(pcm, max_bytes=budget)

    def set_payload_size(self, p: int | None, *, bucket: int = 32) -> None:
        """Seal every frame with ``p`` bytes of control + content from now on (``p + k * bucket`` when more must
        fit); a no-op on a stream that does not make equal frames. The gateway's pass-through sets a small ``p``
        and a coarse bucket, since it cannot shrink the phone's packets."""
        if self._sealed is None:
            return
        self._payload_size = p
        self._bucket = bucket
        self._budgeted = False
        self._sealed.set_payload_size(p, bucket=bucket)

    def _use_protector(self, protector: FrameProtector) -> None:
        """Seal with ``protector`` from now on; a sealed stream switches its encoder to CBR and fixes the size."""
        self.protector = protector
        self._sealed = protector if protector.secure and isinstance(protector, SealedStream) else None
        self._payload_size = None
        self._budgeted = False
        if self._sealed is None:
            return
        encoder = self._encoder
        if isinstance(encoder, BudgetEncoder):
            encoder.use_cbr()
            size = encoder.packet_bytes
            if size is not None:
                self.set_payload_size(size)
                self._budgeted = True

    def switch(self, protector: FrameProtector, remote: Address) -> None:
        """Another early dialog of a forked INVITE won: seal and open with its keys, send to its address. What the
        jitter buffer holds was the other fork's audio: dropped."""
        if not protector.secure and self.protector is not None and self.protector.secure:
            raise InsecureMediaRefused("a sealed stream never switches to clear audio")
        bucket = self._bucket
        p = self._payload_size if not self._budgeted else None
        self._use_protector(protector)
        if p is not None:  # a size set from outside (pass-through) holds for the new keys too
            self.set_payload_size(p, bucket=bucket)
        self.endpoint.remote = remote
        self._jitter = None
        self._unwrap = SeqUnwrapper()  # the winner numbers its packets from its own random start
        self._first_send = True

    def attach(self, source: AudioSource | None, sink: AudioSink | None) -> None:
        """Swap the source and sink of a running stream (a callee's early dialog sends silence and plays nothing;
        answering attaches the microphone and the speaker). The old ones are the caller's to close."""
        self._source = source
        self._sink = sink
        self._source_finished(False)

    def stop_pacing(self) -> None:
        """End the 20 ms loop: from now on frames leave only through send_payload and nothing is played (a
        pass-through leg, whose frames are paced by the phone at the other end). ``stop()`` is still needed."""
        if self._task is not None:
            self._task.cancel()
        self._jitter = None  # nothing is played from now on

    def _play_one(self, now: float) -> Pcm:
        payload = self.jitter.pop(now)
        if payload is not None and (payload or self._heard):
            return self._decode(payload)
        self._gap += 1
        if self._heard and self._gap <= MAX_CONCEAL_TICKS:
            self.stats.frames_concealed += 1
            return self._decoder.decode(None)
        self.stats.frames_silent += 1
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def _decode(self, payload: bytes) -> Pcm:
        """One opened frame to PCM, counted (an empty one, all of whose budget went to control data, is concealed
        like a loss once audio was heard)."""
        if not payload:
            if not self._heard:
                self.stats.frames_silent += 1
                return _SILENCE
            self.stats.frames_concealed += 1
            return self._decoder.decode(None)
        failed_before = self._decoder.failed
        pcm = self._decoder.decode(payload)
        if self._decoder.failed != failed_before:
            self.stats.decode_failures += 1
            self.stats.frames_silent += 1
        else:
            self._heard = True
            self._gap = 0
            self.stats.frames_played += 1
        return pcm
