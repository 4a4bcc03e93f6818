"""One web phone call: the page's WebRTC leg (``media.py``), its RTP leg and SIP dialog to the gateway's own
inside listener (``sipua.py``), and what the page is shown, read from the gateway's bridge for that dialog
(security, label, SAS and its words, safety number, the ``*1``/``*0`` outcome).

Why a SIP dialog to ourselves rather than a hook into the B2BUA: the browser then IS an inside phone, so every
rule the gateway applies to phones (policy, refusals with their reasons, labels, the announcement, the SAS keys)
applies to it unchanged, and the B2BUA needs no second kind of inside leg. The cost is one local UDP hop and a
PCMU transcode, both inside the gateway host.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from voipgw.sdp import SdpError, parse_sdp
from voipgw.web.media import RtpLeg, WebRtcLeg
from voipgw.web.sipua import CallOutcome, Dialog, WebUa

log = logging.getLogger(__name__)

POLL_S = 0.25
"""How often the bridge's state is read for the page while a call is up."""

BridgeView = Callable[[str], Awaitable[dict[str, Any] | None]]
"""Inside Call-ID -> what the page shows of that call's bridge (None: no such bridge, or over)."""


class Phase(enum.Enum):
    CALLING = "calling"
    RINGING = "ringing"
    ESTABLISHED = "established"
    ENDED = "ended"


@dataclass(frozen=True)
class WebLink:
    """How the web phone reaches its gateway: its inside SIP address, where to bind RTP, its bridges, and each
    user's contacts and recent calls (``directory``)."""

    sip: tuple[str, int]
    rtp_host: str
    view: BridgeView
    directory: Callable[[str, str | None], Awaitable[dict[str, Any]]]


