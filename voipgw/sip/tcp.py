"""SIP over TCP or TLS for sippy (RFC 3261 §18, §26): a listener plus outbound connections, behind sippy's server
interface.
Owns the stream sockets and their limits; never parses SIP beyond framing and the top Via branch, never touches
sippy objects off the reactor thread.

Theory of operation
-------------------
sippy's ``SipTransactionManager`` talks to a transport through a small duck-typed interface (its ``Udp_server``
and ``Wss_server`` both provide it): ``transport`` (the Via/URI name), ``getSIPaddr()``, ``addr2str()``,
``uopts.laddress`` / ``uopts.isWildCard()``, ``send_to(data, (host, port))`` from the reactor thread, and
``shutdown()``. Inbound messages go to ``uopts.data_callback(data, Remote_address, server, rtime)`` on the
reactor thread. ``TcpTransport`` provides exactly that, so the transaction layer does not know it is on a stream.

Threading: like sippy's own ``Wss_server``, the sockets live in one dedicated thread running a private asyncio
loop (one selector for a thousand idle connections, no thread per connection). Reactor -> TCP thread:
``loop.call_soon_threadsafe``; TCP thread -> reactor: ``wake.call_on_reactor``. The application's asyncio loop is
not used, so the transport works the same under ``MainThreadReactor``.

Connection reuse: a response goes back on the connection its request came in on (looked up by the top Via
branch, learned when the request arrived; RFC 3261 §18.2.2), else on any open connection to the Via address,
else on a new one. A request goes on an open connection to its next hop (ours or the peer's), else a new one.
Limits: ``TcpOptions``; inbound connections above the cap first evict the longest-idle connection that never
carried a valid SIP message, so a flood of idle sockets cannot lock out a proxy that already talks to us.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from sippy.Network_server import Remote_address
from sippy.Time.MonoTime import MonoTime

from voipgw.logutil import RateLimitedLog
from voipgw.sip.framing import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    FramingError,
    Message,
    Ping,
    StreamFramer,
    top_via_branch,
)
from voipgw.sip.tls import describe_failure, fingerprint_matches
from voipgw.sip.wake import call_on_reactor

log = logging.getLogger("voipgw.sip.tcp")

UDP_MTU_BUDGET = 1300
"""RFC 3261 §18.1.1: a request within 200 bytes of a 1500-byte path MTU must go over a congestion-controlled
transport; above this many bytes (or when the target says ``;transport=tcp``) requests go over TCP."""
BRANCH_MEMORY = 4096
"""How many recent inbound request branches remember their connection (for the responses)."""
PONG = b"\r\n"
PING = b"\r\n\r\n"
LISTEN_BACKLOG = 512
THREAD_JOIN_S = 5.0


@dataclass(frozen=True)
class TcpOptions:
    """Limits of the SIP-over-TCP transport. The listener binds the same port number as the UDP socket."""

    max_connections: int = 1024
    """Inbound connections kept open at once; above this the longest-idle unproven one is evicted, or the
    newcomer refused."""
    max_outbound: int = 64
    """Connections we open ourselves (one per next hop is the norm)."""
    idle_timeout_s: float = 120.0
    """An inbound connection with no traffic either way for this long is closed (RFC 5626 keep-alives reset it);
    an outbound one when the peer has sent nothing, not even a pong to our keep-alives, for this long."""
    keepalive_interval_s: float = 30.0
    """An outbound connection that has received nothing for this long sends a CRLFCRLF ping (RFC 5626 §4.4.1),
    so the flow a registration rides on (the PBX sends its INVITEs back on it) outlives the idle timeouts of both
    ends and of middleboxes, however long the registration interval. Below ``idle_timeout_s``, so a live peer
    answers in time; Kamailio's default ``tcp_connection_lifetime`` is 120 s as well."""
    outbound_idle_timeout_s: float = 3900.0
    """An outbound connection that has carried no SIP message either way for this long is closed although it
    answers keep-alives: longer than the largest registration interval (3600 s), so only unused flows go."""
    unproven_timeout_s: float = 30.0
    """An inbound connection that has not delivered one whole SIP message by then is closed."""
    message_timeout_s: float = 10.0
    """A message must arrive whole within this long of its first byte (a slowloris trickle is cut off)."""
    connect_timeout_s: float = 5.0
    max_header_bytes: int = MAX_HEADER_BYTES
    max_body_bytes: int = MAX_BODY_BYTES
    max_write_buffer: int = 1 << 20
    """A peer that does not read what we send is dropped once this many bytes are queued for it."""
    sweep_interval_s: float = 0.5
    """How often the timeouts above are checked."""

    def __post_init__(self) -> None:
        if not 0 < self.keepalive_interval_s < self.idle_timeout_s:
            raise ValueError("keepalive_interval_s must be positive and below idle_timeout_s")


