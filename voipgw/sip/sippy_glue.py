"""sippy glue: each subclass or patch of sippy that voipgw needs, named after the workaround and saying why.

Only stack.py, registration.py and register_uas.py import this. Nothing here knows about calls or
registrations, and nothing here runs outside sippy's reactor thread except the UDP receiver it starts.

The workarounds: sippy's stdout prints and tracebacks go to rate-limited logging (``redirect_sippy_output``,
``WireLogger``); one ordered UDP worker pair instead of three (``OrderedUdpOpts``); whole 64 KiB datagrams and a
larger receive buffer (``WholeDatagramReceiver``, ``GuardedUdpServer``); the datagram guard, 400s for unparsable
requests, non-2xx ACK routing, TCP/TLS streams (the inside zone's own TLS listener for inside dialogs) and send
failures in the transaction manager (``GuardedTM``); a socket per listener (``ZonedLocal4Remote``); the
Warning of a final error and the To-tag of each response kept (``WarningUA``); our exact R-URI/To/From on an
INVITE (``SetupTry``); Authorization values read raw, as sippy's parser splits quoted commas (``auth_values``);
a 2xx from a second fork ACKed and BYEd (``GuardedTM.stray_2xx``); PRACK routed to its dialog (``WarningUA``, RFC
3262: sippy's UAS neither matches nor handles it).

Forking (measured with sippy 2.5): sippy's UAC keeps one dialog per INVITE. Each 18x, whichever fork sent it,
is passed up as a CCEventRing without its To-tag, and sippy records neither the tag nor the fork's Contact or
Record-Route for an early dialog (nothing is sent in one, so nothing is misrouted); ``WarningUA`` keeps the tag so
the dialog can tell the forks apart. The first 2xx takes the dialog (tag, target, route set) and ends the client
transaction; a 2xx from another fork then matches no transaction and sippy drops it silently, never ACKed: that
fork's UAS retransmits its 200 for 32 s and then hangs up, while its user thought the call was answered. RFC 3261
13.2.2.4 wants it ACKed and BYEd, which ``GuardedTM`` does.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
import threading
import time
from hashlib import md5
from types import ModuleType
from typing import Any

from sippy.CCEvents import CCEventTry
from sippy.Network_server import Remote_address
from sippy.SipAddress import SipAddress
from sippy.SipFrom import SipFrom
from sippy.SipHeader import SipHeader
from sippy.SipRequest import SipRequest
from sippy.SipResponse import SipResponse
from sippy.SipTo import SipTo
from sippy.SipTransactionManager import RINGING, TRYING, SipTransactionManager, local4remote
from sippy.SipURL import SipURL
from sippy.Time.MonoTime import MonoTime
from sippy.Time.Timeout import Timeout
from sippy.UA import UA
from sippy.Udp_server import AsyncSender, Udp_server, Udp_server_opts

from voipgw.logutil import RateLimitedLog
from voipgw.sip.guard import MAX_DATAGRAM, Accept, DatagramGuard, Reply, SipStats
from voipgw.sip.tcp import UDP_MTU_BUDGET, TcpTransport
from voipgw.sip.unreachable import Unreachable, port_unreachable, quotes_request
from voipgw.sip.unreachable import enable as enable_icmp_errors
from voipgw.sip.uri import sip_uri
from voipgw.sip.wake import call_on_reactor

log = logging.getLogger("voipgw.sip")
wire_log = logging.getLogger("voipgw.sip.wire")
sippy_log = logging.getLogger("voipgw.sip.sippy")

STRAY_2XX_S = 64.0
"""How long after an INVITE's first 2xx a 2xx from another fork is still ACKed and BYEd."""
UDP_RECEIVE_BUFFER = 4 << 20
"""SO_RCVBUF asked for on the SIP UDP socket: a burst of INVITEs waits in the kernel instead of being dropped
(the default, about 208 KiB, holds fewer than 100 small datagrams). Linux caps it at net.core.rmem_max."""
UDP_READ_BYTES = 65535
"""Read whole datagrams (sippy reads 8192 and silently truncates), so the guard can refuse an oversized one."""