class WebCall:
    """``answer_sdp = await start(offer)``, then ``await run()`` until the call is over; ``hangup()``,
    ``sas(matches)``. ``push`` gets each new state for the page (the ``call`` of a ``state`` frame)."""

    def __init__(
        self,
        link: WebLink,
        user: str,
        password: str,
        to: str,
        push: Callable[[dict[str, Any]], Awaitable[None]],
        ringing: tuple[WebUa, Dialog] | None = None,
    ) -> None:
        """``ringing``: an incoming call, the user's line and the gateway's INVITE on it (``to`` is the caller)."""
        self.link = link
        self.to = to
        self.push = push
        self.phase = Phase.RINGING if ringing is not None else Phase.CALLING
        self.reason = ""
        self.rtp = RtpLeg(link.rtp_host)
        self.webrtc: WebRtcLeg | None = None
        self.incoming = ringing[1] if ringing is not None else None
        self.ua = ringing[0] if ringing is not None else WebUa(link.sip, user, password, link.sip[0])
        self._answered = asyncio.Event()
        self.display = ""
        if self.incoming is not None and self.incoming.invite is not None:
            # The label the gateway rings a phone with ("[NEW sas] bob"): the page shows it while it rings.
            frm = self.incoming.invite.get("from")
            self.display = frm.split("<", 1)[0].strip().strip('"') if "<" in frm else ""
        self._shown: dict[str, Any] | None = None
        self._hangup = asyncio.Event()
        self._pending: set[asyncio.Future[None]] = set()

    async def start(self, offer_sdp: str) -> str:
        await self.rtp.open()
        if self.incoming is None:
            await self.ua.open()
        self.webrtc = WebRtcLeg(self.rtp)
        return await self.webrtc.answer(offer_sdp)

    async def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"remote": self.to, "state": self.phase.value, "reason": self.reason}
        if self.incoming is not None:
            out.update(incoming=True, ringing=self.phase is Phase.RINGING, display=self.display)
        d = self.ua.dialog
        bridge = await self.link.view(d.call_id) if d is not None and self.phase is Phase.ESTABLISHED else None
        if bridge is not None:
            out.update(bridge)
        return out

    async def _update(self) -> None:
        now = await self.view()
        if now != self._shown:
            self._shown = now
            await self.push(now)

    async def run(self) -> None:
        try:
            await (self._run() if self.incoming is None else self._run_incoming())
        finally:
            self.phase = Phase.ENDED
            await self.close()
            with contextlib.suppress(Exception):
                await self._update()

    async def _run(self) -> None:
        def progress(code: int) -> None:
            if code >= 180 and self.phase is Phase.CALLING:
                self.phase = Phase.RINGING
                self._pending.add(asyncio.ensure_future(self._update()))

        self.ua.on_progress = progress
        await self._update()
        placing = asyncio.ensure_future(self.ua.call(self.to, self.rtp.sdp(secrets.randbelow(1 << 31))))
        hangup = asyncio.ensure_future(self._hangup.wait())
        await asyncio.wait({placing, hangup}, return_when=asyncio.FIRST_COMPLETED)
        if not placing.done():
            while not placing.done():  # CANCEL until the gateway answers it (487) or the call was answered
                self.ua.cancel()
                await asyncio.wait({placing}, timeout=1.0)
        outcome, code, warning = await placing
        if outcome is not CallOutcome.ANSWERED:
            hangup.cancel()
            self.reason = {CallOutcome.REFUSED: f"{code} {warning}", CallOutcome.CANCELLED: "cancelled"}.get(
                outcome, warning
            )
            return
        try:
            remote = parse_sdp(self.ua.dialog.remote_sdp if self.ua.dialog is not None else "")
        except SdpError as exc:
            hangup.cancel()
            self.reason = f"unusable answer from the gateway: {exc}"
            await self.ua.hangup()
            return
        self.rtp.remote = (remote.host, remote.port)
        await self._established(hangup)

    async def _run_incoming(self) -> None:
        d = self.incoming
        assert d is not None
        await self._update()
        answered = asyncio.ensure_future(self._answered.wait())
        hangup = asyncio.ensure_future(self._hangup.wait())
        ended = asyncio.ensure_future(d.ended.wait())
        await asyncio.wait({answered, hangup, ended}, return_when=asyncio.FIRST_COMPLETED)
        answered.cancel()
        ended.cancel()
        if d.ended.is_set() or not self._answered.is_set():
            hangup.cancel()
            if not d.ended.is_set():
                self.ua.reject(d, 603, "Decline")
            self.reason = d.end_reason or "declined"
            return
        try:
            remote = parse_sdp(d.remote_sdp)
        except SdpError as exc:
            hangup.cancel()
            self.ua.reject(d, 488, "Not Acceptable Here")
            self.reason = f"unusable offer from the gateway: {exc}"
            return
        self.rtp.remote = (remote.host, remote.port)
        if not await self.ua.accept(d, self.rtp.sdp(secrets.randbelow(1 << 31))):
            hangup.cancel()
            self.reason = d.end_reason or "the gateway did not confirm the answer"
            return
        await self._established(hangup)

    def answer(self) -> None:
        """The page answered (its WebRTC leg is up: ``start`` ran)."""
        self._answered.set()

    async def _established(self, hangup: asyncio.Task[Literal[True]]) -> None:
        self.phase = Phase.ESTABLISHED
        assert self.ua.dialog is not None
        ended = asyncio.ensure_future(self.ua.dialog.ended.wait())
        while not ended.done() and not hangup.done():
            await self._update()
            await asyncio.wait({ended, hangup}, timeout=POLL_S)
        if hangup.done() and not ended.done():
            self.reason = "hung up"
            await self.ua.hangup()
        else:
            self.reason = self.ua.dialog.end_reason
        ended.cancel()
        hangup.cancel()

    def hangup(self) -> None:
        self._hangup.set()

    def sas(self, matches: bool) -> None:
        """The page's "SAS matches" / "does not match": the phone's ``*1`` / ``*0`` to the gateway."""
        if self.phase is Phase.ESTABLISHED:
            self.rtp.send_digit("*")
            self.rtp.send_digit("1" if matches else "0")

    async def close(self) -> None:
        if self.webrtc is not None:
            await self.webrtc.close()
        self.rtp.close()
        if self.incoming is None:  # the user's line outlives its calls
            self.ua.close()