@dataclass
class TcpStats:
    """Counters of the TCP transport (a snapshot via ``TcpTransport.stats``)."""

    open_inbound: int = 0
    open_outbound: int = 0
    accepted: int = 0
    refused_over_cap: int = 0
    evicted: int = 0
    connected: int = 0
    connect_failures: int = 0
    closed_idle: int = 0
    closed_unproven: int = 0
    closed_slow: int = 0
    closed_framing: int = 0
    closed_write_backlog: int = 0
    messages_in: int = 0
    messages_out: int = 0
    pings_answered: int = 0
    pings_sent: int = 0
    send_failures: int = 0

    def copy(self) -> TcpStats:
        return TcpStats(**{f.name: getattr(self, f.name) for f in fields(self)})


def bind_listener(host: str, port: int, attempts: int = 20) -> socket.socket:
    """A TCP socket bound to ``host:port``; for port 0, to a port number that is free for UDP as well, so the
    UDP socket and the TCP listener share one number (one Contact serves both transports)."""
    for _ in range(attempts if port == 0 else 1):
        # IPPROTO_TCP explicitly: asyncio turns Nagle off only on sockets whose proto says TCP, and accepted
        # sockets inherit the listener's (with 0, a 200 OK waited ~40 ms for the ACK of the 100 Trying).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            if port == 0:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.bind((host, sock.getsockname()[1]))
        except OSError:
            sock.close()
            if port != 0:
                raise
            continue
        return sock
    raise OSError(f"no port on {host} is free for both UDP and TCP")


class _TcpOpts:
    """The part of sippy's ``Network_server_opts`` the transaction manager reads."""

    def __init__(self, laddress: tuple[str, int], data_callback: Callable[..., Any]) -> None:
        self.laddress = laddress
        self.data_callback: Callable[..., Any] | None = data_callback

    def isWildCard(self) -> bool:
        return False


