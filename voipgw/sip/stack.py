"""The only owner of sippy: runs its reactor in one thread and exposes calls and registrations to asyncio.

sippy objects are touched only on the reactor thread (asyncio -> reactor via ``ED2.callFromThread``,
reactor -> asyncio via ``loop.call_soon_threadsafe``). SDP bodies pass through as opaque strings.

Theory of operation
-------------------
sippy keeps process-wide state: the ``ED2`` reactor singleton, ``SipConf`` defaults (address, port,
User-Agent) and module-level helpers. Hence at most one ``SipStack`` runs per process at a time. ``stop()``
hangs up every call (BYE / CANCEL / 487), unregisters, waits (bounded) for those transactions, closes every
socket, drops the reactor's leftover timers and joins the thread, so a *new* ``SipStack`` can then be started
in the same process (tests do this). A stopped ``SipStack`` object itself cannot be started again; two
concurrent stacks need two processes. In a worker thread the reactor notices cross-thread calls only at its
tick, so ``reactor_hz`` bounds the added latency (1000 Hz: about 1 ms per hop, 4 % of a core when idle).
On the main thread (``own_reactor_thread=False``; see ``mainthread.MainThreadReactor``) sippy wakes by signal
instead, so 100 Hz is as fast; ``voipgw.sip`` must be imported on that thread first (ED2 binds it at import).

Registrar and INVITE auth: pass ``SipStack(..., registrar=Registrar(...))`` (the constructor argument, also
readable as ``stack.registrar``; do not swap it after ``start()``). REGISTER is then answered by it (405
without one), and ``authenticate_invites(predicate)`` challenges chosen INVITEs with the registrar's digest
authenticator before any dialog state exists, so a challenged INVITE never reaches ``incoming``.
Registrations (``register``) retry refused or unanswered attempts with jittered exponential backoff once
granted (and from the start with ``keep_trying=True``); each attempt has its own deadline instead of sippy's
32 s Timer F. sippy bad-input workarounds live here too: Authorization headers are checked by
``voipgw.sip.digest`` and stripped before sippy's UAS parses them, and a half-set-up UA is unregistered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import random
import secrets
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from sippy.CCEvents import (
    CCEventConnect,
    CCEventDisconnect,
    CCEventFail,
    CCEventPreConnect,
    CCEventRedirect,
    CCEventRing,
    CCEventTry,
    CCEventUpdate,
)
from sippy.Core.EventDispatcher import ED2
from sippy.MsgBody import MsgBody
from sippy.Network_server import Remote_address
from sippy.SipAddress import SipAddress
from sippy.SipCallId import SipCallId
from sippy.SipConf import MyPort, SipConf
from sippy.SipContact import SipContact
from sippy.SipFrom import SipFrom
from sippy.SipHeader import SipHeader
from sippy.SipReason import SipReason
from sippy.SipRequest import SipRequest
from sippy.SipTo import SipTo
from sippy.SipTransactionManager import COMPLETED, RINGING, TRYING, SipTransactionManager
from sippy.SipURL import SipURL
from sippy.SipWarning import SipWarning
from sippy.Time.MonoTime import MonoTime
from sippy.Time.Timeout import Timeout
from sippy.UA import UA
from sippy.Udp_server import AsyncSender, Udp_server, Udp_server_opts

from voipgw.logutil import RateLimitedLog
from voipgw.sip.digest import Authenticated, Challenge
from voipgw.sip.events import (
    TERMINAL_EVENTS,
    Answered,
    CallEvent,
    CallStateError,
    Confirmed,
    Ended,
    Failed,
    ReAnswered,
    RegistrationFailed,
    RegistrationState,
    ReOffer,
    ReOfferRejected,
    Ringing,
    SipStackStateError,
    Trying,
)
from voipgw.sip.guard import MAX_DATAGRAM, Accept, DatagramGuard, Reply, SipStats
from voipgw.sip.registrar import ContactSpec, RegisterReply, RegisterRequest, Registrar
from voipgw.sip.tcp import UDP_MTU_BUDGET, TcpOptions, TcpStats, TcpTransport, bind_listener
from voipgw.sip.tls import TlsOptions, client_context, server_context

log = logging.getLogger("voipgw.sip")
wire_log = logging.getLogger("voipgw.sip.wire")
sippy_log = logging.getLogger("voipgw.sip.sippy")

DEFAULT_REACTOR_HZ = 1000.0
DEFAULT_NO_ANSWER_S = 60.0
SHUTDOWN_GRACE_S = 2.0
"""How long stop() waits for the BYE/CANCEL/unREGISTER transactions to complete before closing sockets."""
SHUTDOWN_POLL_S = 0.01
REGISTER_REFRESH_FRACTION = 0.6
"""Refresh a registration at this share of the granted expiry (sippy's own agent waits for 100 %)."""
REGISTER_MAX_AUTH_TRIES = 2
REGISTER_ATTEMPT_TIMEOUT_S = 8.0
"""Give up on one REGISTER transaction after this (sippy's own Timer F is 32 s) and go to the backoff."""
REGISTER_BACKOFF_FIRST_S = 1.0
REGISTER_BACKOFF_CAP_S = 60.0
REGISTER_BACKOFF_JITTER = 0.2
"""Retries after a refused or unanswered REGISTER wait 1 s, 2 s, 4 s ... 60 s, each +-20 %."""
REGISTER_MAX_MIN_EXPIRES = 86400
"""A 423's Min-Expires above this is not followed (a registrar asking for days is misconfigured)."""
THREAD_JOIN_S = 5.0
UDP_RECEIVE_BUFFER = 4 << 20
"""SO_RCVBUF asked for on the SIP UDP socket: a burst of INVITEs waits in the kernel instead of being dropped
(the default, about 208 KiB, holds fewer than 100 small datagrams). Linux caps it at net.core.rmem_max."""
UDP_READ_BYTES = 65535
"""Read whole datagrams (sippy reads 8192 and silently truncates), so the guard can refuse an oversized one."""

_running_lock = threading.Lock()
_running: SipStack | None = None
_jitter = random.Random()

OfferFactory = Callable[[str], str]
InviteAuthPredicate = Callable[[tuple[str, int], str], bool]
"""(source address, From user) -> True when that INVITE must carry valid digest credentials for the user."""
ReOfferHandler = Callable[[str], str | None]


# --- sippy's stdout output, redirected ---------------------------------------------------------------------

_sippy_ratelog = RateLimitedLog(sippy_log)
_stats_sink: list[SipStats] = []


def _captured_dump_exception(msg: str, f: object = None, extra: object = None) -> None:
    exc = sys.exc_info()[1]
    if _stats_sink:
        _stats_sink[0].sippy_errors += 1
    _sippy_ratelog("exception", logging.WARNING, "sippy: %s: %r", msg, exc)
    sippy_log.debug("sippy: %s", msg, exc_info=exc is not None)


def _captured_print(*args: object, **kwargs: object) -> None:
    text = " ".join(str(a) for a in args)
    if _stats_sink:
        _stats_sink[0].sippy_errors += 1
    _sippy_ratelog("print", logging.WARNING, "sippy: %s", text[:300])


def _redirect_sippy_output() -> None:
    """Route each sippy module's print/dump_exception (bulk tracebacks on stdout) to rate-limited logging.

    Module globals shadow builtins, so setting ``print`` on a sippy module redirects only sippy's own calls.
    """
    for name, mod in list(sys.modules.items()):
        if not name.startswith("sippy") or not isinstance(mod, ModuleType):
            continue
        if hasattr(mod, "dump_exception"):
            mod.dump_exception = _captured_dump_exception  # type: ignore[attr-defined]
        if name != "sippy.Core.Exceptions":
            mod.print = _captured_print  # type: ignore[attr-defined]


class _WireLogger:
    """Stands in for sippy's SipLogger: message dumps go to ``voipgw.sip.wire`` at DEBUG."""

    def write(self, *args: object, **kwargs: object) -> None:
        if wire_log.isEnabledFor(logging.DEBUG):
            wire_log.debug("%s", "".join(str(a) for a in args))

    def shutdown(self) -> None:
        return None


class _OrderedUdpOpts(Udp_server_opts):  # type: ignore[misc]
    """One receiver and one sender thread instead of sippy's three each (_GuardedUdpServer starts them).

    With three, back-to-back messages leave (and are handed to the reactor) out of order: measured, a 180 sent
    right before a 200 arrived after it in about one call in ten on loopback. One worker keeps order.
    """

    nworkers = 0  # sippy's own workers; _GuardedUdpServer adds exactly one pair of its own


class _WholeDatagramReceiver(threading.Thread):
    """sippy's AsyncReceiver, reading up to 64 KiB instead of 8192 bytes (sippy truncates larger datagrams, so
    an oversized request reached the parser cut short and got a misleading 400 instead of 513)."""

    daemon = True

    def __init__(self, userv: Any) -> None:
        super().__init__(name="sip-udp-receiver")
        self.userv = userv
        self.start()

    def run(self) -> None:
        userv = self.userv
        empty_left = 100
        while True:
            try:
                data, address = userv.skt.recvfrom(UDP_READ_BYTES)
            except OSError as exc:
                if exc.errno in (errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.EBADF):
                    break
                if exc.errno == errno.EINTR:
                    continue
                _sippy_ratelog("recv", logging.WARNING, "SIP UDP receive failed: %r", exc)
                time.sleep(0.01)
                continue
            if not data and address is None:
                # As sippy: a socket shut down under us on Linux returns empty reads without an address.
                empty_left -= 1
                if empty_left == 0:
                    break
                continue
            empty_left = 100
            if userv.uopts.family == socket.AF_INET6:
                address = (f"[{address[0]}]", address[1])
            ED2.callFromThread(userv.handle_read, data, Remote_address(address, userv.transport), MonoTime())
        self.userv = None


class _GuardedUdpServer(Udp_server):  # type: ignore[misc]
    """sippy's Udp_server with a larger receive buffer and a receiver that reads whole datagrams."""

    def __init__(self, global_config: Any, uopts: Any) -> None:
        super().__init__(global_config, uopts)  # binds; starts no workers (_OrderedUdpOpts.nworkers = 0)
        try:
            self.skt.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        except OSError as exc:
            log.debug("SIP UDP socket: SO_RCVBUF %d refused: %s", UDP_RECEIVE_BUFFER, exc)
        self.receive_buffer = int(self.skt.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
        log.debug(
            "SIP UDP socket %s:%s: receive buffer %d bytes (asked for %d)",
            *self.uopts.laddress[:2], self.receive_buffer, UDP_RECEIVE_BUFFER,
        )  # fmt: skip
        self.asenders.append(AsyncSender(self))
        self.areceivers.append(_WholeDatagramReceiver(self))


class _GuardedTM(SipTransactionManager):  # type: ignore[misc]
    """SipTransactionManager whose inbound path is vetted by DatagramGuard first."""

    guard: DatagramGuard
    model_udp_server = (_GuardedUdpServer, _OrderedUdpOpts)
    streams: dict[str, TcpTransport]

    def __init__(self, global_config: dict[str, Any], req_cb: Any, guard: DatagramGuard) -> None:
        self.guard = guard
        self.streams = {}
        super().__init__(global_config, req_cb)

    def handleIncoming(self, data_in: bytes, ra: Any, server: Any, rtime: Any) -> None:
        # A stream transport frames messages with its own limits (voipgw.sip.framing); datagrams have ours.
        max_size = None if getattr(server, "reliable", False) else MAX_DATAGRAM
        verdict = self.guard.check(data_in, ra.address, max_size)
        if isinstance(verdict, Reply):
            server.send_to(verdict.data, ra.address)
            return
        if not isinstance(verdict, Accept):
            return
        if not data_in.startswith(b"SIP/"):
            # sippy drops requests it cannot parse without a word; parse once more here so that a mangled
            # but well-framed request gets the 400 RFC 3261 8.2 asks for.
            try:
                probe = SipRequest(data_in.decode("utf-8"))
                probe.getTIds()
                # getTIds() leaves To unparsed; sippy's request handlers parse it later, outside any error
                # handling, so a To it cannot read (e.g. a tel: URI) would otherwise get no answer at all.
                probe.getHFBody("to").getUrl()
            except Exception as exc:
                verdict = self.guard.reject_unparsable(data_in, ra.address, f"{type(exc).__name__}: {exc}")
                if isinstance(verdict, Reply):
                    server.send_to(verdict.data, ra.address)
                return
        super().handleIncoming(data_in, ra, server, rtime)

    def incomingResponse(self, msg: Any, t: Any, checksum: Any) -> None:
        if msg.getSCode()[0] >= 300 and getattr(t, "needack", False):
            # RFC 3261 17.1.1.3: the ACK of a non-2xx final response goes where the INVITE went, with the
            # INVITE's Request-URI. sippy routes it by the response's Contact/Record-Route like a 2xx ACK, so a
            # 486 or 302 carrying a Contact sends the ACK astray (and the peer retransmits). Hide them.
            msg.delHFs("contact")
            msg.delHFs("record-route")
        super().incomingResponse(msg, t, checksum)

    # SIP over TCP and TLS (voipgw.sip.tcp) -----------------------------------------------------------------
    def newTransaction(self, msg: Any, resp_cb: Any = None, laddress: Any = None, userv: Any = None,
                       *args: Any, **kwargs: Any) -> Any:  # fmt: skip
        if userv is None and self.streams:
            address, transport = msg.getTarget()
            name = str(transport).lower()
            userv = self.streams.get(name)
            # RFC 3261 18.1.1: a request over 1300 bytes goes over a congestion-controlled transport.
            big = name == "udp" and len(msg.localStr(self.l4r.getServer(address).getSIPaddr())) > UDP_MTU_BUDGET
            if big and "tcp" in self.streams:
                t = super().newTransaction(msg, resp_cb, laddress, self.streams["tcp"], *args, **kwargs)
                t.voipgw_udp_fallback = msg  # TCP only for its size: UDP again if TCP is refused (18.1.1)
                return t
        if userv is None:
            address, transport = msg.getTarget()
            if str(transport) != "udp" and str(transport).lower() == "udp":
                # Transport parameters are case-insensitive (RFC 3261 25.1) but sippy only knows "udp": a peer whose
                # Contact says transport=UDP (sipp, some desk phones) would never get its BYE.
                userv = self.l4r.getServer(address) if laddress is None else self.l4r.getServer(laddress, is_local=True)
        return super().newTransaction(msg, resp_cb, laddress, userv, *args, **kwargs)

    def timerA(self, t: Any) -> None:
        if getattr(t.userv, "reliable", False) and self.tclient.get(t.tid) is t:
            t.teA = None  # RFC 3261 17.1.1.2: no request retransmissions over a reliable transport
            return
        super().timerA(t)

    def transport_failed(self, data: bytes, address: tuple[str, int], reason: str, refused: bool) -> None:
        """RFC 3261 8.1.3.1: a request that could not be sent ends its transaction as a 503 at once; one sent over
        TCP only because of its size is sent over UDP instead when the peer refused TCP (18.1.1)."""
        for t in list(self.tclient.values()):
            if t.state is not TRYING or t.resp_cb is None or not isinstance(t.data, str):
                continue
            if t.data.encode("utf-8") != data:
                continue
            msg = getattr(t, "voipgw_udp_fallback", None)
            if refused and msg is not None:
                log.info("%s; sending the %d-byte request over UDP instead", reason, len(data))
                t.voipgw_udp_fallback = None
                t.userv = self.l4r.getServer(t.address)
                t.data = msg.localStr(t.userv.getSIPaddr(), compact=t.compact)
                self.transmitData(t.userv, t.data, t.address)
                t.tout = 0.5
                t.teA = Timeout(self.timerA, t.tout, 1, t)
                continue
            if t.teB is not None:
                t.teB.cancel()
            t.r408.setSCode(503, f"Service Unavailable ({reason})")
            self.timerB(t)


class _UA(UA):  # type: ignore[misc]
    """A sippy UA that remembers the Warning header of the last final error response (sippy drops it)."""

    voipgw_core: _CallCore | None = None
    last_warning: str | None = None

    def recvResponse(self, resp: Any, tr: Any) -> None:
        code = resp.getSCode()[0]
        if code >= 300 and resp.countHFs("warning") > 0:
            self.last_warning = str(resp.getHFBody("warning"))
        super().recvResponse(resp, tr)


class _SetupTry(CCEventTry):  # type: ignore[misc]
    """CCEventTry that writes our exact R-URI, To and From into the UA right before the INVITE is built."""

    def __init__(self, data: tuple[Any, ...], target: Any, from_url: Any, display: str | None) -> None:
        super().__init__(data)
        self._target = target
        self._from_url = from_url
        self._display = display

    def onUacSetupComplete(self, ua: Any) -> None:
        ua.rTarget = self._target.getCopy()
        to_url = self._target.getCopy()
        to_url.port = self._target.port
        ua.rUri = SipTo(address=SipAddress(url=to_url, hadbrace=True))
        ua.lUri = SipFrom(address=SipAddress(url=self._from_url.getCopy(), hadbrace=True, name=self._display))
        ua.lUri.setTag(ua.lTag)


def _parse_uri(uri: str) -> Any:
    text = uri.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if ":" not in text.split("@", 1)[0]:
        text = "sip:" + text  # a bare "user@host[:port]" AOR
    if not text.lower().startswith(("sip:", "sips:")):
        raise ValueError(f"not a sip: or sips: URI: {uri!r}")
    return SipURL(url=text)


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


class _BadRegister(ValueError):
    """A REGISTER whose Contact or Expires cannot be understood (answered 400)."""


ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"


def _auth_values(req: Any) -> list[str]:
    """The raw Authorization values of a request, read without sippy's parser (it splits quoted commas)."""
    return [str(hf.body) for hf in req.getHFs("authorization")]


def _aor(url: Any) -> str:
    user = f"{url.username}@" if url.username else ""
    port = f":{url.port}" if url.port else ""
    return f"sip:{user}{url.host}{port}"


# --- asyncio-side handles ----------------------------------------------------------------------------------


class SipCall:
    """One dialog as seen from asyncio: an event stream plus the actions that fit it. Methods never block."""

    def __init__(self, stack: SipStack, call_id: str, outgoing: bool) -> None:
        self._stack = stack
        self.call_id = call_id
        self.outgoing = outgoing
        self.events: asyncio.Queue[CallEvent] = asyncio.Queue()
        self.reoffer_handler: ReOfferHandler | None = None
        """Called (in asyncio) with a peer's re-INVITE SDP; returns our answer SDP, or None for a 488."""
        self.finished = False
        self._core: _CallCore | None = None

    async def next_event(self, timeout: float | None = None) -> CallEvent:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def __aiter__(self) -> AsyncIterator[CallEvent]:
        while True:
            ev = await self.events.get()
            yield ev
            if isinstance(ev, TERMINAL_EVENTS):
                return

    def _push(self, ev: CallEvent) -> None:
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
        self._stack._post(self._core_call, name, *args)

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
        stack: SipStack,
        call_id: str,
        from_aor: str,
        to_aor: str,
        from_display: str | None,
        remote_sdp: str | None,
        source_addr: tuple[str, int],
        authenticated_user: str | None = None,
    ) -> None:
        super().__init__(stack, call_id, outgoing=False)
        self.from_aor = from_aor
        self.to_aor = to_aor
        self.from_display = from_display
        self.remote_sdp = remote_sdp
        self.source_addr = source_addr
        self.authenticated_user = authenticated_user
        """The user whose digest credentials this INVITE carried (``authenticate_invites``), else None."""

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
class _CallCore:
    """Reactor-thread companion of a SipCall: owns the sippy UA and decides which events asyncio sees."""

    stack: SipStack
    call: SipCall
    ua: Any = None
    phase: str = "setup"  # setup -> answering (callee) -> up -> ended
    reoffer_pending: bool = False
    timer: Any = None

    def emit(self, ev: CallEvent) -> None:
        if self.phase == "ended":
            return
        if isinstance(ev, TERMINAL_EVENTS):
            self.phase = "ended"
            self._cancel_timer()
            self.stack._cores.discard(self)
        self.stack._deliver(self.call._push, ev)

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
            elif self.call.outgoing and self.phase == "setup":
                self.phase = "up"
                self._cancel_timer()
                self.emit(Answered(remote_sdp="" if body is None else str(body)))
            elif not self.call.outgoing and self.phase == "answering":
                self.phase = "up"
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
            elif self.phase in ("setup", "answering"):
                self.emit(Failed(code=code, reason=reason, warning=self.ua.last_warning if self.ua else None))
            else:
                self.emit(Ended(reason=f"{code} {reason}", by_remote=True))
        elif isinstance(event, CCEventDisconnect):
            if self.phase in ("setup", "answering"):
                self.emit(Ended(reason="cancelled by caller", by_remote=True))
            else:
                why = _reason_text(event)
                self.emit(Ended(reason=f"remote hangup: {why}" if why else "remote hangup", by_remote=True))
        elif isinstance(event, CCEventUpdate):
            body = event.getData()
            self.stack._deliver(self.call._handle_reoffer, "" if body is None else str(body))

    # asyncio -> us
    def reply_reoffer(self, answer: str | None) -> None:
        if self.phase == "ended":
            return
        if answer is None:
            self.ua.recvEvent(CCEventFail((488, "Not Acceptable Here")))
        else:
            self.ua.recvEvent(CCEventConnect((200, "OK", MsgBody(answer))))

    def ring(self, sdp: str | None = None) -> None:
        if self.phase == "setup" and not self.call.outgoing:
            if sdp is None:
                self.ua.recvEvent(CCEventRing((180, "Ringing", None)))
            else:
                self.ua.recvEvent(CCEventRing((183, "Session Progress", MsgBody(sdp))))

    def answer(self, sdp: str) -> None:
        if self.phase != "setup" or self.call.outgoing:
            log.warning("answer() ignored for call %s in phase %s", self.call.call_id, self.phase)
            return
        self.phase = "answering"
        self.ua.recvEvent(CCEventPreConnect((200, "OK", MsgBody(sdp))))

    def reject(self, code: int, reason: str, warning: str | None) -> None:
        if self.phase != "setup" or self.call.outgoing:
            return
        ev = CCEventFail((code, reason))
        if warning is not None:
            w = SipWarning(code=399, text=warning)
            w.agent = self.stack.local_host
            ev.warning = SipHeader(body=w)
        self.ua.recvEvent(ev)
        self.emit(Ended(reason=f"rejected: {code} {reason}", by_remote=False))

    def cancel(self) -> None:
        if self.phase == "setup" and self.call.outgoing:
            self.hangup("cancelled")

    def reoffer(self, sdp: str) -> None:
        if self.phase != "up" or self.reoffer_pending:
            self.stack._deliver(self.call._push, ReOfferRejected(code=491, reason="not in a stable dialog"))
            return
        self.reoffer_pending = True
        self.ua.recvEvent(CCEventUpdate(MsgBody(sdp)))

    def hangup(self, reason: str, why: str | None = None) -> None:
        if self.phase == "ended":
            return
        if self.phase == "setup" and not self.call.outgoing:
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
        if self.phase == "setup":
            self.ua.recvEvent(CCEventDisconnect())
            self.emit(Failed(code=408, reason="No answer", warning=None))


class Registration:
    """One AOR kept registered at a registrar; refreshed before expiry until ``unregister()``.

    ``state`` is the latest outcome (``code`` 0 and ``reason`` "pending" before the first reply). A refused or
    unanswered attempt is retried with backoff (see ``SipStack.register``); ``on_change`` runs on the asyncio
    loop whenever ``registered`` flips or the status code changes.
    """

    def __init__(self, stack: SipStack, aor: str, on_change: Callable[[RegistrationState], None] | None = None) -> None:
        self._stack = stack
        self.aor = aor
        self.on_change = on_change
        self._state = RegistrationState(aor, False, 0, "pending", 0)
        self._core: _RegCore | None = None

    @property
    def state(self) -> RegistrationState:
        return self._state

    @property
    def registered(self) -> bool:
        return self._state.registered

    def _update(self, state: RegistrationState) -> None:
        """asyncio side: record ``state`` and tell ``on_change`` if it differs in a way callers act on."""
        old, self._state = self._state, state
        if self.on_change is None or (old.registered, old.code) == (state.registered, state.code):
            return
        try:
            self.on_change(state)
        except Exception:
            log.exception("registration on_change callback failed for %s", self.aor)

    async def unregister(self, timeout_s: float = 5.0) -> RegistrationState:
        return await self._stack._unregister(self, timeout_s)

    def __repr__(self) -> str:
        return f"Registration({self.aor!r}, registered={self.registered}, code={self._state.code})"


def _challenge_is_stale(resp: Any, code: int) -> bool:
    name = "www-authenticate" if code == 401 else "proxy-authenticate"
    return any("stale=true" in str(hf.body).lower().replace(" ", "").replace('"', "") for hf in resp.getHFs(name))


def _backoff_delay(step: int) -> float:
    """Retry delay after ``step`` consecutive failures: 1 s doubling to the cap, +-20 % jitter."""
    base = min(REGISTER_BACKOFF_CAP_S, REGISTER_BACKOFF_FIRST_S * (2.0 ** min(step, 30)))
    return base * _jitter.uniform(1.0 - REGISTER_BACKOFF_JITTER, 1.0 + REGISTER_BACKOFF_JITTER)


@dataclass(eq=False)
class _RegCore:
    """Reactor-side REGISTER client; replaces sippy's SipRegistrationAgent (no refresh margin, 407 bug).

    Each attempt is one sippy client transaction plus our own deadline (sippy's Timer F is 32 s); replies to
    an attempt that is no longer current (``gen``) are ignored, so an unregister can overtake a refresh.
    """

    stack: SipStack
    handle: Registration
    rmsg: Any
    username: str | None
    password: str | None = field(repr=False)
    expires: int
    keep_trying: bool = False
    waiter: concurrent.futures.Future[RegistrationState] | None = None
    timer: Any = None
    deadline: Any = None
    tx: Any = None
    gen: int = 0
    auth_tries: int = 0
    interval_tries: int = 0
    failures: int = 0
    granted: int = 0
    ever_registered: bool = False
    unregistering: bool = False
    closed: bool = False

    def send(self) -> None:
        self.timer = None
        if self.closed:
            return
        self._end_attempt()
        contact = self.rmsg.getHFBody("contact")
        # setParam, not params[...]: sippy serializes only names listed in params_order, which is why its own
        # registration agent never sends the expiry it was given (registrars then grant their default).
        contact.address.setParam("expires", str(0 if self.unregistering else self.expires))
        self.gen += 1
        gen = self.gen
        self.tx = self.stack._tm.newTransaction(self.rmsg, lambda resp: self.on_reply(resp, gen))
        self.deadline = Timeout(self._attempt_timed_out, REGISTER_ATTEMPT_TIMEOUT_S, 1, gen)
        self.rmsg.getHFBody("via").genBranch()
        self.rmsg.getHFBody("cseq").incCSeqNum()

    def _end_attempt(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        tx, self.tx = self.tx, None
        if tx is not None and getattr(tx, "teB", None) is not None and tx.state in (TRYING, RINGING):
            self.gen += 1  # the 408 that timerB hands to the callback below is then recognised as stale
            # Stop sippy retransmitting a request we gave up on.
            tx.teB.cancel()
            tx.teB = None
            with contextlib.suppress(Exception):
                self.stack._tm.timerB(tx)

    def _attempt_timed_out(self, gen: int) -> None:
        self.deadline = None
        if gen != self.gen or self.closed:
            return
        self._end_attempt()
        self._failed(408, "registrar did not answer")

    def on_reply(self, resp: Any, gen: int) -> None:
        if self.closed or gen != self.gen:
            return
        code, reason = resp.getSCode()
        if code < 200:
            return
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.tx = None
        if (
            code in (401, 407)
            and self.username is not None
            and self.password is not None
            and self.auth_tries < REGISTER_MAX_AUTH_TRIES
            # Credentials refused without stale=true: the password is wrong, another try cannot help.
            and (self.auth_tries == 0 or _challenge_is_stale(resp, code))
            and self._add_credentials(resp, code)
        ):
            self.auth_tries += 1
            self.send()
            return
        if code == 423 and not self.unregistering and self.interval_tries < 1 and self._raise_expires(resp):
            self.interval_tries += 1
            self.send()
            return
        self.auth_tries = 0
        self.interval_tries = 0
        if 200 <= code < 300:
            self.failures = 0
            self.granted = 0 if self.unregistering else self._granted(resp)
            state = RegistrationState(self.handle.aor, not self.unregistering, code, reason, self.granted)
            if self.unregistering:
                self.closed = True
            else:
                self.ever_registered = True
                delay = max(1.0, self.granted * REGISTER_REFRESH_FRACTION)
                self.timer = Timeout(self.send, delay)
                log.info("registered %s for %d s; refreshing in %.0f s", self.handle.aor, self.granted, delay)
            self._settle(state)
            return
        self._failed(code, reason)

    def _failed(self, code: int, reason: str) -> None:
        self.auth_tries = 0
        self.granted = 0
        state = RegistrationState(self.handle.aor, False, code, reason, 0)
        if self.unregistering:
            self.closed = True
            log.warning("un-REGISTER %s failed: %d %s", self.handle.aor, code, reason)
        elif self.keep_trying or self.ever_registered:
            delay = _backoff_delay(self.failures)
            self.failures += 1
            self.timer = Timeout(self.send, delay)
            log.warning("REGISTER %s failed: %d %s; retrying in %.1f s", self.handle.aor, code, reason, delay)
        else:
            log.warning("REGISTER %s failed: %d %s", self.handle.aor, code, reason)
        self._settle(state)

    def _settle(self, state: RegistrationState) -> None:
        self.stack._deliver(self.handle._update, state)
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(state)

    def _raise_expires(self, resp: Any) -> bool:
        """423 Interval Too Brief: ask again with the registrar's Min-Expires (once)."""
        for hf in resp.getHFs("min-expires"):
            text = str(hf.body).strip()
            if text.isdigit() and self.expires < int(text) <= REGISTER_MAX_MIN_EXPIRES:
                self.expires = int(text)
                return True
        return False

    def _add_credentials(self, resp: Any, code: int) -> bool:
        chn = "www-authenticate" if code == 401 else "proxy-authenticate"
        if resp.countHFs(chn) == 0:
            return False
        challenge = None
        qop = None
        for i in range(resp.countHFs(chn)):
            candidate = resp.getHFBody(chn, i)
            supported, qop = candidate.supportedAlgorithm()
            if supported:
                challenge = candidate
                break
        if challenge is None:
            return False
        auth = challenge.genAuthHF(self.username, self.password, "REGISTER", str(self.rmsg.ruri), qop=qop)
        for name in ("authorization", "proxy-authorization"):
            for hf in self.rmsg.getHFs(name):
                self.rmsg.removeHeader(hf)
        # The header name comes from the credential class, so a 407 gets Proxy-Authorization (sippy's own
        # registration agent sends Authorization for both).
        self.rmsg.appendHeader(SipHeader(body=auth))
        return True

    def _granted(self, resp: Any) -> int:
        ours = self.rmsg.getHFBody("contact").getUrl()
        fallback: int | None = None
        for c in resp.getHFBodys("contact") if resp.countHFs("contact") else []:
            if c.asterisk or "expires" not in c.address.params:
                continue
            url = c.getUrl()
            value = int(c.address.params["expires"])
            if url.host == ours.host and int(url.port or 5060) == int(ours.port or 5060):
                return value
            fallback = value if fallback is None else fallback
        if fallback is not None:
            return fallback
        if resp.countHFs("expires") > 0:
            return int(resp.getHFBody("expires").getNum())
        return self.expires

    def start_unregister(self, waiter: concurrent.futures.Future[RegistrationState] | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.closed:
            if waiter is not None and not waiter.done():
                waiter.set_result(RegistrationState(self.handle.aor, False, 0, "not registered", 0))
            return
        self.unregistering = True
        self.waiter = waiter
        self.auth_tries = 0
        self.send()

    def close(self) -> None:
        self.closed = True
        self.gen += 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._end_attempt()


# --- the stack ----------------------------------------------------------------------------------------------


@dataclass
class _Lifecycle:
    ready: concurrent.futures.Future[int] = field(default_factory=concurrent.futures.Future)
    stopped: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)


class SipStack:
    """SIP user agent on UDP (and TCP with ``tcp=``) at ``local_host:local_port`` (0: a free port, in ``local_port``
    after start)."""

    def __init__(
        self,
        local_host: str,
        local_port: int,
        loop: asyncio.AbstractEventLoop,
        *,
        user_agent: str = "voipgw/0.1",
        reactor_hz: float = DEFAULT_REACTOR_HZ,
        own_reactor_thread: bool = True,
        registrar: Registrar | None = None,
        tcp: TcpOptions | None = None,
        tls: TlsOptions | None = None,
    ) -> None:
        """``tcp``: also listen for SIP over TCP on the same port number (limits in TcpOptions); requests over
        1300 bytes, or to a ``;transport=tcp`` target, then go over TCP. ``tls``: SIP over TLS for
        ``;transport=tls`` targets (same limits), listening on ``tls.port`` when it has a certificate."""
        self.tcp_options = tcp
        self.tls_options = tls
        self._tcp: TcpTransport | None = None
        self._tls: TcpTransport | None = None
        self.registrar = registrar
        """Answers REGISTER (see ``voipgw.sip.registrar``); None: REGISTER gets 405. Fixed once started."""
        self._invite_auth: InviteAuthPredicate | None = None
        self.local_host = local_host
        self.local_port = local_port
        self.loop = loop
        self.user_agent = user_agent
        self.reactor_hz = reactor_hz
        self.own_reactor_thread = own_reactor_thread
        self.incoming: asyncio.Queue[IncomingCall] = asyncio.Queue()
        self._stats = SipStats()
        self._guard = DatagramGuard(local_host, user_agent, self._stats)
        self._cores: set[_CallCore] = set()
        self._regs: list[_RegCore] = []
        self._tm: Any = None
        self._udp: Any = None
        self._gc: dict[str, Any] = {}
        self._thread: threading.Thread | None = None
        self._life = _Lifecycle()
        self._state = "new"  # new -> starting -> running -> stopping -> stopped
        self._reactor_lock = threading.Lock()
        self._reactor_entered = False

    def authenticate_invites(self, predicate: InviteAuthPredicate | None) -> None:
        """Demand digest credentials on new INVITEs for which ``predicate(source, from_user)`` is True.

        Uses the registrar's authenticator (so needs ``registrar`` with ``auth=True``). A challenged INVITE
        gets 401 inside the stack and never reaches ``incoming``; the re-sent INVITE with valid credentials
        for that From user arrives with ``IncomingCall.authenticated_user`` set; wrong ones get 403. The
        predicate runs on the reactor thread: keep it quick and thread-safe. None turns the check off.
        """
        if predicate is not None and (self.registrar is None or self.registrar.authenticator is None):
            raise ValueError("authenticate_invites needs SipStack(registrar=Registrar(..., auth=True))")
        self._invite_auth = predicate

    # lifecycle ---------------------------------------------------------------------------------------------
    @property
    def stats(self) -> SipStats:
        """A snapshot of the front-door counters."""
        return self._stats.copy()

    @property
    def udp_receive_buffer(self) -> int | None:
        """The SIP UDP socket's effective SO_RCVBUF, read back from the socket (None before start)."""
        server = self._udp
        if server is None or server.skt is None:
            return None
        return int(server.skt.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    @property
    def tcp_stats(self) -> TcpStats | None:
        """A snapshot of the TCP transport's counters (None without TCP)."""
        return self._tcp.stats if self._tcp is not None else None

    @property
    def tls_stats(self) -> TcpStats | None:
        return self._tls.stats if self._tls is not None else None

    @property
    def tls_port(self) -> int | None:
        """The TLS listening port once started (None without a TLS listener)."""
        return self._tls.port if self._tls is not None and self.tls_options and self.tls_options.cert_file else None

    @property
    def active_calls(self) -> int:
        """Calls not yet ended (a leak check for long runs)."""
        return len(self._cores)

    @property
    def running(self) -> bool:
        return self._state == "running"

    async def start(self) -> None:
        """Bind the socket and start the reactor (in its own thread unless ``own_reactor_thread=False``)."""
        global _running
        if self._state != "new":
            raise SipStackStateError(f"SipStack cannot be started from state {self._state}")
        with _running_lock:
            if _running is not None:
                raise SipStackStateError("another SipStack is running in this process (sippy state is global)")
            _running = self
        self._state = "starting"
        if self.own_reactor_thread:
            self._thread = threading.Thread(target=self.run_reactor, name="sippy-reactor", daemon=True)
            self._thread.start()
        try:
            self.local_port = await asyncio.wrap_future(self._life.ready)
        except BaseException:
            self._release()
            raise
        self._state = "running"
        log.info("SIP stack listening on udp:%s:%d", self.local_host, self.local_port)

    def run_reactor(self) -> None:
        """Run sippy's reactor in the calling thread until ``stop()``; call this yourself when
        ``own_reactor_thread=False`` (e.g. a CLI that gives the main thread to sippy for faster wake-ups)."""
        with self._reactor_lock:
            if self._state == "stopped":
                if not self._life.ready.done():
                    self._life.ready.set_exception(SipStackStateError("stopped before the reactor ran"))
                return
            self._reactor_entered = True
        ED2.my_ident = threading.get_ident()
        try:
            port = self._setup_on_reactor()
        except BaseException as exc:
            self._life.ready.set_exception(exc)
            self._after_loop()
            return
        self._life.ready.set_result(port)
        try:
            ED2.loop(freq=self.reactor_hz)
        finally:
            self._after_loop()

    def _setup_on_reactor(self) -> int:
        _redirect_sippy_output()
        _stats_sink[:] = [self._stats]
        SipConf.my_address = self.local_host
        SipConf.my_uaname = self.user_agent
        gc: dict[str, Any] = {
            "_sip_address": self.local_host,
            "_sip_port": self.local_port,
            "_sip_logger": _WireLogger(),
        }
        self._gc = gc
        stream_sock = None
        if self.tcp_options is not None:
            stream_sock = bind_listener(self.local_host, self.local_port)
            gc["_sip_port"] = stream_sock.getsockname()[1]
        try:
            tm = _GuardedTM(gc, self._on_request, self._guard)
        except BaseException:
            if stream_sock is not None:
                stream_sock.close()
            raise
        server = next(iter(tm.l4r.cache_l2s.values()))
        self._udp = server
        port = int(server.uopts.laddress[1])
        gc["_sip_port"] = port
        SipConf.my_port = MyPort(port)  # printed as the sending transport's port (TLS listens elsewhere)
        gc["_sip_tm"] = tm
        self._tm = tm
        if self.tcp_options is not None:
            self._tcp = TcpTransport(
                (self.local_host, port), tm.handleIncoming, self.tcp_options, tm.transport_failed, stream_sock
            )
            tm.streams["tcp"] = self._tcp
        if self.tls_options is not None:
            self._tls = TcpTransport(
                (self.local_host, self.tls_options.port if self.tls_options.cert_file else port), tm.handleIncoming,
                self.tcp_options or TcpOptions(),
                tm.transport_failed, tls_server=server_context(self.tls_options),
                tls_client=client_context(self.tls_options), tls_pin=self.tls_options.pin,
                listen=self.tls_options.cert_file is not None,
            )  # fmt: skip
            tm.streams["tls"] = self._tls
        return port

    async def stop(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Hang up every call, unregister, close every socket and join the reactor thread. Idempotent."""
        with self._reactor_lock:
            if self._state == "stopped":
                return
            if not self._reactor_entered:
                # Nobody runs (or will run) the reactor for this stack: nothing to hang up or close.
                self._state = "stopped"
                self._release()
                return
            first = self._state != "stopping"
            self._state = "stopping"
        if first and not self._life.stopped.done():
            ED2.callFromThread(self._begin_shutdown, grace_s)
        await asyncio.wrap_future(self._life.stopped)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, THREAD_JOIN_S)
            if self._thread.is_alive():
                log.error("sippy reactor thread did not exit within %.0f s", THREAD_JOIN_S)
        self._state = "stopped"

    def _begin_shutdown(self, grace_s: float) -> None:
        if self._tm is None:  # the reactor already wound down (e.g. setup failed)
            return
        for core in list(self._cores):
            try:
                core.hangup("stack shutdown")
            except Exception:
                log.exception("hang-up during shutdown failed for %s", core.call.call_id)
        for reg in self._regs:
            if not reg.closed and reg.granted > 0:
                reg.start_unregister(None)
            else:
                reg.close()
        deadline = time.monotonic() + grace_s
        self._poll_shutdown(deadline)

    def _poll_shutdown(self, deadline: float) -> None:
        busy = [t for t in self._tm.tclient.values() if t.state in (TRYING, RINGING)]
        # A final response we sent (e.g. a 488 refusal) is retransmitted until its ACK arrives: closing the
        # socket before that could leave the caller without the answer (seen under load with `listen --once`).
        busy += [t for t in self._tm.tserver.values() if t.state is COMPLETED and getattr(t, "needack", False)]
        if busy and time.monotonic() < deadline:
            Timeout(self._poll_shutdown, SHUTDOWN_POLL_S, 1, deadline)
            return
        if busy:
            log.warning("closing SIP socket with %d transaction(s) unanswered or unacknowledged", len(busy))
        for reg in self._regs:
            reg.close()
        ED2.breakLoop()

    def _after_loop(self) -> None:
        try:
            if self._tm is not None:
                with contextlib.suppress(Exception):
                    self._tm.cp_timer.cancel()
                for stream in (self._tcp, self._tls):
                    if stream is not None:
                        stream.shutdown()
                self._tm.l4r.shutdown()  # joins sippy's socket threads and closes the socket
            # Timers of dead dialogs would fire into the next stack started in this process.
            ED2.tlisteners = []
            ED2.twasted = 0
        finally:
            self._tm = None
            self._gc.clear()
            self._cores.clear()
            self._regs.clear()
            self._release()
            if not self._life.stopped.done():
                self._life.stopped.set_result(None)

    def _release(self) -> None:
        global _running
        with _running_lock:
            if _running is self:
                _running = None
            _stats_sink[:] = []

    # plumbing ----------------------------------------------------------------------------------------------
    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        """asyncio -> reactor."""
        if self._state != "running":
            raise SipStackStateError(f"SIP stack is {self._state}")
        ED2.callFromThread(fn, *args)

    def _deliver(self, fn: Callable[..., Any], *args: Any) -> None:
        """reactor -> asyncio."""
        with contextlib.suppress(RuntimeError):  # loop already closed: nobody is listening any more
            self.loop.call_soon_threadsafe(fn, *args)

    def _check_running(self) -> None:
        if self._state != "running":
            raise SipStackStateError(f"SIP stack is {self._state}")

    def _contact(self, username: str | None) -> Any:
        # The "my" placeholders print as the sending transport's name (";transport=tcp", nothing over UDP) and
        # listening port (the TLS port differs from the UDP/TCP one).
        url = SipURL(
            username=username, host=self.local_host, port=MyPort(self.local_port), transport=SipConf.my_transport
        )
        return SipContact(address=SipAddress(url=url))

    def _on_ua_event(self, event: Any, ua: Any) -> None:
        core = getattr(ua, "voipgw_core", None)
        if core is None:
            return
        if isinstance(event, CCEventTry):
            self._on_incoming_try(core, event)
            return
        core.on_event(event)

    # outgoing ----------------------------------------------------------------------------------------------
    async def place_call(
        self,
        target_uri: str,
        from_aor: str,
        offer_sdp_factory: OfferFactory,
        *,
        display_name: str | None = None,
        proxy: tuple[str, int] | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = DEFAULT_NO_ANSWER_S,
        transport: str | None = None,
    ) -> OutgoingCall:
        """Send an INVITE. The factory gets the Call-ID first and returns the offer SDP, sent byte for byte.

        Without ``proxy`` the request goes to the target URI's host:port. A 401/407 is answered with digest
        credentials when ``username``/``password`` are given. Unanswered after ``timeout_s``: CANCEL and
        ``Failed(408, "No answer")``. ``transport="tcp"`` (or a ``;transport=tcp`` target) sends the INVITE
        over TCP; otherwise UDP, switching to TCP by itself when the INVITE exceeds 1300 bytes.
        """
        self._check_running()
        target = _parse_uri(target_uri)
        from_url = _parse_uri(from_aor)
        next_hop = proxy if proxy is not None else (str(target.host), int(target.port or 5060))
        nh_transport = self._pick_transport(transport, target)
        # 120 random bits in 30 hex digits: unique enough, and below the 32-digit runs the log redactor takes for
        # key material, so operators can grep logs by Call-ID.
        call_id = secrets.token_hex(15)
        sdp = offer_sdp_factory(call_id)
        call = OutgoingCall(self, call_id, outgoing=True)
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._post(
            self._start_outgoing, call, target, from_url, (next_hop, nh_transport), sdp, display_name, username,
            password, timeout_s, done,
        )  # fmt: skip
        await asyncio.wrap_future(done)
        return call

    def _start_outgoing(
        self,
        call: OutgoingCall,
        target: Any,
        from_url: Any,
        next_hop: tuple[tuple[str, int], str],
        sdp: str,
        display: str | None,
        username: str | None,
        password: str | None,
        timeout_s: float,
        done: concurrent.futures.Future[None],
    ) -> None:
        try:
            core = _CallCore(self, call)
            ua = _UA(
                self._gc, self._on_ua_event, username=username, password=password, nh_address=next_hop[0],
                nh_transport=next_hop[1],
            )  # fmt: skip
            ua.voipgw_core = core
            ua.lContact = self._contact(from_url.username)
            core.ua = ua
            call._core = core
            self._cores.add(core)
            ev = _SetupTry(
                (SipCallId(call.call_id), from_url.username, target.username, MsgBody(sdp), None, display),
                target,
                from_url,
                display,
            )
            ua.recvEvent(ev)
            core.timer = Timeout(core.no_answer, timeout_s)
        except BaseException as exc:
            done.set_exception(exc)
            return
        done.set_result(None)

    def _pick_transport(self, transport: str | None, target: Any) -> str:
        default = "tls" if getattr(target, "scheme", "sip") == "sips" else str(target.transport or "udp")
        wanted = (transport or default).lower()
        if wanted not in ("udp", "tcp", "tls"):
            raise ValueError(f"unsupported SIP transport {wanted!r} (udp, tcp or tls)")
        if (wanted == "tcp" and self._tcp is None) or (wanted == "tls" and self._tls is None):
            raise SipStackStateError(
                f"SIP over {wanted.upper()} is not enabled on this stack (SipStack(..., {wanted}=))"
            )
        return wanted

    # incoming ----------------------------------------------------------------------------------------------
    def _on_request(self, req: Any, sip_t: Any) -> Any:
        # sippy calls this without error handling of its own: an exception would leave the sender unanswered.
        try:
            return self._handle_request(req, sip_t)
        except Exception as exc:
            self._stats.sippy_errors += 1
            _sippy_ratelog("request", logging.ERROR, "failed to handle a %s: %r", req.getMethod(), exc)
            log.debug("request handling failed", exc_info=True)
            if req.getMethod() == "ACK":
                return None
            with contextlib.suppress(Exception):
                return (req.genResponse(500, "Server Internal Error"), None, None)
            return None

    def _handle_request(self, req: Any, sip_t: Any) -> Any:
        method = req.getMethod()
        if method == "ACK":
            return None
        if req.getHFBody("to").getTag() is not None:
            return (req.genResponse(481, "Call/Transaction Does Not Exist"), None, None)
        if method == "REGISTER":
            if self.registrar is None:
                return (self._reply(req, 405, "Method Not Allowed", (("Allow", ALLOW),)), None, None)
            return (self._on_register(req, self.registrar), None, None)
        if method == "INVITE":
            if self._state != "running":
                return (req.genResponse(503, "Service Unavailable"), None, None)
            from_hf = req.getHFBody("from")
            to_hf = req.getHFBody("to")
            source = req.getSource()
            src = getattr(source, "address", source)
            src_addr = (str(src[0]), int(src[1]))
            authenticated: str | None = None
            from_user = str(from_hf.getUrl().username or "")
            pred = self._invite_auth
            if pred is not None and self.registrar is not None and self.registrar.authenticator is not None:
                try:
                    must = pred(src_addr, from_user)
                except Exception:
                    log.exception("authenticate_invites predicate failed; challenging the INVITE")
                    must = True
                if must:
                    verdict = self.registrar.authenticator.verify(_auth_values(req), "INVITE", from_user)
                    if isinstance(verdict, Challenge):
                        self._stats.auth_challenged += 1
                        extra = tuple(("WWW-Authenticate", h) for h in verdict.headers)
                        return (self._reply(req, 401, "Unauthorized", extra), None, None)
                    if not isinstance(verdict, Authenticated):
                        self._stats.auth_refused += 1
                        log.warning("INVITE from %s:%d as %r refused: %s", *src_addr, from_user, verdict.reason)
                        return (self._reply(req, 403, "Forbidden"), None, None)
                    authenticated = verdict.user
            # Credentials were checked above (or are not ours to check). sippy's UAS would parse the header
            # itself, after sending 100 and registering the dialog, and its parser raises on valid input
            # (a quoted comma): the INVITE then failed with a dialog left registered for its Call-ID.
            req.delHFs("authorization")
            call = IncomingCall(
                self,
                call_id=str(req.getHFBody("call-id")),
                from_aor=_aor(from_hf.getUrl()),
                to_aor=_aor(to_hf.getUrl()),
                from_display=from_hf.getUri().name or None,
                remote_sdp=None,
                source_addr=src_addr,
                authenticated_user=authenticated,
            )
            core = _CallCore(self, call)
            ua = _UA(self._gc, self._on_ua_event)
            ua.voipgw_core = core
            ua.lContact = self._contact(req.getRURI().username)
            core.ua = ua
            call._core = core
            self._cores.add(core)
            try:
                return ua.recvRequest(req, sip_t)
            except Exception as exc:
                # sippy parses headers lazily, so a mangled Contact or Record-Route only fails here, possibly
                # after the UA registered itself for this Call-ID: drop that, or the caller's next INVITE with
                # the same Call-ID would be fed to this dead UA.
                with contextlib.suppress(Exception):
                    self._tm.unregConsumer(ua, call.call_id)
                self._cores.discard(core)
                self._stats.sippy_errors += 1
                _sippy_ratelog("invite", logging.WARNING, "unusable INVITE from %s: %r", src, exc)
                return (req.genResponse(400, "Bad Request"), None, None)
        if method == "OPTIONS":
            return (req.genResponse(200, "OK"), None, None)
        return (req.genResponse(501, "Not Implemented"), None, None)

    def _reply(self, req: Any, code: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> Any:
        resp = req.genResponse(code, reason, server=None)
        for name, value in headers:
            resp.appendHeader(SipHeader(name=name.lower(), bodys=value))
        return resp

    def _on_register(self, req: Any, registrar: Registrar) -> Any:
        """Parse a REGISTER into a RegisterRequest (400 if its Contact/Expires are malformed) and answer it."""
        source = req.getSource()
        src = getattr(source, "address", source)
        try:
            parsed = self._register_request(req, (str(src[0]), int(src[1])))
        except _BadRegister as exc:
            self._stats.register_malformed += 1
            _sippy_ratelog("register", logging.WARNING, "malformed REGISTER from %s: %s", src, exc)
            warning = str(exc).replace('"', "'")[:120]
            return self._reply(req, 400, "Bad Request", (("Warning", f'399 {self.local_host} "{warning}"'),))
        reply: RegisterReply = registrar.handle_register(parsed)
        if reply.code == 200:
            self._stats.register_ok += 1
        elif reply.code == 401:
            self._stats.auth_challenged += 1
        elif reply.code == 400:
            self._stats.register_malformed += 1
        elif reply.code == 403:
            self._stats.auth_refused += 1
            log.warning("REGISTER for %r from %s:%d refused (403)", parsed.user, *parsed.source)
        headers = list(reply.headers)
        headers += [("Contact", f"<{uri}>;expires={secs}") for uri, secs in reply.contacts]
        if reply.code == 200 and not reply.contacts:
            headers.append(("Expires", "0"))
        return self._reply(req, reply.code, reply.reason, tuple(headers))

    def _register_request(self, req: Any, source: tuple[str, int]) -> RegisterRequest:
        user = req.getHFBody("to").getUrl().username
        if not user:
            raise _BadRegister("To has no user part")
        expires: int | None = None
        if req.countHFs("expires"):
            text = str(req.getHFs("expires")[0].body).strip()
            if not text.isdigit() or len(text) > 10:
                raise _BadRegister("Expires is not a number of seconds")
            expires = int(text)
        contacts: list[ContactSpec] = []
        wildcard = False
        for hf in req.getHFs("contact"):
            try:
                body = hf.getBody()
                if body.asterisk:
                    wildcard = True
                    continue
                url = body.getUrl()
                if url is None or not url.host:
                    raise ValueError("no host")
                value = body.address.params.get("expires")
                uri = str(url)
            except Exception as exc:
                raise _BadRegister(f"unparsable Contact: {type(exc).__name__}") from None
            c_exp: int | None = None
            if value is not None:
                if not str(value).isdigit() or len(str(value)) > 10:
                    raise _BadRegister("Contact expires is not a number")
                c_exp = int(value)
            contacts.append(ContactSpec(uri, c_exp))
        if wildcard and contacts:
            raise _BadRegister("Contact: * mixed with other contacts")
        agent = str(req.getHFs("user-agent")[0].body)[:200] if req.countHFs("user-agent") else None
        return RegisterRequest(
            user=str(user),
            contacts=tuple(contacts),
            wildcard=wildcard,
            expires_header=expires,
            authorization=tuple(_auth_values(req)),
            source=source,
            user_agent=agent,
            call_id=str(req.getHFBody("call-id")),
            cseq=int(req.getHFBody("cseq").getCSeqNum()),
        )

    def _on_incoming_try(self, core: _CallCore, event: Any) -> None:
        call = core.call
        assert isinstance(call, IncomingCall)
        body = event.getData()[3]
        call.remote_sdp = None if body is None else str(body)
        self._deliver(self.incoming.put_nowait, call)

    # registration ------------------------------------------------------------------------------------------
    async def register(
        self,
        registrar: tuple[str, int],
        aor: str,
        username: str | None = None,
        password: str | None = None,
        *,
        expires: int = 300,
        timeout_s: float = 10.0,
        keep_trying: bool = False,
        on_change: Callable[[RegistrationState], None] | None = None,
        transport: str = "udp",
    ) -> Registration:
        """REGISTER ``aor`` (digest auth on 401/407) and keep it refreshed at 60 % of the granted expiry.

        Waits up to ``timeout_s`` for the first outcome. Without ``keep_trying`` a refused or unanswered first
        attempt raises RegistrationFailed; with it, register() never raises for that: it returns the handle
        (``state`` shows the outcome so far) and retries in the background with backoff (1 s doubling to 60 s,
        +-20 %). Once granted, a failed refresh (timeout, 5xx, 403...) goes to that backoff in both modes, so a
        restarted registrar that lost its location table is re-populated by the next refresh or retry.
        ``on_change(state)`` runs on this loop whenever ``registered`` flips or the status code changes.
        """
        self._check_running()
        aor_url = _parse_uri(aor)
        reg_transport = self._pick_transport(transport, aor_url)
        handle = Registration(self, _aor(aor_url), on_change)
        waiter: concurrent.futures.Future[RegistrationState] = concurrent.futures.Future()
        self._post(
            self._start_register, handle, aor_url, (registrar, reg_transport), username, password, expires,
            keep_trying, waiter,
        )  # fmt: skip
        try:
            state = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(waiter)), timeout_s)
        except TimeoutError:
            if keep_trying:
                return handle
            self._post(self._close_reg, handle)
            raise RegistrationFailed(408, "registrar did not answer") from None
        if handle.state.code == 0:
            # Normally already applied: the reactor queues the update before it resolves the waiter. Never
            # overwrite a newer outcome with this first one.
            handle._update(state)
        if not state.registered and not keep_trying:
            self._post(self._close_reg, handle)
            raise RegistrationFailed(state.code, state.reason)
        return handle

    def _start_register(
        self,
        handle: Registration,
        aor_url: Any,
        registrar: tuple[tuple[str, int], str],
        username: str | None,
        password: str | None,
        expires: int,
        keep_trying: bool,
        waiter: concurrent.futures.Future[RegistrationState],
    ) -> None:
        try:
            ruri = aor_url.getCopy()
            ruri.username = None
            addr = SipAddress(url=aor_url.getCopy())
            fr0m = SipFrom(address=addr.getCopy())
            fr0m.genTag()
            rmsg = SipRequest(
                method="REGISTER",
                ruri=ruri,
                fr0m=fr0m,
                to=SipTo(address=addr),
                contact=self._contact(aor_url.username),
                target=(tuple(registrar[0]), registrar[1]),
            )
            core = _RegCore(self, handle, rmsg, username, password, expires, keep_trying=keep_trying, waiter=waiter)
            handle._core = core
            self._regs.append(core)
            core.send()
        except BaseException as exc:
            waiter.set_exception(exc)

    def _close_reg(self, handle: Registration) -> None:
        if handle._core is not None:
            handle._core.close()

    async def _unregister(self, handle: Registration, timeout_s: float) -> RegistrationState:
        self._check_running()
        waiter: concurrent.futures.Future[RegistrationState] = concurrent.futures.Future()
        self._post(self._start_unregister, handle, waiter)
        try:
            state = await asyncio.wait_for(asyncio.wrap_future(waiter), timeout_s)
        except TimeoutError:
            raise RegistrationFailed(408, "registrar did not answer the unregister") from None
        handle._update(state)
        return state

    def _start_unregister(self, handle: Registration, waiter: concurrent.futures.Future[RegistrationState]) -> None:
        if handle._core is None:
            waiter.set_result(RegistrationState(handle.aor, False, 0, "not registered", 0))
            return
        handle._core.start_unregister(waiter)


__all__ = [
    "CallStateError",
    "IncomingCall",
    "InviteAuthPredicate",
    "OutgoingCall",
    "Registration",
    "SipCall",
    "SipStack",
]
