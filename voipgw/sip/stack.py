"""The SIP stack: owns sippy's reactor thread and its sockets, starts and stops them, and dispatches requests.

sippy objects are touched only on the reactor thread (asyncio -> reactor via ``ED2.callFromThread``,
reactor -> asyncio via ``loop.call_soon_threadsafe``). SDP bodies pass through as opaque strings. The rest of
the package: dialogs in ``dialog.py``, client registration in ``registration.py`` (both reach this module only
through the ``Reactor`` protocol in ``reactor.py``), sippy workarounds in ``sippy_glue.py``, URIs in ``uri.py``.

Theory of operation
-------------------
sippy keeps process-wide state: the ``ED2`` reactor singleton, ``SipConf`` defaults (address, port,
User-Agent) and module-level helpers. Hence at most one ``SipStack`` runs per process at a time. ``stop()``
hangs up every call (BYE / CANCEL / 487), unregisters, waits (bounded) for those transactions, closes every
socket, drops the reactor's leftover timers and joins the thread, so a *new* ``SipStack`` can then be started
in the same process (tests do this). A stopped ``SipStack`` object itself cannot be started again; two
concurrent stacks need two processes. In a worker thread the reactor notices cross-thread calls only at its
tick, so every hand-over goes through ``wake.call_on_reactor``, which also wakes the reactor thread with a
signal: a hop takes ~0.2 ms and ``reactor_hz`` (100) only paces sippy's timers (at 1000 Hz the ticks alone cost
4 % of a core and a GIL hand-over per relayed packet). On the main thread (``own_reactor_thread=False``; see
``mainthread.MainThreadReactor``) sippy wakes by signal by itself; ``voipgw.sip`` must be imported on that
thread first (ED2 binds it at import).

Registrar and INVITE auth: pass ``SipStack(..., registrar=Registrar(...))`` (the constructor argument, also
readable as ``stack.registrar``; do not swap it after ``start()``). REGISTER is then answered by it (405
without one), and ``authenticate_invites(predicate)`` challenges chosen INVITEs with the registrar's digest
authenticator before any dialog state exists, so a challenged INVITE never reaches ``incoming``.
Registrations (``register``) retry refused or unanswered attempts with jittered exponential backoff once
granted (and from the start with ``keep_trying=True``); each attempt has its own deadline instead of sippy's
32 s Timer F. Request dispatch works around sippy's bad-input handling too: Authorization headers are checked
by ``voipgw.sip.digest`` and stripped before sippy's UAS parses them, and a half-set-up UA is unregistered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sippy.CCEvents import CCEventTry
from sippy.Core.EventDispatcher import ED2
from sippy.MsgBody import MsgBody
from sippy.SipAddress import SipAddress
from sippy.SipCallId import SipCallId
from sippy.SipConf import MyPort, SipConf
from sippy.SipContact import SipContact
from sippy.SipTransactionManager import COMPLETED, RINGING, TRYING
from sippy.SipURL import SipURL
from sippy.Time.Timeout import Timeout

from voipgw.sip.dialog import CallCore, IncomingCall, OutgoingCall, SipCall, extra_headers
from voipgw.sip.digest import Authenticated, Challenge
from voipgw.sip.events import CallStateError, RegistrationState, SipStackStateError
from voipgw.sip.guard import DatagramGuard, SipStats
from voipgw.sip.register_uas import answer_register
from voipgw.sip.registrar import Registrar
from voipgw.sip.registration import RegCore, Registration
from voipgw.sip.registration import register as _register
from voipgw.sip.sippy_glue import (
    GuardedTM,
    SetupTry,
    WarningUA,
    WireLogger,
    auth_values,
    count_sippy_errors_in,
    offers_100rel,
    parse_sip_url,
    redirect_sippy_output,
    response_to,
    sippy_ratelog,
)
from voipgw.sip.tcp import TcpOptions, TcpStats, TcpTransport, bind_listener
from voipgw.sip.tls import TlsOptions, client_context, server_context
from voipgw.sip.uri import aor
from voipgw.sip.wake import call_on_reactor, reactor_thread_ending, reactor_thread_started
from voipgw.sip.zone import Refusal, RequestFacts, Screen, Zone

log = logging.getLogger("voipgw.sip")

DEFAULT_REACTOR_HZ = 100.0
DEFAULT_NO_ANSWER_S = 60.0
SHUTDOWN_GRACE_S = 2.0
"""How long stop() waits for the BYE/CANCEL/unREGISTER transactions to complete before closing sockets."""
SHUTDOWN_POLL_S = 0.01
THREAD_JOIN_S = 5.0

_running_lock = threading.Lock()
_running: SipStack | None = None

OfferFactory = Callable[[str], str]
InviteAuthPredicate = Callable[[tuple[str, int], str], bool]
"""(source address, From user) -> True when that INVITE must carry valid digest credentials for the user."""


ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK"
_PHRASES = {403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}


def _aor_of(url: Any) -> str:
    return aor(url.username, url.host, url.port)


# --- the stack ----------------------------------------------------------------------------------------------


class _StackState(enum.Enum):
    """new -> starting -> running -> stopping -> stopped (or new -> stopped when no reactor ever ran)."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


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
        inside: tuple[str, int] | None = None,
        inside_tls: TlsOptions | None = None,
    ) -> None:
        """``inside``: a second UDP listener, the inside zone's (a gateway's phones); ``local_host:local_port`` is
        then the outside zone's, where registrations, TCP and TLS live. Each incoming call says which listener it
        arrived on (``IncomingCall.zone``); REGISTER is answered on the inside listener only (403 on the outside
        one), and ``place_call(zone=Zone.INSIDE)`` sends from the inside listener.

        ``tcp``: also listen for SIP over TCP on the same port number (limits in TcpOptions); requests over 1300
        bytes, or to a ``;transport=tcp`` target, then go over TCP. ``tls``: SIP over TLS for ``;transport=tls`` targets
        (same limits), listening on ``tls.port`` when it has a certificate.

        ``inside_tls`` (with ``inside`` and a certificate): the inside zone's own SIP-over-TLS listener, on the inside
        host at ``inside_tls.port``, for phones that carry SDES-SRTP keys. Requests arriving on it are the inside
        zone's like those on the inside UDP socket (registrar, digest auth, screening), and inside dialogs reach
        phones with ``;transport=tls`` contacts from it; ``tls`` is then the outside zone's (the PBX's) alone."""
        if inside_tls is not None and (inside is None or inside_tls.cert_file is None):
            raise ValueError("inside_tls needs an inside listener and a certificate (cert_file) to listen with")
        self.tcp_options = tcp
        self.tls_options = tls
        self._tcp: TcpTransport | None = None
        self._tls: TcpTransport | None = None
        self.registrar = registrar
        """Answers REGISTER (see ``voipgw.sip.registrar``); None: REGISTER gets 405. Fixed once started."""
        self._invite_auth: InviteAuthPredicate | None = None
        self._screen: Screen | None = None
        self.inside_listen = inside
        """The inside listener's address as asked (its bound port is ``inside_port`` once started)."""
        self._inside_udp: Any = None
        self.inside_tls_options = inside_tls
        self._inside_tls: TcpTransport | None = None
        self.local_host = local_host
        self.local_port = local_port
        self.loop = loop
        self.user_agent = user_agent
        self.reactor_hz = reactor_hz
        self.own_reactor_thread = own_reactor_thread
        self.incoming: asyncio.Queue[IncomingCall] = asyncio.Queue()
        self._stats = SipStats()
        self._guard = DatagramGuard(local_host, user_agent, self._stats)
        self._cores: set[CallCore] = set()
        self._regs: list[RegCore] = []
        self._tm: Any = None
        self._udp: Any = None
        self._gc: dict[str, Any] = {}
        self._thread: threading.Thread | None = None
        self._life = _Lifecycle()
        self._state = _StackState.NEW
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

    def screen_requests(self, screen: Screen | None) -> None:
        """Run ``screen`` on every out-of-dialog REGISTER and INVITE before anything else looks at it (reactor
        thread; keep it quick): a Refusal is answered with its code and a Warning, counted by its reason in
        ``stats.refused`` and logged (rate-limited). None turns screening off."""
        self._screen = screen

    @property
    def inside_port(self) -> int | None:
        """The inside listener's bound port (None without one, or before start)."""
        server = self._inside_udp
        return None if server is None else int(server.uopts.laddress[1])

    def _count_refused(self, reason: str) -> None:
        self._stats.refused[reason] = self._stats.refused.get(reason, 0) + 1

    def _count_cross_zone(self) -> None:
        self._count_refused("cross_zone_in_dialog")
        sippy_ratelog("cross-zone", logging.WARNING, "an in-dialog request arrived on the other zone's listener: 481")

    def _zone_of(self, sip_t: Any) -> Zone:
        # The inside UDP socket and the inside TLS listener are the inside zone's; the main socket and the other
        # streams (TCP, and TLS without inside_tls) serve the outside (the PBX).
        tm = self._tm
        inside = tm is not None and self._inside_udp is not None and tm.is_inside(getattr(sip_t, "userv", None))
        return Zone.INSIDE if inside else Zone.OUTSIDE

    def _refuse(self, req: Any, refusal: Refusal, source: tuple[str, int], zone: Zone) -> Any:
        self._count_refused(refusal.reason)
        sippy_ratelog(
            f"refused-{refusal.reason}", logging.WARNING, "%s from %s:%d on the %s listener refused (%d): %s",
            req.getMethod(), source[0], source[1], zone.value, refusal.code, refusal.why,
        )  # fmt: skip
        why = refusal.why.replace('"', "'")[:160]
        warning = ("Warning", f'399 {self.local_host} "voipgw gateway: {why}"')
        return (response_to(req, refusal.code, _PHRASES.get(refusal.code, "Forbidden"), (warning,)), None, None)

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
        """The (outside) TLS listening port once started (None without a TLS listener)."""
        return self._tls.port if self._tls is not None and self.tls_options and self.tls_options.cert_file else None

    @property
    def inside_tls_port(self) -> int | None:
        """The inside zone's TLS listening port once started (None without ``inside_tls``)."""
        return self._inside_tls.port if self._inside_tls is not None else None

    @property
    def inside_tls_stats(self) -> TcpStats | None:
        return self._inside_tls.stats if self._inside_tls is not None else None

    @property
    def active_calls(self) -> int:
        """Calls not yet ended (a leak check for long runs)."""
        return len(self._cores)

    @property
    def running(self) -> bool:
        return self._state is _StackState.RUNNING

    async def start(self) -> None:
        """Bind the socket and start the reactor (in its own thread unless ``own_reactor_thread=False``)."""
        global _running
        if self._state is not _StackState.NEW:
            raise SipStackStateError(f"SipStack cannot be started from state {self._state.value}")
        with _running_lock:
            if _running is not None:
                raise SipStackStateError("another SipStack is running in this process (sippy state is global)")
            _running = self
        self._state = _StackState.STARTING
        if self.own_reactor_thread:
            self._thread = threading.Thread(target=self.run_reactor, name="sippy-reactor", daemon=True)
            self._thread.start()
        try:
            self.local_port = await asyncio.wrap_future(self._life.ready)
        except BaseException:
            self._release()
            raise
        self._state = _StackState.RUNNING
        log.info("SIP stack listening on udp:%s:%d", self.local_host, self.local_port)

    def run_reactor(self) -> None:
        """Run sippy's reactor in the calling thread until ``stop()``; call this yourself when
        ``own_reactor_thread=False`` (e.g. a CLI that gives the main thread to sippy for faster wake-ups)."""
        with self._reactor_lock:
            if self._state is _StackState.STOPPED:
                if not self._life.ready.done():
                    self._life.ready.set_exception(SipStackStateError("stopped before the reactor ran"))
                return
            self._reactor_entered = True
        ED2.my_ident = threading.get_ident()
        if self.own_reactor_thread:
            reactor_thread_started(ED2.my_ident)
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
        redirect_sippy_output()
        count_sippy_errors_in(self._stats)
        SipConf.my_address = self.local_host
        SipConf.my_uaname = self.user_agent
        gc: dict[str, Any] = {
            "_sip_address": self.local_host,
            "_sip_port": self.local_port,
            "_sip_logger": WireLogger(),
        }
        self._gc = gc
        stream_sock = None
        if self.tcp_options is not None:
            stream_sock = bind_listener(self.local_host, self.local_port)
            gc["_sip_port"] = stream_sock.getsockname()[1]
        try:
            tm = GuardedTM(gc, self._on_request, self._guard)
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
        if self.inside_listen is not None:
            self._inside_udp = tm.inside_server = tm.l4r.add_listener(self.inside_listen)
            tm.on_cross_zone = self._count_cross_zone
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
        opts = self.inside_tls_options
        if opts is not None and self.inside_listen is not None:
            self._inside_tls = TcpTransport(
                (self.inside_listen[0], opts.port), tm.handleIncoming, self.tcp_options or TcpOptions(),
                tm.transport_failed, tls_server=server_context(opts), tls_client=client_context(opts),
                tls_pin=opts.pin,
            )  # fmt: skip
            tm.inside_streams["tls"] = self._inside_tls
        return port

    async def stop(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Hang up every call, unregister, close every socket and join the reactor thread. Idempotent."""
        with self._reactor_lock:
            if self._state is _StackState.STOPPED:
                return
            if not self._reactor_entered:
                # Nobody runs (or will run) the reactor for this stack: nothing to hang up or close.
                self._state = _StackState.STOPPED
                self._release()
                return
            first = self._state is not _StackState.STOPPING
            self._state = _StackState.STOPPING
        if first and not self._life.stopped.done():
            call_on_reactor(self._begin_shutdown, grace_s)
        await asyncio.wrap_future(self._life.stopped)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, THREAD_JOIN_S)
            if self._thread.is_alive():
                log.error("sippy reactor thread did not exit within %.0f s", THREAD_JOIN_S)
        self._state = _StackState.STOPPED

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
        reactor_thread_ending()  # first: nothing may signal this thread once it can return
        try:
            if self._tm is not None:
                with contextlib.suppress(Exception):
                    self._tm.cp_timer.cancel()
                for stream in (self._tcp, self._tls, self._inside_tls):
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
            count_sippy_errors_in(None)

    # the Reactor protocol (voipgw.sip.reactor): what dialogs and registrations use; not for applications ------
    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """asyncio -> reactor."""
        self._check_running()
        call_on_reactor(fn, *args)

    def deliver(self, fn: Callable[..., Any], *args: Any) -> None:
        """reactor -> asyncio."""
        with contextlib.suppress(RuntimeError):  # loop already closed: nobody is listening any more
            self.loop.call_soon_threadsafe(fn, *args)

    def contact(self, username: str | None, zone: Zone = Zone.OUTSIDE) -> Any:
        if zone is Zone.INSIDE and self._inside_udp is not None:
            host, port = self._inside_udp.uopts.laddress[:2]
            if self._inside_tls is None:
                return SipContact(address=SipAddress(url=SipURL(username=username, host=str(host), port=int(port))))
            # Placeholders again: over UDP they print the inside socket's port, over TLS the inside TLS listener's.
            url = SipURL(username=username, host=str(host), port=MyPort(int(port)), transport=SipConf.my_transport)
            return SipContact(address=SipAddress(url=url))
        # The "my" placeholders print as the sending transport's name (";transport=tcp", nothing over UDP) and
        # listening port (the TLS port differs from the UDP/TCP one).
        url = SipURL(
            username=username, host=self.local_host, port=MyPort(self.local_port), transport=SipConf.my_transport
        )
        return SipContact(address=SipAddress(url=url))

    def pick_transport(self, transport: str | None, target: Any, zone: Zone = Zone.OUTSIDE) -> str:
        default = "tls" if getattr(target, "scheme", "sip") == "sips" else str(target.transport or "udp")
        wanted = (transport or default).lower()
        if wanted not in ("udp", "tcp", "tls"):
            raise ValueError(f"unsupported SIP transport {wanted!r} (udp, tcp or tls)")
        tls = self._inside_tls if zone is Zone.INSIDE and self._inside_tls is not None else self._tls
        if (wanted == "tcp" and self._tcp is None) or (wanted == "tls" and tls is None):
            raise SipStackStateError(
                f"SIP over {wanted.upper()} is not enabled on this stack (SipStack(..., {wanted}=))"
            )
        return wanted

    def new_transaction(self, msg: Any, on_reply: Callable[[Any], None]) -> Any:
        return self._tm.newTransaction(msg, on_reply)

    def time_out_transaction(self, tx: Any) -> None:
        self._tm.timerB(tx)

    def dialog_ended(self, core: Any) -> None:
        self._cores.discard(core)

    def count(self, counter: str) -> None:
        setattr(self._stats, counter, getattr(self._stats, counter) + 1)

    def registration_started(self, core: Any) -> None:
        self._regs.append(core)

    def _check_running(self) -> None:
        if self._state is not _StackState.RUNNING:
            raise SipStackStateError(f"SIP stack is {self._state.value}")

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
        zone: Zone = Zone.OUTSIDE,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> OutgoingCall:
        """Send an INVITE. The factory gets the Call-ID first and returns the offer SDP, sent byte for byte.

        Without ``proxy`` the request goes to the target URI's host:port. A 401/407 is answered with digest
        credentials when ``username``/``password`` are given. Unanswered after ``timeout_s``: CANCEL and
        ``Failed(408, "No answer")``. ``transport="tcp"`` (or a ``;transport=tcp`` target) sends the INVITE
        over TCP; otherwise UDP, switching to TCP by itself when the INVITE exceeds 1300 bytes. ``zone`` INSIDE
        sends it (and the whole dialog) from the inside listener over UDP, or over TLS/TCP when the target asks.
        ``headers`` (name, value) are added to the INVITE (e.g. P-Asserted-Identity toward a phone).
        """
        self._check_running()
        target = parse_sip_url(target_uri)
        from_url = parse_sip_url(from_aor)
        next_hop = proxy if proxy is not None else (str(target.host), int(target.port or 5060))
        # An inside phone is reached over what its contact names: UDP from the inside listener, or TLS (a phone doing
        # SDES-SRTP) from the inside TLS listener (the outside stream listeners when the inside has none).
        nh_transport = self.pick_transport(transport, target, zone)
        # 120 random bits in 30 hex digits: unique enough, and below the 32-digit runs the log redactor takes for
        # key material, so operators can grep logs by Call-ID.
        call_id = secrets.token_hex(15)
        sdp = offer_sdp_factory(call_id)
        call = OutgoingCall(self, call_id, outgoing=True)
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.post(
            self._start_outgoing, call, target, from_url, (next_hop, nh_transport), sdp, display_name, username,
            password, timeout_s, done, zone, headers,
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
        zone: Zone = Zone.OUTSIDE,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        try:
            core = CallCore(self, call)
            ua = WarningUA(
                self._gc, self._on_ua_event, username=username, password=password, nh_address=next_hop[0],
                nh_transport=next_hop[1],
            )  # fmt: skip
            ua.voipgw_core = core
            self._bind_to_zone(ua, zone)
            ua.lContact = self.contact(from_url.username, zone)
            core.ua = ua
            self._cores.add(core)
            ev = SetupTry(
                (SipCallId(call.call_id), from_url.username, target.username, MsgBody(sdp), None, display),
                target,
                from_url,
                display,
            )
            if headers:
                ev.extra_headers = extra_headers(headers)
            ua.recvEvent(ev)
            core.timer = Timeout(core.no_answer, timeout_s)
        except BaseException as exc:
            done.set_exception(exc)
            return
        done.set_result(None)

    def _bind_to_zone(self, ua: Any, zone: Zone) -> None:
        """Every request of ``ua``'s dialog leaves from ``zone``'s listener (sippy passes ``source_address`` as the
        local address of each new transaction; ``ZonedLocal4Remote`` picks that socket)."""
        if zone is Zone.INSIDE and self._inside_udp is not None:
            ua.source_address = tuple(self._inside_udp.uopts.laddress[:2])

    # incoming ----------------------------------------------------------------------------------------------
    def _on_request(self, req: Any, sip_t: Any) -> Any:
        # sippy calls this without error handling of its own: an exception would leave the sender unanswered.
        try:
            return self._handle_request(req, sip_t)
        except Exception as exc:
            self._stats.sippy_errors += 1
            sippy_ratelog("request", logging.ERROR, "failed to handle a %s: %r", req.getMethod(), exc)
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
        zone = self._zone_of(sip_t)
        if method in ("REGISTER", "INVITE"):
            source = req.getSource()
            src = getattr(source, "address", source)
            src_addr = (str(src[0]), int(src[1]))
            if method == "REGISTER" and zone is Zone.OUTSIDE and self._inside_udp is not None:
                why = "REGISTER is not accepted from the PBX's side (outside listener)"
                return self._refuse(req, Refusal(403, "register_on_outside", why), src_addr, zone)
            if self._screen is not None:
                facts = RequestFacts(
                    zone, method, src_addr, str(req.getHFBody("from").getUrl().username or ""),
                    str(req.getHFBody("to").getUrl().username or ""),
                )  # fmt: skip
                refusal = self._screen(facts)
                if refusal is not None:
                    return self._refuse(req, refusal, src_addr, zone)
        if method == "REGISTER":
            if self.registrar is None:
                return (response_to(req, 405, "Method Not Allowed", (("Allow", ALLOW),)), None, None)
            return (answer_register(req, self.registrar, self._stats, self.local_host), None, None)
        if method == "INVITE":
            if self._state is not _StackState.RUNNING:
                return (req.genResponse(503, "Service Unavailable"), None, None)
            from_hf = req.getHFBody("from")
            to_hf = req.getHFBody("to")
            authenticated: str | None = None
            from_user = str(from_hf.getUrl().username or "")
            pred = self._invite_auth
            # With an inside listener, only the inside zone's INVITEs are ours to authenticate: the outside zone's
            # come from the PBX (the end-to-end key exchange authenticates those).
            inside_only = self._inside_udp is not None and zone is not Zone.INSIDE
            if pred is not None and not inside_only and self.registrar is not None and self.registrar.authenticator:
                try:
                    must = pred(src_addr, from_user)
                except Exception:
                    log.exception("authenticate_invites predicate failed; challenging the INVITE")
                    must = True
                if must:
                    verdict = self.registrar.authenticator.verify(auth_values(req), "INVITE", from_user)
                    if isinstance(verdict, Challenge):
                        self._stats.auth_challenged += 1
                        extra = tuple(("WWW-Authenticate", h) for h in verdict.headers)
                        return (response_to(req, 401, "Unauthorized", extra), None, None)
                    if not isinstance(verdict, Authenticated):
                        self._stats.auth_refused += 1
                        self._count_refused("invite_bad_credentials")
                        sippy_ratelog(
                            "invite-credentials", logging.WARNING, "INVITE from %s:%d as %r refused: %s", *src_addr,
                            from_user, verdict.reason,
                        )  # fmt: skip
                        return (response_to(req, 403, "Forbidden"), None, None)
                    authenticated = verdict.user
            # Credentials were checked above (or are not ours to check). sippy's UAS would parse the header
            # itself, after sending 100 and registering the dialog, and its parser raises on valid input
            # (a quoted comma): the INVITE then failed with a dialog left registered for its Call-ID.
            req.delHFs("authorization")
            call = IncomingCall(
                self,
                call_id=str(req.getHFBody("call-id")),
                from_aor=_aor_of(from_hf.getUrl()),
                to_aor=_aor_of(to_hf.getUrl()),
                from_display=from_hf.getUri().name or None,
                remote_sdp=None,
                source_addr=src_addr,
                authenticated_user=authenticated,
                # getSource() is the address alone; version 2 is (address, transport), e.g. "tls" for a phone whose
                # SDES key must not have crossed the network in the clear.
                transport=str(req.getSource(2)[1] or "udp").lower(),
                zone=zone,
            )
            call.reliable_progress = offers_100rel(req)
            core = CallCore(self, call)
            ua = WarningUA(self._gc, self._on_ua_event)
            ua.voipgw_core = core
            self._bind_to_zone(ua, zone)
            ua.lContact = self.contact(req.getRURI().username, zone)
            core.ua = ua
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
                sippy_ratelog("invite", logging.WARNING, "unusable INVITE from %s: %r", src, exc)
                return (req.genResponse(400, "Bad Request"), None, None)
        if method == "OPTIONS":
            return (req.genResponse(200, "OK"), None, None)
        return (req.genResponse(501, "Not Implemented"), None, None)

    def _on_incoming_try(self, core: CallCore, event: Any) -> None:
        call = core.call
        assert isinstance(call, IncomingCall)
        body = event.getData()[3]
        call.remote_sdp = None if body is None else str(body)
        self.deliver(self.incoming.put_nowait, call)

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
        return await _register(
            self, registrar, aor, username, password, expires=expires, timeout_s=timeout_s, keep_trying=keep_trying,
            on_change=on_change, transport=transport,
        )  # fmt: skip


__all__ = [
    "CallStateError",
    "IncomingCall",
    "InviteAuthPredicate",
    "OutgoingCall",
    "Registration",
    "SipCall",
    "SipStack",
]
