"""The web phone's audio: the browser's WebRTC leg (aiortc: ICE, DTLS-SRTP, Opus) relayed to and from a plain
RTP leg (PCMU, 20 ms, RFC 4733 digits) toward the gateway's inside RTP address, as any inside phone's. Audio
crosses as 48 kHz PCM (the codecs' frame): Opus from the browser is decoded by aiortc and resampled here, and
the gateway's PCMU is decoded to frames aiortc encodes to Opus for the browser.

No STUN or TURN server is configured: the peer connection gathers host candidates only, so the browser's audio
reaches nothing but the gateway process.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import secrets
import time
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from voipgw.audio.codecs import get_codec
from voipgw.rtp.packet import PacketError, build_rtp, parse_rtp

log = logging.getLogger(__name__)
# aioice logs every ICE candidate pair check at INFO: a dozen lines per call in the gateway's log, none an
# operator acts on. Its warnings still show.
logging.getLogger("aioice").setLevel(logging.WARNING)

RATE = 48000
FRAME = 960
"""Samples per 20 ms frame at 48 kHz (the codecs' PCM frame)."""
PCMU_PT = 0
EVENT_PT = 101
QUEUE_FRAMES = 10
"""Gateway audio waiting for the browser (200 ms): older frames are dropped, never delayed further."""
DTMF_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}


class RtpLeg(asyncio.DatagramProtocol):
    """The plain RTP leg to the gateway: ``send_pcm`` one frame, ``send_digit``; frames received from the gateway
    go to ``received`` (a bounded queue). Datagrams from anywhere but the gateway's RTP address are dropped."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.remote: tuple[str, int] | None = None
        self.received: asyncio.Queue[np.ndarray[Any, Any]] = asyncio.Queue(QUEUE_FRAMES)
        self._encoder = get_codec("PCMU").new_encoder()
        self._decoder = get_codec("PCMU").new_decoder()
        self._transport: asyncio.DatagramTransport | None = None
        self._seq = secrets.randbelow(1 << 16)
        self._ts = secrets.randbelow(1 << 32)
        self._ssrc = secrets.randbelow(1 << 32)
        self.sent = 0
        self.frames_in = 0
        self.dropped = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, 0))
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def sdp(self, session_id: int) -> str:
        h = self.host
        return (
            f"v=0\r\no=voipgw-web {session_id} 1 IN IP4 {h}\r\ns=-\r\nc=IN IP4 {h}\r\nt=0 0\r\n"
            f"m=audio {self.port} RTP/AVP {PCMU_PT} {EVENT_PT}\r\na=rtpmap:{PCMU_PT} PCMU/8000\r\n"
            f"a=rtpmap:{EVENT_PT} telephone-event/8000\r\na=fmtp:{EVENT_PT} 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
        )

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        if self.remote is None or (str(addr[0]), int(addr[1])) != self.remote:
            self.dropped += 1
            return
        try:
            pkt = parse_rtp(data)
        except PacketError:
            self.dropped += 1
            return
        if pkt.payload_type != PCMU_PT:
            return
        self.frames_in += 1
        pcm = self._decoder.decode(pkt.payload)
        if self.received.full():
            self.received.get_nowait()
        self.received.put_nowait(pcm)

    def _packet(self, pt: int, payload: bytes, marker: bool = False, ts: int | None = None) -> None:
        if self._transport is None or self.remote is None:
            return
        self._seq = (self._seq + 1) & 0xFFFF
        stamp = self._ts if ts is None else ts
        self._transport.sendto(build_rtp(pt, self._seq, stamp, self._ssrc, payload, marker=marker), self.remote)

    def send_pcm(self, pcm: np.ndarray[Any, Any]) -> None:
        self._packet(PCMU_PT, self._encoder.encode(pcm))
        self._ts = (self._ts + 160) & 0xFFFFFFFF
        self.sent += 1

    def send_digit(self, digit: str) -> None:
        """One RFC 4733 event (100 ms, end sent three times), on the audio clock."""
        code, start = DTMF_CODES[digit], self._ts
        for i, dur in enumerate((160, 320, 480, 800, 800, 800)):
            end = 0x80 if i >= 3 else 0
            self._packet(EVENT_PT, bytes([code, end | 10]) + dur.to_bytes(2, "big"), marker=i == 0, ts=start)
        self._ts = (self._ts + 800) & 0xFFFFFFFF


class GatewayTrack(MediaStreamTrack):
    """The gateway's audio for the browser: a frame every 20 ms, silence when none arrived."""

    kind = "audio"

    def __init__(self, leg: RtpLeg) -> None:
        super().__init__()
        self.leg = leg
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME
            wait = self._start + self._pts / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        try:
            pcm = self.leg.received.get_nowait()
        except asyncio.QueueEmpty:
            pcm = np.zeros(FRAME, dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


class WebRtcLeg:
    """The browser's peer connection: ``await answer(offer_sdp)`` -> our answer SDP; the browser's audio is relayed
    to ``leg`` as it arrives; ``await close()``."""

    def __init__(self, leg: RtpLeg) -> None:
        self.leg = leg
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(GatewayTrack(leg))
        self.frames_from_browser = 0
        self._relay: asyncio.Task[None] | None = None

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and self._relay is None:
                self._relay = asyncio.ensure_future(self._to_gateway(track))

    async def answer(self, offer_sdp: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    async def _to_gateway(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        pending = np.zeros(0, dtype=np.int16)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            for out in resampler.resample(frame):
                pending = np.concatenate([pending, out.to_ndarray().reshape(-1).astype(np.int16)])
            while len(pending) >= FRAME:
                self.leg.send_pcm(pending[:FRAME])
                self.frames_from_browser += 1
                pending = pending[FRAME:]

    async def close(self) -> None:
        if self._relay is not None:
            self._relay.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._relay
        await self.pc.close()
