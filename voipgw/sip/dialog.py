"""SIP dialogs: the asyncio-side handles (SipCall, OutgoingCall, IncomingCall) and their reactor-side CallCore.

A handle never touches sippy: its actions are posted to the reactor thread, and the CallCore (which owns the
sippy UA) delivers typed events back to the loop. Phases change only through ``voipgw.sip.phase``. Reaches the
stack only through the ``Reactor`` protocol, never by importing it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sippy.CCEvents import (
    CCEventConnect,
    CCEventDisconnect,
    CCEventFail,
    CCEventPreConnect,
    CCEventRedirect,
    CCEventRing,
    CCEventUpdate,
)
from sippy.MsgBody import MsgBody
from sippy.SipHeader import SipHeader
from sippy.SipReason import SipReason
from sippy.SipWarning import SipWarning

from voipgw.sip.events import (
    TERMINAL_EVENTS,
    Answered,
    Confirmed,
    Ended,
    Failed,
    ReAnswered,
    ReOffer,
    ReOfferRejected,
    Ringing,
    SipEvent,
    Trying,
)
from voipgw.sip.phase import DialogEvent, DialogPhase, advance
from voipgw.sip.reactor import Reactor
from voipgw.sip.zone import Zone

log = logging.getLogger("voipgw.sip")

ReOfferHandler = Callable[[str], str | None]


class SipCall:
    """One dialog as seen from asyncio: an event stream plus the actions that fit it. Methods never block."""

    def __init__(self, reactor: Reactor, call_id: str, outgoing: bool) -> None:
        self._reactor = reactor
        self.call_id = call_id
        self.outgoing = outgoing
        self.events: asyncio.Queue[SipEvent] = asyncio.Queue()
        self.reoffer_handler: ReOfferHandler | None = None
        """Called (in asyncio) with a peer's re-INVITE SDP; returns our answer SDP, or None for a 488."""
        self.finished = False
        self._core: CallCore | None = None

    async def next_event(self, timeout: float | None = None) -> SipEvent:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def __aiter__(self) -> AsyncIterator[SipEvent]:
        while True:
            ev = await self.events.get()
            yield ev
            if isinstance(ev, TERMINAL_EVENTS):
                return

    def _push(self, ev: SipEvent) -> None:
        if isinstance(ev, TERMINAL_EVENTS):
            self.finished = True
        self.events.put_nowait(ev)

    def _handle_reoffer(self, sdp: str) -> None:
        answer: str | None = None
        if self.reoffer_handler is not None:
            try:
                answer = self.reoffer_handler(sdp)
            except Exception:
                log.exception("re-offer handler failed for call %s; refusing with 488", self.call_id)
                answer = None
        self._push(ReOffer(remote_sdp=sdp, answered=answer is not None))
        self._act("reply_reoffer", answer)

    def _act(self, name: str, *args: Any) -> None:
        # Actions on a finished call are no-ops: cleanup code may hang up unconditionally, even after stop().
        if self.finished:
            return
        self._reactor.post(self._core_call, name, *args)

    def _core_call(self, name: str, *args: Any) -> None:
        core = self._core
        if core is not None:
            getattr(core, name)(*args)

    def hangup(self, why: str | None = None) -> None:
        """BYE if established, CANCEL (caller) or 487 (callee) while ringing; then Ended(by_remote=False).

        ``why`` goes into the BYE as an RFC 3326 ``Reason: SIP;cause=488;text="..."`` header, so the peer can
        show the user why (voipgw shows it; other phones log it)."""
        self._act("hangup", "local hangup", why)

    def reoffer(self, sdp: str) -> None:
        """Send a re-INVITE with ``sdp``; ReAnswered or ReOfferRejected follows."""
        self._act("reoffer", sdp)


class OutgoingCall(SipCall):
    """A call we placed with ``SipStack.place_call``."""

    def cancel(self) -> None:
        """CANCEL while not yet answered; a no-op once answered (use ``hangup``)."""
        self._act("cancel")


