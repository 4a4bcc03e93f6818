"""SIP dialogs: the asyncio-side handles (SipCall, OutgoingCall, IncomingCall) and their reactor-side CallCore.

A handle never touches sippy: its actions are posted to the reactor thread, and the CallCore (which owns the
sippy UA) delivers typed events back to the loop. Phases change only through ``voipgw.sip.phase``. Reaches the
stack only through the ``Reactor`` protocol, never by importing it.

Early dialogs
-------------
The callee's ``progress(sdp)`` sends ``183 Session Progress`` with the SDP answer and sends the same 183 again
(same To-tag, same bytes) on RFC 3262's schedule (``voipgw.sip.reliability``) until ``progress_acknowledged()``,
a final response, or 64*T1. ``ring()`` may follow in the same early dialog (180, same To-tag); ``reject()`` after
``progress()`` ends the early dialog with a final error and may carry an RFC 3326 Reason. The caller reports each
early dialog's 18x as ``Ringing(dialog=<To-tag>)``, once per (code, To-tag, body): a forking proxy's branches are
told apart by their tags, and repeated 183s are absorbed. The first 2xx wins (``Answered(dialog=...)``); a later
2xx from another fork is ACKed and BYEd inside ``sippy_glue.GuardedTM`` and never reaches a dialog.

PRACK (RFC 3262), callee side only: when the INVITE offers ``100rel`` (Supported or Require), the 183 of
``progress()`` carries ``Require: 100rel`` and an RSeq and is retransmitted on the same schedule; the caller's PRACK
(matched to the dialog by ``sippy_glue.WarningUA``, since sippy's UAS states have no PRACK handler and match
in-dialog requests by the INVITE's branch) gets 200 and stops it, and an ``answer()`` given before the PRACK is held
until it arrives (RFC 3262 3: no 2xx before the PRACK of a reliable 18x with SDP). No PRACK within 64*T1: 500.
Only that one 183 is reliable: ``ring()`` 18x stay unreliable (an INVITE with ``Require: 100rel`` would want them
reliable too). As caller, voipgw never offers 100rel: sippy's UAC would neither send PRACK nor keep an early
dialog's route set (18x never update its remote target), so an RFC 3262 callee sends us unreliable 18x.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
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
from sippy.Time.Timeout import Timeout
from sippy.UasStateProgressing import UasStateProgressing

from voipgw.logutil import RateLimitedLog
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
from voipgw.sip.reliability import LIMIT, retransmit_offsets
from voipgw.sip.zone import Zone

log = logging.getLogger("voipgw.sip")
_ratelog = RateLimitedLog(log)

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
        self.reliable_progress = False
        """The INVITE offered RFC 3262 (``100rel`` in Supported or Require): ``progress()`` then sends its 183
        reliably (Require: 100rel, RSeq) and a PRACK stops the retransmission."""

    def ring(self, sdp: str | None = None, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Send 180 Ringing, or with ``sdp`` 183 Session Progress carrying it (sent once; ``progress`` is the
        retransmitted one), with the extra ``headers`` (e.g. P-Asserted-Identity). May follow ``progress()``: same
        To-tag, same early dialog. The 200 answer may then carry the same or another SDP."""
        self._act("ring", sdp, headers)

    def progress(self, sdp: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Send ``183 Session Progress`` with ``sdp`` (byte for byte) and ``headers``, and send that same 183
        again on RFC 3262's schedule (T1 0.5 s doubling, at most T2 4 s apart, for 64*T1) until
        ``progress_acknowledged()``, a final response (answer, reject, hang-up) or the caller's CANCEL. When the
        INVITE offered 100rel (``reliable_progress``) the 183 is sent reliably (RFC 3262: Require: 100rel, RSeq): the
        caller's PRACK stops it too, ``answer()`` waits for that PRACK (or ``progress_acknowledged()``), and without
        either after 64*T1 the INVITE is rejected with 500. A second call is a logged no-op."""
        self._act("progress", sdp, headers)

    def progress_acknowledged(self) -> None:
        """The caller has the 183's SDP (e.g. its first authenticated sealed frame arrived): stop sending it."""
        self._act("acknowledged")

    def answer(self, answer_sdp: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Send 200 OK with ``answer_sdp`` (byte for byte) and the extra ``headers`` (name, value), e.g. a
        P-Asserted-Identity; Confirmed follows when the ACK arrives."""
        self._act("answer", answer_sdp, headers)

    def reject(self, code: int, reason: str, warning: str | None = None, cause: tuple[int, str] | None = None) -> None:
        """Final error response; ``warning`` becomes ``Warning: 399 <our host> "<text>"`` (RFC 3261 20.43);
        ``cause=(code, text)`` adds ``Reason: SIP;cause=<code>;text="<text>"`` (RFC 3326; text sanitized like
        ``hangup``'s). Works after ``progress()``/``ring()``: it ends the early dialog and stops the 183s."""
        if not 300 <= code <= 699:
            raise ValueError(f"reject code must be 3xx-6xx, not {code}")
        self._act("reject", code, reason, warning, cause)

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
    resending: _Progress | None = None
    """Callee: the 183 that ``progress()`` sent and is sending again (None before, or once stopped)."""
    progress_done: bool = False
    """Callee: ``progress()`` was called (a second call is a no-op)."""
    rseq: int | None = None
    """Callee: the RSeq of our reliable 183 (RFC 3262), None when it is sent unreliably."""
    prack_done: bool = False
    """Callee: the reliable 183 was PRACKed (or ``progress_acknowledged()``): a 2xx may go."""
    deferred_answer: tuple[str, tuple[tuple[str, str], ...]] | None = None
    """Callee: an ``answer()`` held until the reliable 183 carrying SDP is PRACKed (RFC 3262 section 3)."""
    seen_18x: set[tuple[int, str, str | None]] = field(default_factory=set)
    """Caller: (code, To-tag, body) of each 18x reported, so a repeated one is absorbed."""

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
            self.stop_progress("call over")
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
                sdp = None if body is None else str(body)
                tag = self._response_tag()
                if (code, tag, sdp) in self.seen_18x:
                    self.reactor.count("provisional_absorbed")
                    return
                self.seen_18x.add((code, tag, sdp))
                self.emit(Ringing(code=code, remote_sdp=sdp, dialog=tag))
        elif isinstance(event, CCEventConnect):
            body = event.getData()[2]
            if self.reoffer_pending:
                self.reoffer_pending = False
                self.emit(ReAnswered(remote_sdp="" if body is None else str(body)))
            elif self.call.outgoing and self.phase is DialogPhase.SETUP:
                self._move(DialogEvent.ANSWERED)
                self._cancel_timer()
                r_uri = getattr(self.ua, "rUri", None)
                won = r_uri.getTag() if r_uri is not None else None
                self.emit(Answered(remote_sdp="" if body is None else str(body), dialog=str(won or "")))
            elif not self.call.outgoing and self.phase is DialogPhase.ANSWERING:
                self._move(DialogEvent.ACKNOWLEDGED)
                self.emit(Confirmed())
        elif isinstance(event, CCEventRedirect):
            # We do not follow 3xx (the target would bypass the identity the handshake binds); report it.
            data = (*event.getData(), None, None)
            self.emit(
                Failed(code=int(data[0] or 300), reason=str(data[1] or "Redirect"), warning=None, cause=_cause(event))
            )
        elif isinstance(event, CCEventFail):
            data = (*event.getData(), None, None)
            code, reason = int(data[0] or 500), str(data[1] or "")
            if self.reoffer_pending:
                self.reoffer_pending = False
                self.emit(ReOfferRejected(code=code, reason=reason))
                if self.ua is not None and self.ua.isDead():
                    self.emit(Ended(reason=f"re-INVITE failed: {code} {reason}", by_remote=True))
            elif self.phase in (DialogPhase.SETUP, DialogPhase.ANSWERING):
                warning = self.ua.last_warning if self.ua else None
                self.emit(Failed(code=code, reason=reason, warning=warning, cause=_cause(event)))
            else:
                self.emit(Ended(reason=f"{code} {reason}", by_remote=True))
        elif isinstance(event, CCEventDisconnect):
            # After our 200 (ANSWERING) it is a BYE that overtook the ACK, not a CANCEL: its Reason counts.
            if self.phase is DialogPhase.SETUP:
                # A CANCEL's RFC 3326 Reason says why (a caller that refused our 183's key exchange says so)
                why = _reason_text(event)
                self.emit(Ended(reason=f"cancelled by caller: {why}" if why else "cancelled by caller", by_remote=True))
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

    def _response_tag(self) -> str:
        return str(getattr(self.ua, "last_to_tag", None) or "")

    def ring(self, sdp: str | None = None, headers: tuple[tuple[str, str], ...] = ()) -> None:
        if self.phase is DialogPhase.SETUP and not self.call.outgoing:
            if sdp is None:
                ev = CCEventRing((180, "Ringing", None))
            else:
                ev = CCEventRing((183, "Session Progress", MsgBody(sdp)))
            if headers:
                ev.extra_headers = extra_headers(headers)
            self.ua.recvEvent(ev)

    def progress(self, sdp: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        if self.phase is not DialogPhase.SETUP or self.call.outgoing:
            log.warning("progress() ignored for call %s in phase %s", self.call.call_id, self.phase.value)
            return
        if self.progress_done:
            log.info("progress() called again for call %s: ignored (the first 183 stands)", self.call.call_id)
            return
        self.progress_done = True
        if getattr(self.call, "reliable_progress", False):
            self.rseq = secrets.randbelow(2**31 - 1) + 1  # RFC 3262 7.1: 1 to 2**31 - 1
            headers = (*headers, ("Require", "100rel"), ("RSeq", str(self.rseq)))
        body = MsgBody(sdp)
        ev = CCEventRing((183, "Session Progress", body))
        if headers:
            ev.extra_headers = extra_headers(headers)
        self.ua.recvEvent(ev)
        self.reactor.count("progress_sent")
        self.resending = _Progress(body=body, headers=headers, offsets=list(retransmit_offsets()))
        self._schedule_progress(0.0)

    def _schedule_progress(self, now: float) -> None:
        p = self.resending
        if p is not None and not p.offsets and self.awaiting_prack():
            p.timer = Timeout(self._prack_overdue, LIMIT - now)  # stop_progress() cancels it
            return
        if p is None or not p.offsets:
            self.resending = None
            return
        at = p.offsets.pop(0)
        p.timer = Timeout(self._resend_progress, at - now, 1, at)

    def _prack_overdue(self) -> None:
        self.resending = None
        if self.phase is DialogPhase.SETUP and self.awaiting_prack():
            # RFC 3262 3: a reliable 18x unacknowledged for 64*T1 SHOULD end the INVITE with a 5xx.
            self.reject(500, "Server Internal Error", "no PRACK for our reliable 183 Session Progress")

    def _resend_progress(self, at: float) -> None:
        p = self.resending
        if p is None:
            return
        p.timer = None
        # Only while the INVITE transaction still waits for its final response (sippy's Trying/Ringing states).
        if self.phase is not DialogPhase.SETUP or not isinstance(self.ua.state, UasStateProgressing):
            self.resending = None
            return
        self.ua.sendUasResponse(
            183, "Session Progress", p.body, (self.ua.lContact,),
            extra_headers=extra_headers(p.headers) if p.headers else None,
        )  # fmt: skip
        self.reactor.count("progress_sent")
        self.reactor.count("progress_retransmits")
        self._schedule_progress(at)

    def awaiting_prack(self) -> bool:
        return self.rseq is not None and not self.prack_done

    def acknowledged(self) -> None:
        """asyncio's ``progress_acknowledged()``: stop the 183 and release an answer held for its PRACK."""
        self.stop_progress("acknowledged")
        self._prack_settled()

    def _prack_settled(self) -> None:
        self.prack_done = True
        self._release_held_answer()

    def _release_held_answer(self) -> None:
        held, self.deferred_answer = self.deferred_answer, None
        if held is not None and self.phase is DialogPhase.SETUP:
            self._send_answer(*held)

    def on_prack(self, req: Any) -> Any:
        """A PRACK in this dialog (reactor thread): 200 when its RAck names our reliable 183, else 481."""
        parts = str(req.getHFBody("rack")).split() if req.countHFs("rack") > 0 else []
        invite_cseq = str(self.ua.uasResp.getHFBody("cseq").getCSeqNum()) if self.ua is not None else ""
        if (
            self.phase is DialogPhase.SETUP
            and self.awaiting_prack()
            and len(parts) == 3
            and parts[0] == str(self.rseq)
            and parts[1] == invite_cseq
            and parts[2].upper() == "INVITE"
        ):
            self.reactor.count("prack_ok")
            self.stop_progress("PRACK")
            self.prack_done = True
            # The held 2xx goes on the next reactor turn: after this PRACK's own 200, which the transaction layer
            # sends once we return (measured: sent inline, the INVITE's 200 overtook it on the wire).
            Timeout(self._release_held_answer, 0.0)
            return req.genResponse(200, "OK")
        self.reactor.count("prack_refused")
        _ratelog(
            "prack-refused", logging.WARNING, "PRACK for call %s refused (481): RAck %r names no 18x awaiting one",
            self.call.call_id, " ".join(parts)[:60],
        )  # fmt: skip
        return req.genResponse(481, "Call/Transaction Does Not Exist")

    def stop_progress(self, why: str) -> None:
        p = self.resending
        if p is None:
            return
        self.resending = None
        if p.timer is not None:
            p.timer.cancel()
        log.debug("183 retransmission stopped for call %s: %s", self.call.call_id, why)

    def answer(self, sdp: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        if self.phase is not DialogPhase.SETUP or self.call.outgoing or self.deferred_answer is not None:
            log.warning("answer() ignored for call %s in phase %s", self.call.call_id, self.phase.value)
            return
        if self.awaiting_prack():
            # RFC 3262 3: no 2xx before the PRACK of a reliable 18x that carried a session description.
            self.deferred_answer = (sdp, headers)
            return
        self._send_answer(sdp, headers)

    def _send_answer(self, sdp: str, headers: tuple[tuple[str, str], ...]) -> None:
        self._move(DialogEvent.ANSWER_SENT)
        self.stop_progress("answered")
        ev = CCEventPreConnect((200, "OK", MsgBody(sdp)))
        if headers:
            ev.extra_headers = extra_headers(headers)
        self.ua.recvEvent(ev)

    def reject(self, code: int, reason: str, warning: str | None, cause: tuple[int, str] | None = None) -> None:
        if self.phase is not DialogPhase.SETUP or self.call.outgoing:
            return
        self.stop_progress("rejected")
        self.deferred_answer = None
        ev = CCEventFail((code, reason))
        if cause is not None:
            ev.reason_rfc3326 = SipReason(protocol="SIP", cause=int(cause[0]), reason=_sanitize(cause[1]))
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
                ev.reason_rfc3326 = SipReason(protocol="SIP", cause=488, reason=_sanitize(why))
            self.ua.recvEvent(ev)
        self.emit(Ended(reason=reason, by_remote=False))

    def no_answer(self) -> None:
        self.timer = None
        if self.phase is DialogPhase.SETUP:
            self.ua.recvEvent(CCEventDisconnect())
            self.emit(Failed(code=408, reason="No answer", warning=None))


@dataclass(eq=False)
class _Progress:
    """The 183 being sent again: its body and headers, and the retransmission offsets still to come."""

    body: Any
    headers: tuple[tuple[str, str], ...]
    offsets: list[float]
    timer: Any = None


def _sanitize(text: str) -> str:
    """Text fit for a quoted Reason ``text=`` parameter: printable, no quote or backslash, at most 200 chars."""
    return "".join(ch for ch in text if ch.isprintable() and ch not in '"\\')[:200]


def _cause(event: Any) -> str | None:
    """A received final response's Reason header: its text, or its whole value when it has none."""
    reason = getattr(event, "reason_rfc3326", None)
    if reason is None:
        return None
    text = _reason_text(event)
    if text:
        return text
    try:
        return str(reason)[:200] or None
    except Exception:
        return None


def extra_headers(headers: tuple[tuple[str, str], ...]) -> tuple[Any, ...]:
    """sippy header objects for (name, value) pairs, for a request or response we send."""
    return tuple(SipHeader(name=name.lower(), bodys=value) for name, value in headers)


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