class _Conn(asyncio.Protocol):
    """One TCP connection (inbound or outbound); lives on the transport's loop thread only."""

    def __init__(self, owner: TcpTransport, outbound: bool, key: tuple[str, int] | None = None) -> None:
        self.owner = owner
        self.outbound = outbound
        self.key = key
        """The address this connection is filed under: the next hop we dialled, or the peer's source."""
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer(owner.options.max_header_bytes, owner.options.max_body_bytes)
        self.peer: tuple[str, int] = ("", 0)
        self.last_activity = time.monotonic()
        self.opened = self.last_activity
        self.last_received = self.last_activity
        self.last_message = self.last_activity
        self.last_ping = self.last_activity
        self.message_started: float | None = None
        self.proven = outbound
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        if self.key is None:
            self.key = self.peer
        self.owner._register(self)

    def data_received(self, data: bytes) -> None:
        self.owner._on_data(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.owner._forget(self)

    def send(self, data: bytes) -> bool:
        t = self.transport
        if t is None or self.closed or t.is_closing():
            return False
        t.write(data)
        self.last_activity = time.monotonic()
        if t.get_write_buffer_size() > self.owner.options.max_write_buffer:
            self.owner._close(self, "closed_write_backlog", "peer does not read")
        return True

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class TcpTransport:
    """sippy-compatible SIP-over-TCP (or TLS) server/client; create it on the reactor thread, pass it as ``userv``."""

    reliable = True
    """Requests sent through this transport are not retransmitted (RFC 3261 §17.1.1.2: no timer A)."""

    def __init__(
        self,
        laddress: tuple[str, int],
        data_callback: Callable[..., Any],
        options: TcpOptions | None = None,
        on_send_failure: Callable[[bytes, tuple[str, int], str, bool], None] | None = None,
        sock: socket.socket | None = None,
        *,
        tls_server: ssl.SSLContext | None = None,
        tls_client: ssl.SSLContext | None = None,
        tls_pin: bytes | None = None,
        listen: bool = True,
    ) -> None:
        """Binds ``laddress`` now (so a busy port raises here), then serves from its own thread.

        With ``tls_client`` this is the TLS transport: outbound connections use that context (and, with
        ``tls_pin``, must present a certificate with that SHA-256); it listens only with ``tls_server``.

        ``on_send_failure(data, address, reason, refused)`` runs on the reactor thread when a message could not be
        sent (no connection could be opened; ``refused``: the peer refused or reset it, so it has no TCP there):
        the transaction layer retries over UDP or turns it into a 503 (RFC 3261 §18.1.1, §8.1.3.1).
        """
        self.options = options or TcpOptions()
        self.transport = "tls" if tls_client is not None else "tcp"
        self._tls_server = tls_server
        self._tls_client = tls_client
        self._tls_pin = tls_pin
        self.uopts = _TcpOpts(laddress, data_callback)
        self._on_send_failure = on_send_failure
        self._stats = TcpStats()
        self._ratelog = RateLimitedLog(log)
        self._sock: socket.socket | None = None
        if listen:
            if sock is None:
                sock = bind_listener(laddress[0], laddress[1])
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
            self._sock = sock
            self.uopts.laddress = (laddress[0], int(sock.getsockname()[1]))
        self._conns: set[_Conn] = set()
        self._by_key: dict[tuple[str, int], _Conn] = {}
        self._connecting: dict[tuple[str, int], list[bytes]] = {}
        self._by_branch: collections.OrderedDict[str, _Conn] = collections.OrderedDict()
        self._server: asyncio.AbstractServer | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sip-tcp", daemon=True)
        self._thread.start()
        if not self._ready.wait(THREAD_JOIN_S):
            raise RuntimeError("the SIP TCP thread did not start")

    # --- sippy's interface (reactor thread) -------------------------------------------------------------
    def getSIPaddr(self) -> tuple[tuple[str, int], str]:
        return (self.uopts.laddress, self.transport)

    def addr2str(self, address: tuple[str, int]) -> str:
        return f"{self.transport}:{address[0]}:{address[1]}"

    def send_to(self, data: bytes | str, address: tuple[str, int], delayed: bool = False) -> None:
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        dest = (str(address[0]), int(address[1]))
        with contextlib.suppress(RuntimeError):  # loop closed: shutting down
            self._loop.call_soon_threadsafe(self._send, raw, dest)

    def shutdown(self) -> None:
        """Close every connection and the listener, stop the thread (bounded wait). Idempotent."""
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop)
            self._thread.join(THREAD_JOIN_S)
        self.uopts.data_callback = None

    def join(self) -> None:
        self._thread.join(THREAD_JOIN_S)

    @property
    def stats(self) -> TcpStats:
        return self._stats.copy()

    @property
    def port(self) -> int:
        return int(self.uopts.laddress[1])

    # --- the loop thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            if self._sock is not None:
                self._server = self._loop.run_until_complete(
                    self._loop.create_server(
                        lambda: _Conn(self, outbound=False),
                        sock=self._sock,
                        ssl=self._tls_server,
                        ssl_handshake_timeout=self.options.message_timeout_s if self._tls_server else None,
                    )
                )
            self._loop.call_later(self.options.sweep_interval_s, self._sweep)
            self._ready.set()
            self._loop.run_forever()
        except BaseException:
            log.exception("SIP TCP transport thread failed")
        finally:
            self._ready.set()
            for conn in list(self._conns):
                conn.abort()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.sleep(0))
            if self._sock is not None:
                with contextlib.suppress(Exception):
                    self._sock.close()
            self._loop.close()

    def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            if conn.transport is not None:
                conn.transport.close()  # flushes what is queued (a BYE sent during shutdown)
        self._loop.call_soon(self._loop.stop)

    def _register(self, conn: _Conn) -> None:
        st = self._stats
        if conn.outbound:
            st.connected += 1
            st.open_outbound += 1
        else:
            st.accepted += 1
            if self._inbound_count() >= self.options.max_connections and not self._evict_one():
                st.refused_over_cap += 1
                self._ratelog("cap", logging.WARNING, "SIP TCP connection cap (%d) reached; refusing %s:%d",
                              self.options.max_connections, *conn.peer)  # fmt: skip
                conn.abort()
                return
            st.open_inbound += 1
        self._conns.add(conn)
        assert conn.key is not None
        self._by_key[conn.key] = conn

    def _inbound_count(self) -> int:
        return sum(1 for c in self._conns if not c.outbound)

    def _evict_one(self) -> bool:
        victims = [c for c in self._conns if not c.outbound and not c.proven]
        if not victims:
            return False
        victim = min(victims, key=lambda c: c.last_activity)
        self._close(victim, "evicted", "over the connection cap")
        return True

    def _forget(self, conn: _Conn) -> None:
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        if conn.outbound:
            self._stats.open_outbound -= 1
        else:
            self._stats.open_inbound -= 1
        if conn.key is not None and self._by_key.get(conn.key) is conn:
            del self._by_key[conn.key]

    def _close(self, conn: _Conn, counter: str, why: str) -> None:
        setattr(self._stats, counter, getattr(self._stats, counter) + 1)
        self._ratelog(counter, logging.INFO, "closing SIP TCP connection %s:%d: %s", *conn.peer, why)
        conn.abort()
        self._forget(conn)

    def _on_data(self, conn: _Conn, data: bytes) -> None:
        now = time.monotonic()
        conn.last_activity = now
        conn.last_received = now
        try:
            frames = conn.framer.feed(data)
        except FramingError as exc:
            self._close(conn, "closed_framing", f"{exc.kind}: {exc.detail}")
            return
        for frame in frames:
            if isinstance(frame, Ping):
                self._stats.pings_answered += 1
                conn.send(PONG)
            elif isinstance(frame, Message):
                self._deliver(conn, frame.data)
        conn.message_started = (conn.message_started or now) if conn.framer.in_message else None

    def _deliver(self, conn: _Conn, data: bytes) -> None:
        self._stats.messages_in += 1
        conn.proven = True
        conn.last_message = time.monotonic()
        if not data.startswith(b"SIP/"):
            branch = top_via_branch(data)
            if branch is not None:
                self._by_branch[branch] = conn
                self._by_branch.move_to_end(branch)
                while len(self._by_branch) > BRANCH_MEMORY:
                    self._by_branch.popitem(last=False)
        ra = Remote_address(conn.peer, self.transport)
        call_on_reactor(self._dispatch, data, ra, MonoTime())

    def _dispatch(self, data: bytes, ra: Any, rtime: Any) -> None:
        """Reactor thread: hand one framed message to the transaction manager."""
        cb = self.uopts.data_callback
        if cb is None:
            return
        try:
            cb(data, ra, self, rtime)
        except Exception:
            log.exception("SIP over TCP: the transaction layer failed on a message from %s", ra)

    def _send(self, data: bytes, dest: tuple[str, int]) -> None:
        conn: _Conn | None = None
        if data.startswith(b"SIP/"):
            branch = top_via_branch(data)
            if branch is not None:
                conn = self._by_branch.get(branch)
                if conn is not None and conn.closed:
                    conn = None
        if conn is None and dest in self._connecting:  # queued behind the handshake (and the pin check)
            self._connecting[dest].append(data)
            return
        if conn is None:
            conn = self._by_key.get(dest)
        if conn is None:
            conn = next((c for c in self._conns if c.peer == dest and not c.closed), None)
        if conn is not None:
            self._write(conn, data)
            return
        if self._stats.open_outbound + len(self._connecting) >= self.options.max_outbound:
            self._fail(data, dest, "too many outbound connections")
            return
        self._connecting[dest] = [data]
        self._loop.create_task(self._connect(dest))

    def _write(self, conn: _Conn, data: bytes) -> None:
        if conn.send(data):
            self._stats.messages_out += 1
            conn.last_message = time.monotonic()
        else:
            self._fail(data, conn.peer, "connection closed")

    async def _connect(self, dest: tuple[str, int]) -> None:
        reason: str | None = None
        refused = False
        conn: _Conn | None = None
        try:
            tls: dict[str, Any] = {}
            if self._tls_client is not None:
                tls = {"ssl": self._tls_client, "server_hostname": dest[0]}
                tls["ssl_handshake_timeout"] = self.options.connect_timeout_s
            _, proto = await asyncio.wait_for(
                self._loop.create_connection(lambda: _Conn(self, outbound=True, key=dest), dest[0], dest[1], **tls),
                self.options.connect_timeout_s,
            )
            assert isinstance(proto, _Conn)
            conn = proto
            if self._tls_pin is not None:
                ssl_object = conn.transport.get_extra_info("ssl_object") if conn.transport else None
                der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
                if not fingerprint_matches(der, self._tls_pin):
                    reason = "certificate rejected: its SHA-256 fingerprint is not the pinned one"
                    conn.abort()
                    self._forget(conn)
        except TimeoutError:
            reason = "connect timed out"
        except OSError as exc:
            reason = describe_failure(exc)
            refused = isinstance(exc, ConnectionRefusedError | ConnectionResetError)
        pending = self._connecting.pop(dest, [])
        if reason is None and conn is not None and not conn.closed:
            for data in pending:
                self._write(conn, data)
            return
        reason = reason or "connection closed during set-up"
        self._stats.connect_failures += 1
        self._ratelog("connect", logging.WARNING, "SIP over %s to %s:%d: %s", self.transport.upper(), *dest, reason)
        for data in pending:
            self._fail(data, dest, reason, refused)

    def _fail(self, data: bytes, dest: tuple[str, int], reason: str, refused: bool = False) -> None:
        self._stats.send_failures += 1
        if self._on_send_failure is not None:
            call_on_reactor(self._on_send_failure, data, dest, f"{self.transport.upper()} {reason}", refused)

    def _sweep(self) -> None:
        now = time.monotonic()
        opt = self.options
        for conn in list(self._conns):
            if conn.message_started is not None and now - conn.message_started > opt.message_timeout_s:
                self._close(conn, "closed_slow", f"message incomplete after {opt.message_timeout_s:.0f} s")
            elif not conn.proven and now - conn.opened > opt.unproven_timeout_s:
                self._close(conn, "closed_unproven", "no SIP message")
            elif conn.outbound:
                self._sweep_outbound(conn, now)
            elif now - conn.last_activity > opt.idle_timeout_s:
                self._close(conn, "closed_idle", "idle")
        self._loop.call_later(opt.sweep_interval_s, self._sweep)

    def _sweep_outbound(self, conn: _Conn, now: float) -> None:
        opt = self.options
        if now - conn.last_received > opt.idle_timeout_s:
            self._close(conn, "closed_idle", f"no answer to keep-alives for {opt.idle_timeout_s:.0f} s")
        elif now - conn.last_message > opt.outbound_idle_timeout_s:
            self._close(conn, "closed_idle", f"no SIP message for {opt.outbound_idle_timeout_s:.0f} s")
        elif now - conn.last_received > opt.keepalive_interval_s and now - conn.last_ping > opt.keepalive_interval_s:
            conn.last_ping = now
            if conn.send(PING):
                self._stats.pings_sent += 1


__all__ = ["UDP_MTU_BUDGET", "TcpOptions", "TcpStats", "TcpTransport", "bind_listener"]
