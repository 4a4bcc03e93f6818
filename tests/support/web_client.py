"""Test helper: the web phone's page played by aiortc (the WebRTC client) and a websockets client (the page's
JSON protocol, docs/PROTOCOL.md §D.3): log in, dial with a WAV as the microphone, follow the call's state."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole, MediaPlayer, MediaRecorder
from websockets.asyncio.client import ClientConnection, connect

STATE_TIMEOUT_S = 30.0


class WebClient:
    """``async with WebClient(port) as page:`` ``await page.login(user, pw)``, ``await page.dial(to, wav)``,
    ``await page.wait_state(lambda call: ...)``, ``await page.send(type)``."""

    def __init__(self, port: int, record: Path | None = None) -> None:
        """``record``: a WAV file the page's received audio is written to (else it is dropped)."""
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.ws: ClientConnection | None = None
        self.pc: RTCPeerConnection | None = None
        self.player: MediaPlayer | None = None
        self.sink: MediaBlackhole | MediaRecorder = MediaRecorder(str(record)) if record else MediaBlackhole()
        self.frames: list[dict[str, Any]] = []
        """Every frame the gateway sent, in order."""

    async def __aenter__(self) -> WebClient:
        self.ws = await connect(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.player is not None and self.player.audio is not None:
            self.player.audio.stop()
        await self.sink.stop()
        if self.pc is not None:
            await self.pc.close()
        if self.ws is not None:
            await self.ws.close()

    async def recv(self, timeout: float = STATE_TIMEOUT_S) -> dict[str, Any]:
        assert self.ws is not None
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.frames.append(frame)
        return frame

    async def send(self, kind: str, **fields: Any) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps({"type": kind, **fields}))

    async def login(self, user: str, password: str) -> dict[str, Any]:
        await self.send("login", user=user, password=password)
        return await self.recv()

    async def dial(self, to: str, wav: Path) -> dict[str, Any]:
        """Offer audio from ``wav`` and dial ``to``; returns the gateway's ``media`` frame (or its error)."""
        return await self._offer(wav, {"type": "dial", "to": to})

    async def answer(self, wav: Path) -> dict[str, Any]:
        """Answer the ringing call with audio from ``wav``; returns the gateway's ``media`` frame (or its error)."""
        return await self._offer(wav, {"type": "answer"})

    async def _offer(self, wav: Path, message: dict[str, Any]) -> dict[str, Any]:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.player = MediaPlayer(str(wav))
        assert self.player.audio is not None
        self.pc.addTrack(self.player.audio)

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self.sink.addTrack(track)

        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self.send(message["type"], **{k: v for k, v in message.items() if k != "type"},
                        sdp=self.pc.localDescription.sdp)  # fmt: skip
        while True:
            frame = await self.recv()
            if frame["type"] in ("media", "error"):
                break
        if frame["type"] == "media":
            await self.pc.setRemoteDescription(RTCSessionDescription(frame["sdp"], "answer"))
            await self.sink.start()
        return frame

    async def wait_frame(self, kind: str, timeout: float = STATE_TIMEOUT_S) -> dict[str, Any]:
        """The next frame of type ``kind`` (others are kept in ``frames``)."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == kind:
                return frame

    async def wait_state(self, want: Any, timeout: float = STATE_TIMEOUT_S) -> dict[str, Any]:
        """The first ``state`` frame whose call satisfies ``want(call)``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no such state; frames: {self.frames[-5:]}")
            frame = await self.recv(left)
            if frame["type"] == "state" and frame["call"] is not None and want(frame["call"]):
                return dict(frame["call"])