class IncomingCall(SipCall):
    """An INVITE we received; answer, reject or let it ring."""

    def __init__(
        self,
        reactor: Reactor,
        call_id: str,
        from_aor: str,
        to_aor: str,
        from_display: str | None,
        remote_sdp: str | None,
        source_addr: tuple[str, int],
        authenticated_user: str | None = None,
        transport: str = "udp",
        zone: Zone = Zone.OUTSIDE,
    ) -> None:
        super().__init__(reactor, call_id, outgoing=False)
        self.from_aor = from_aor
        self.to_aor = to_aor
        self.from_display = from_display
        self.remote_sdp = remote_sdp
        self.source_addr = source_addr
        self.authenticated_user = authenticated_user
        """The user whose digest credentials this INVITE carried (``authenticate_invites``), else None."""
        self.transport = transport
        """What the INVITE arrived over ("udp", "tcp" or "tls"): SDES keys in its SDP are secret only over TLS."""
        self.zone = zone
        """The listener it arrived on: the inside zone's (phones) or the outside zone's (the PBX)."""

    def ring(self, sdp: str | None = None) -> None:
        """Send 180 Ringing, or with ``sdp`` 183 Session Progress carrying it (early media; not reliable,
        RFC 3262 is not used). The 200 answer may then carry the same or another SDP."""
        self._act("ring", sdp)

    def answer(self, answer_sdp: str) -> None:
        """Send 200 OK with ``answer_sdp`` (byte for byte); Confirmed follows when the ACK arrives."""
        self._act("answer", answer_sdp)

    def reject(self, code: int, reason: str, warning: str | None = None) -> None:
        """Final error response; ``warning`` becomes ``Warning: 399 <our host> "<text>"`` (RFC 3261 20.43)."""
        if not 300 <= code <= 699:
            raise ValueError(f"reject code must be 3xx-6xx, not {code}")
        self._act("reject", code, reason, warning)

    def __repr__(self) -> str:
        return f"IncomingCall({self.call_id!r}, from={self.from_aor!r}, to={self.to_aor!r})"


# --- reactor-side state -------------------------------------------------------------------------------------