def parse_sip_url(uri: str) -> Any:
    """A sippy SipURL for a sip:/sips: URI or a bare user@host AOR (UriError for other schemes)."""
    return SipURL(url=sip_uri(uri))


# --- sippy's stdout output, redirected ---------------------------------------------------------------------

sippy_ratelog = RateLimitedLog(sippy_log)
_stats_sink: list[SipStats] = []
"""The running stack's counters, so sippy's complaints count as ``sippy_errors`` (sippy state is process-wide)."""


def count_sippy_errors_in(stats: SipStats | None) -> None:
    """Count sippy's redirected complaints into ``stats`` from now on (None: stop counting)."""
    _stats_sink[:] = [] if stats is None else [stats]


def _captured_dump_exception(msg: str, f: object = None, extra: object = None) -> None:
    exc = sys.exc_info()[1]
    if _stats_sink:
        _stats_sink[0].sippy_errors += 1
    sippy_ratelog("exception", logging.WARNING, "sippy: %s: %r", msg, exc)
    sippy_log.debug("sippy: %s", msg, exc_info=exc is not None)


def _captured_print(*args: object, **kwargs: object) -> None:
    text = " ".join(str(a) for a in args)
    if _stats_sink:
        _stats_sink[0].sippy_errors += 1
    sippy_ratelog("print", logging.WARNING, "sippy: %s", text[:300])


def redirect_sippy_output() -> None:
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


class WireLogger:
    """Stands in for sippy's SipLogger: message dumps go to ``voipgw.sip.wire`` at DEBUG."""

    def write(self, *args: object, **kwargs: object) -> None:
        if wire_log.isEnabledFor(logging.DEBUG):
            wire_log.debug("%s", "".join(str(a) for a in args))

    def shutdown(self) -> None:
        return None


class OrderedUdpOpts(Udp_server_opts):  # type: ignore[misc]
    """One receiver and one sender thread instead of sippy's three each (GuardedUdpServer starts them).

    With three, back-to-back messages leave (and are handed to the reactor) out of order: measured, a 180 sent
    right before a 200 arrived after it in about one call in ten on loopback. One worker keeps order.
    """

    nworkers = 0  # sippy's own workers; GuardedUdpServer adds exactly one pair of its own


class WholeDatagramReceiver(threading.Thread):
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
                if exc.errno == errno.ECONNREFUSED:  # IP_RECVERR: an ICMP error for a datagram we sent
                    report_unreachable(userv)
                    continue
                if exc.errno in (errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.EBADF):
                    break
                if exc.errno == errno.EINTR:
                    continue
                sippy_ratelog("recv", logging.WARNING, "SIP UDP receive failed: %r", exc)
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
            call_on_reactor(userv.handle_read, data, Remote_address(address, userv.transport), MonoTime())
        self.userv = None


def report_unreachable(userv: Any) -> None:
    """Drain the socket's error queue (``voipgw.sip.unreachable``) and hand each port-unreachable to the
    transaction manager on the reactor thread. Runs in the receiver or the sender thread, whichever met the error."""
    tm = getattr(userv.uopts.data_callback, "__self__", None)  # sippy binds the manager's handleIncoming
    for _ in range(64):  # bounded: a flood of ICMP is read in later rounds
        try:
            data, ancdata, _flags, address = userv.skt.recvmsg(
                UDP_READ_BYTES, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            sippy_ratelog("errqueue", logging.WARNING, "reading the SIP socket's error queue failed: %r", exc)
            return
        if tm is not None and address and port_unreachable(ancdata):
            call_on_reactor(tm.datagram_unreachable, Unreachable(data, (str(address[0]), int(address[1]))))


class ReportingSender(AsyncSender):  # type: ignore[misc]
    """sippy's AsyncSender, except that a pending ICMP error the kernel reports on ``sendto`` (it does, once
    IP_RECVERR is on) does not cost the datagram being sent: sippy's loop gives it up on any such error."""

    def run(self) -> None:
        userv: Any = getattr(self, "userv")  # noqa: B009 - sippy's attribute is declared None at class level
        while True:
            wi = userv.sendqueue.get()
            if wi is None:
                userv.sendqueue.put(None)  # shutdown: relay it to the other senders
                break
            data, address = wi
            address = tuple(address)
            try:
                ai = socket.getaddrinfo(address[0], None, userv.uopts.family)
            except OSError:
                continue
            info: Any = ai[0][4]
            target: Any = (info[0], address[1])
            if userv.uopts.family != socket.AF_INET:
                target = (info[0], address[1], info[2], info[3])
            for _ in range(20):
                try:
                    if userv.skt.sendto(data, target) == len(data):
                        break
                except OSError as why:
                    if isinstance(why, BrokenPipeError):
                        self.userv = None
                        return
                    if why.errno == errno.ECONNREFUSED:
                        report_unreachable(userv)  # the error was another datagram's: send this one again
                        continue
                    if why.errno not in (errno.EWOULDBLOCK, errno.ENOBUFS, errno.EAGAIN):
                        break
                time.sleep(0.01)
        self.userv = None


class GuardedUdpServer(Udp_server):  # type: ignore[misc]
    """sippy's Udp_server with a larger receive buffer and a receiver that reads whole datagrams."""

    def __init__(self, global_config: Any, uopts: Any) -> None:
        super().__init__(global_config, uopts)  # binds; starts no workers (OrderedUdpOpts.nworkers = 0)
        try:
            self.skt.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        except OSError as exc:
            log.debug("SIP UDP socket: SO_RCVBUF %d refused: %s", UDP_RECEIVE_BUFFER, exc)
        self.receive_buffer = int(self.skt.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
        log.debug(
            "SIP UDP socket %s:%s: receive buffer %d bytes (asked for %d)",
            *self.uopts.laddress[:2], self.receive_buffer, UDP_RECEIVE_BUFFER,
        )  # fmt: skip
        self.reports_unreachable = enable_icmp_errors(self.skt)
        self.asenders.append(ReportingSender(self))
        self.areceivers.append(WholeDatagramReceiver(self))


class ZonedLocal4Remote(local4remote):  # type: ignore[misc]
    """sippy's socket chooser for a stack with several listeners (the gateway's inside and outside zones).

    sippy, bound to one address, always sends from its first socket, even when a dialog names the local address
    it belongs to (``UA.source_address``, passed as ``laddress``). Here that address picks its own socket, so a
    dialog set up on the inside listener stays there; anything else leaves from the first (outside) socket.
    """

    cache_l2s: dict[tuple[str, int], Any]

    def add_listener(self, laddress: tuple[str, int]) -> Any:
        """Bind one more UDP listener; every socket is then keyed by its bound address (sippy keys them by the
        address asked for, so two port-0 listeners on one host would overwrite each other)."""
        first = next(iter(self.cache_l2s.values()))
        self.cache_l2s = {tuple(first.uopts.laddress[:2]): first}
        server = self.udp_server_class(self.global_config, self.Udp_server_opts(laddress, self.handleIncoming))
        self.cache_l2s[tuple(server.uopts.laddress[:2])] = server
        return server

    def getServer(self, address: Any, is_local: bool = False) -> Any:
        if is_local and address is not None:
            for server in self.cache_l2s.values():
                if tuple(server.uopts.laddress[:2]) == tuple(address[:2]):
                    return server
        return next(iter(self.cache_l2s.values()))


class GuardedTM(SipTransactionManager):  # type: ignore[misc]
    """SipTransactionManager whose inbound path is vetted by DatagramGuard first."""

    guard: DatagramGuard
    model_udp_server = (GuardedUdpServer, OrderedUdpOpts)
    streams: dict[str, TcpTransport]
    inside_streams: dict[str, TcpTransport]
    """The inside zone's own stream listeners (its TLS one, for the phones); ``streams`` are the outside zone's."""
    inside_server: Any = None
    """The inside zone's UDP socket, when the stack has one (see ``WarningUA.isYours``)."""
    receiving: Any = None
    """The socket the message being handled arrived on (set for the duration of ``handleIncoming``)."""
    on_cross_zone: Any = None
    """Called (no arguments) when an in-dialog request arrived on the other zone's listener."""

    answered_invites: dict[Any, tuple[str, str, tuple[str, int]]]
    """Client INVITE transaction id -> (the winning 2xx's To-tag, the INVITE as sent, where it was sent), kept for
    ``STRAY_2XX_S``."""

    def __init__(self, global_config: dict[str, Any], req_cb: Any, guard: DatagramGuard) -> None:
        self.guard = guard
        self.streams = {}
        self.inside_streams = {}
        self.answered_invites = {}
        super().__init__(global_config, req_cb)
        self.l4r.__class__ = ZonedLocal4Remote  # sippy builds its own; only the lookup differs

    def is_inside(self, server: Any) -> bool:
        """Whether ``server`` (the socket or stream listener a message arrived on) is one of the inside zone's."""
        if server is None:
            return False
        return server is self.inside_server or any(server is s for s in self.inside_streams.values())

    def _streams_for(self, laddress: Any) -> dict[str, TcpTransport]:
        # An inside dialog names the inside UDP socket as its local address (UA.source_address): its stream
        # requests leave from the inside zone's own listener, so the phone sees the address it registered with and
        # the connection it opened is reused; the outside streams serve only where the inside has none of its own.
        inside = self.inside_server
        if inside is None or laddress is None or tuple(laddress[:2]) != tuple(inside.uopts.laddress[:2]):
            return self.streams
        return {**self.streams, **self.inside_streams}

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
        if data_in.startswith(b"SIP/2.0 2") and self.answered_invites and self.stray_2xx(data_in, ra, server):
            return
        self.receiving = server
        try:
            super().handleIncoming(data_in, ra, server, rtime)
        finally:
            self.receiving = None

    # A 2xx from a second fork (RFC 3261 13.2.2.4) --------------------------------------------------------------
    def stray_2xx(self, data: bytes, ra: Any, server: Any) -> bool:
        """ACK and BYE a 2xx for an INVITE another fork already answered (sippy drops it unanswered); True when
        handled. A retransmission of it gets the same ACK again (cached by checksum like sippy's own ACKs)."""
        if b"INVITE" not in data:
            return False  # its CSeq method is not INVITE (methods are case-sensitive): spare the full parse
        checksum = md5(data).digest()
        if checksum in self.l1rcache or checksum in self.l2rcache:
            return False  # sippy re-sends the cached ACK (or ignores it)
        try:
            resp = SipResponse(data.decode("utf-8"))
            tid = resp.getTId(True, True)
            if resp.getHFBody("cseq").getCSeqMethod() != "INVITE":
                return False
            # Decided by the winning 2xx alone, not by whether sippy still holds the client transaction: once a 2xx
            # with one To-tag was taken, a 2xx with another tag is another fork's, whatever sippy's state. (Left to
            # sippy while the transaction lingered, such a 2xx was taken as the final response and its ACK cached,
            # so no retransmission of it was ever ACKed to the right dialog again.)
            won = self.answered_invites.get(tid)
            tag = resp.getHFBody("to").getTag()
            if won is None or tag is None or tag == won[0]:
                return False
            if tuple(ra.address[:2]) != won[2]:
                # Forks answer through the hop the INVITE went to (the proxy). A 2xx from anywhere else is not
                # ACKed and BYEd: it would make us send requests wherever its Contact points. sippy drops it.
                sippy_ratelog(
                    "stray-2xx-source", logging.WARNING,
                    "a 2xx for an answered INVITE came from %s:%s, not from %s:%s: ignored", *ra.address[:2], *won[2],
                )  # fmt: skip
                self.guard.stats.stray_2xx_ignored += 1
                return False
            ack = SipRequest(won[1]).genACK()
            ack.getHFBody("to").setTag(tag)
            target = resp.getHFBody("contact").getUrl().getCopy() if resp.countHFs("contact") > 0 else None
            routes = [x.getCopy() for x in resp.getHFBodys("record-route")]
            routes.reverse()
            if target is not None:
                ack.setRURI(target)
            ack.delHFs("route")
            ack.appendHeaders([SipHeader(name="route", body=x) for x in routes])
            # ((host, port), transport), as sippy's own ACK code: the first route's, else the fork's Contact's.
            r_addr = routes[0].getTAddr() if routes else (target.getTAddr() if target is not None else None)
            if r_addr is None:
                r_addr = (ra.address, server.transport)
            ack.setTarget(r_addr)
            ack.getHFBody("via").genBranch()
            self.transmitMsg(server, ack, r_addr[0], checksum)
            bye = ack.genRequest("BYE", ack.getHFBody("cseq").getCSeqNum() + 1)
            bye.delHFs("route")
            bye.appendHeaders([SipHeader(name="route", body=x.getCopy()) for x in routes])
            bye.setTarget(r_addr)
            bye.getHFBody("via").genBranch()
            self.newTransaction(bye, None, userv=server)
        except Exception as exc:
            # Dropped rather than handed to sippy, which would cache it unanswered: its retransmission
            # (64*T1) gets another try.
            self.guard.stats.stray_2xx_failed += 1
            sippy_ratelog("stray-2xx-failed", logging.WARNING, "could not ACK/BYE a 2xx from another fork: %r", exc)
            return True
        self.guard.stats.stray_2xx += 1
        sippy_ratelog(
            "stray-2xx-handled", logging.INFO,
            "a second fork (To-tag %s) answered an INVITE already answered: ACK + BYE", tag,
        )  # fmt: skip
        return True

    def _forget_answered(self, tid: Any) -> None:
        self.answered_invites.pop(tid, None)

    def incomingResponse(self, msg: Any, t: Any, checksum: Any) -> None:
        code = msg.getSCode()[0]
        if 200 <= code < 300 and t.method == "INVITE" and t.ack is not None and t.state in (TRYING, RINGING):
            tag = msg.getHFBody("to").getTag()
            if tag is not None and t.tid not in self.answered_invites:
                # Kept for STRAY_2XX_S: a proxy cancels the other forks on the first 2xx, so another fork's 2xx can
                # only cross that CANCEL and be retransmitted for 64*T1 (32 s). The INVITE is kept as sent, for
                # building another fork's ACK (sippy's SipRequest.getCopy() fails on a parsed request, and t.ack
                # gets this 2xx's tag and route set below).
                self.answered_invites[t.tid] = (tag, t.data, tuple(t.address[:2]))
                Timeout(self._forget_answered, STRAY_2XX_S, 1, t.tid)
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
        streams = self._streams_for(laddress)
        if userv is None and streams:
            address, transport = msg.getTarget()
            name = str(transport).lower()
            userv = streams.get(name)
            # RFC 3261 18.1.1: a request over 1300 bytes goes over a congestion-controlled transport.
            big = name == "udp" and len(msg.localStr(self.l4r.getServer(address).getSIPaddr())) > UDP_MTU_BUDGET
            if big and "tcp" in streams:
                t = super().newTransaction(msg, resp_cb, laddress, streams["tcp"], *args, **kwargs)
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

    def datagram_unreachable(self, error: Unreachable) -> None:
        """ICMP port unreachable for a datagram we sent: the request it quotes (``quotes_request``) ends as 503 at
        once, as for any transport error (RFC 3261 §8.1.3.1); anything else (a response, a forgery) changes nothing."""
        for t in list(self.tclient.values()):
            if t.state is not TRYING or t.resp_cb is None or not isinstance(t.data, str):
                continue
            if tuple(t.address[:2]) != error.address or not quotes_request(error.quoted, t.data.encode("utf-8")):
                continue
            self.guard.stats.icmp_unreachable += 1
            if t.teB is not None:
                t.teB.cancel()
            where = f"{error.address[0]}:{error.address[1]}"
            t.r408.setSCode(503, f"Service Unavailable (nothing listens at {where}: ICMP port unreachable)")
            self.timerB(t)
            return
        self.guard.stats.icmp_ignored += 1

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


class WarningUA(UA):  # type: ignore[misc]
    """A sippy UA that remembers the Warning header of the last final error response (sippy drops it)."""

    voipgw_core: Any = None
    """The dialog's CallCore (voipgw.sip.dialog), set by the stack; typed loosely so glue never imports dialogs."""
    last_warning: str | None = None
    last_to_tag: str | None = None
    """The To-tag of the last response this UA received (which fork a 18x came from)."""

    def isYours(self, req: Any = None, *args: Any, **kwargs: Any) -> Any:
        # Two zones never mixed: an in-dialog request is this dialog's only on the listener the dialog lives on
        # (inside dialogs have a source_address; outside ones use the main socket). Refused here, the request
        # falls through to the stack, which answers 481 like any request for a dialog it does not know.
        if req is not None and not self._in_my_zone():
            return None
        if req is not None and req.getMethod() == "PRACK":
            # sippy's UAS matches in-dialog requests other than BYE by the INVITE's Via branch while the INVITE is
            # pending, so a PRACK (its own transaction, its own branch) fell through to a 481. Match it by dialog.
            return super().isYours(
                None, str(req.getHFBody("call-id")), req.getHFBody("from").getTag(), req.getHFBody("to").getTag()
            )
        return super().isYours(req, *args, **kwargs)

    def recvRequest(self, req: Any, sip_t: Any) -> Any:
        # sippy's UAS states have no PRACK handler (it would be dropped unanswered): the dialog answers it.
        if req.getMethod() == "PRACK" and self.voipgw_core is not None:
            return (self.voipgw_core.on_prack(req), None, None)
        return super().recvRequest(req, sip_t)

    def _in_my_zone(self) -> bool:
        tm = self.global_config.get("_sip_tm")
        inside = getattr(tm, "inside_server", None)
        arrived = getattr(tm, "receiving", None)
        if inside is None or arrived is None:
            return True
        if tm.is_inside(arrived) == (self.source_address is not None):
            return True
        if tm.on_cross_zone is not None:
            tm.on_cross_zone()
        return False

    def recvResponse(self, resp: Any, tr: Any) -> None:
        code = resp.getSCode()[0]
        try:
            self.last_to_tag = resp.getHFBody("to").getTag()
        except Exception:
            self.last_to_tag = None
        if code >= 300 and resp.countHFs("warning") > 0:
            self.last_warning = str(resp.getHFBody("warning"))
        super().recvResponse(resp, tr)


class SetupTry(CCEventTry):  # type: ignore[misc]
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


def response_to(req: Any, code: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> Any:
    """A response to ``req`` with extra headers, and without sippy's Server header."""
    resp = req.genResponse(code, reason, server=None)
    for name, value in headers:
        resp.appendHeader(SipHeader(name=name.lower(), bodys=value))
    return resp


def offers_100rel(req: Any) -> bool:
    """Whether an INVITE names ``100rel`` in a Supported or Require header (RFC 3262)."""
    for name in ("supported", "require"):
        for hf in req.getHFs(name):
            if any(opt.strip().lower() == "100rel" for opt in str(hf.getBody()).split(",")):
                return True
    return False


def auth_values(req: Any) -> list[str]:
    """The raw Authorization values of a request, read without sippy's parser (it splits quoted commas)."""
    return [str(hf.body) for hf in req.getHFs("authorization")]