@dataclass(eq=False)
class CallCore:
    """Reactor-thread companion of a SipCall: owns the sippy UA and decides which events asyncio sees."""

    reactor: Reactor
    call: SipCall
    ua: Any = None
    phase: DialogPhase = DialogPhase.SETUP
    """Changed only by ``_move`` (the table in voipgw.sip.phase)."""
    reoffer_pending: bool = False
    timer: Any = None

    def __post_init__(self) -> None:
        self.call._core = self

    def _move(self, event: DialogEvent) -> None:
        self.phase = advance(self.phase, event)

    def emit(self, ev: SipEvent) -> None:
        if self.phase is DialogPhase.ENDED:
            return
        if isinstance(ev, TERMINAL_EVENTS):
            self._move(DialogEvent.TERMINATED)
            self._cancel_timer()
            self.reactor.dialog_ended(self)
        self.reactor.deliver(self.call._push, ev)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # sippy -> us
    def on_event(self, event: Any) -> None:
        if isinstance(event, CCEventRing):
            code, _reason, body = (*event.getData(), None, None, None)[:3]
            if code == 100:
                self.emit(Trying())
            elif code is not None:
                self.emit(Ringing(code=code, remote_sdp=None if body is None else str(body)))
        elif isinstance(event, CCEventConnect):
            body = event.getData()[2]
            if self.reoffer_pending:
                self.reoffer_pending = False
                self.emit(ReAnswered(remote_sdp="" if body is None else str(body)))
            elif self.call.outgoing and self.phase is DialogPhase.SETUP:
                self._move(DialogEvent.ANSWERED)
                self._cancel_timer()
                self.emit(Answered(remote_sdp="" if body is None else str(body)))
            elif not self.call.outgoing and self.phase is DialogPhase.ANSWERING:
                self._move(DialogEvent.ACKNOWLEDGED)
                self.emit(Confirmed())
        elif isinstance(event, CCEventRedirect):
            # We do not follow 3xx (the target would bypass the identity the handshake binds); report it.
            data = (*event.getData(), None, None)
            self.emit(Failed(code=int(data[0] or 300), reason=str(data[1] or "Redirect"), warning=None))
        elif isinstance(event, CCEventFail):
            data = (*event.getData(), None, None)
            code, reason = int(data[0] or 500), str(data[1] or "")
            if self.reoffer_pending:
                self.reoffer_pending = False
                self.emit(ReOfferRejected(code=code, reason=reason))
                if self.ua is not None and self.ua.isDead():
                    self.emit(Ended(reason=f"re-INVITE failed: {code} {reason}", by_remote=True))
            elif self.phase in (DialogPhase.SETUP, DialogPhase.ANSWERING):
                self.emit(Failed(code=code, reason=reason, warning=self.ua.last_warning if self.ua else None))
            else:
                self.emit(Ended(reason=f"{code} {reason}", by_remote=True))
        elif isinstance(event, CCEventDisconnect):
            if self.phase in (DialogPhase.SETUP, DialogPhase.ANSWERING):
                self.emit(Ended(reason="cancelled by caller", by_remote=True))
            else:
                why = _reason_text(event)
                self.emit(Ended(reason=f"remote hangup: {why}" if why else "remote hangup", by_remote=True))
        elif isinstance(event, CCEventUpdate):
            body = event.getData()
            self.reactor.deliver(self.call._handle_reoffer, "" if body is None else str(body))

    # asyncio -> us
    def reply_reoffer(self, answer: str | None) -> None:
        if self.phase is DialogPhase.ENDED:
            return
        if answer is None:
            self.ua.recvEvent(CCEventFail((488, "Not Acceptable Here")))
        else:
            self.ua.recvEvent(CCEventConnect((200, "OK", MsgBody(answer))))

    def ring(self, sdp: str | None = None) -> None:
        if self.phase is DialogPhase.SETUP and not self.call.outgoing:
            if sdp is None:
                self.ua.recvEvent(CCEventRing((180, "Ringing", None)))
            else:
                self.ua.recvEvent(CCEventRing((183, "Session Progress", MsgBody(sdp))))

    def answer(self, sdp: str) -> None:
        if self.phase is not DialogPhase.SETUP or self.call.outgoing:
            log.warning("answer() ignored for call %s in phase %s", self.call.call_id, self.phase.value)
            return
        self._move(DialogEvent.ANSWER_SENT)
        self.ua.recvEvent(CCEventPreConnect((200, "OK", MsgBody(sdp))))

    def reject(self, code: int, reason: str, warning: str | None) -> None:
        if self.phase is not DialogPhase.SETUP or self.call.outgoing:
            return
        ev = CCEventFail((code, reason))
        if warning is not None:
            w = SipWarning(code=399, text=warning)
            w.agent = self.reactor.local_host
            ev.warning = SipHeader(body=w)
        self.ua.recvEvent(ev)
        self.emit(Ended(reason=f"rejected: {code} {reason}", by_remote=False))

    def cancel(self) -> None:
        if self.phase is DialogPhase.SETUP and self.call.outgoing:
            self.hangup("cancelled")

    def reoffer(self, sdp: str) -> None:
        if self.phase is not DialogPhase.UP or self.reoffer_pending:
            self.reactor.deliver(self.call._push, ReOfferRejected(code=491, reason="not in a stable dialog"))
            return
        self.reoffer_pending = True
        self.ua.recvEvent(CCEventUpdate(MsgBody(sdp)))

    def hangup(self, reason: str, why: str | None = None) -> None:
        if self.phase is DialogPhase.ENDED:
            return
        if self.phase is DialogPhase.SETUP and not self.call.outgoing:
            self.ua.recvEvent(CCEventFail((487, "Request Terminated")))
        else:
            ev = CCEventDisconnect()
            if why:
                text = "".join(ch for ch in why if ch.isprintable() and ch not in '"\\')[:200]
                ev.reason_rfc3326 = SipReason(protocol="SIP", cause=488, reason=text)
            self.ua.recvEvent(ev)
        self.emit(Ended(reason=reason, by_remote=False))

    def no_answer(self) -> None:
        self.timer = None
        if self.phase is DialogPhase.SETUP:
            self.ua.recvEvent(CCEventDisconnect())
            self.emit(Failed(code=408, reason="No answer", warning=None))


def _reason_text(event: Any) -> str | None:
    """The text of an RFC 3326 Reason header on a received BYE, if any (best effort: peers vary)."""
    reason = getattr(event, "reason_rfc3326", None)
    if reason is None:
        return None
    try:
        if not reason.parsed:
            reason.parse()
        return str(reason.reason) if reason.reason else None
    except Exception:
        return None
