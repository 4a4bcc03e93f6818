"""Outbound SIP-over-TCP flows stay up between messages (RFC 5626 §4.4.1 CRLF keep-alives), and die when the peer
stops answering: a registration's flow must outlive both ends' idle timeouts, because the PBX sends its INVITEs
back on it. The transport talks to a real TCP peer on loopback, a thread that answers pings (or does not)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from voipgw.sip import TcpOptions
from voipgw.sip.tcp import TcpTransport

REGISTER = (
    b"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKka1\r\n"
    b"From: <sip:gw@127.0.0.1>;tag=a\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: ka-1\r\nCSeq: 1 REGISTER\r\n"
    b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)
OPTS = TcpOptions(keepalive_interval_s=0.3, idle_timeout_s=1.0, sweep_interval_s=0.05)
DEADLINE_S = 10.0


class Peer:
    """A one-connection TCP server: records what it receives; answers each CRLFCRLF with CRLF when ``pong``."""

    def __init__(self, pong: bool) -> None:
        self.pong = pong
        self.received = bytearray()
        self.pings = 0
        self.closed_by_client = threading.Event()
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(1)
        self._srv.settimeout(DEADLINE_S)
        self.port = int(self._srv.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn, _ = self._srv.accept()
        conn.settimeout(0.05)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                if not data:
                    self.closed_by_client.set()
                    return
                self.received += data
                # The REGISTER ends in the only CRLFCRLF that is not a ping.
                new_pings = self.received.count(b"\r\n\r\n") - self.received.count(REGISTER) - self.pings
                for _ in range(max(new_pings, 0)):
                    self.pings += 1
                    if self.pong:
                        conn.sendall(b"\r\n")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(DEADLINE_S)
        self._srv.close()


@contextmanager
def transport_to(peer: Peer) -> Iterator[TcpTransport]:
    t = TcpTransport(("127.0.0.1", 0), lambda *a, **k: None, options=OPTS, listen=False)
    try:
        t.send_to(REGISTER, ("127.0.0.1", peer.port))
        yield t
    finally:
        t.shutdown()
        peer.stop()


def wait_for(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.mark.integration  # takes seconds
@pytest.mark.parametrize("pong", [True, False], ids=["peer-answers", "peer-silent"])
def test_outbound_flow_is_kept_alive_while_the_peer_answers_and_closed_when_it_does_not(pong: bool) -> None:
    peer = Peer(pong)
    with transport_to(peer) as t:
        wait_for(lambda: REGISTER in peer.received, "the REGISTER never arrived")
        if pong:
            # Three idle timeouts without a SIP message: the flow must still be open, kept so by pings and pongs.
            wait_for(lambda: t.stats.pings_sent >= 8, "no keep-alive pings")
            assert t.stats.open_outbound == 1 and t.stats.closed_idle == 0, t.stats
            assert not peer.closed_by_client.is_set()
            assert peer.pings >= 8
        else:
            # Pings go out, nothing comes back: closed once the peer has been silent for idle_timeout_s.
            wait_for(lambda: t.stats.closed_idle == 1, "a silent peer's flow was never closed")
            assert t.stats.pings_sent >= 2 and t.stats.open_outbound == 0, t.stats
            wait_for(peer.closed_by_client.is_set, "the peer did not see the close")


def test_keepalive_interval_must_be_below_the_idle_timeout() -> None:
    with pytest.raises(ValueError, match="keepalive_interval_s"):
        TcpOptions(keepalive_interval_s=120.0, idle_timeout_s=120.0)
    with pytest.raises(ValueError, match="keepalive_interval_s"):
        TcpOptions(keepalive_interval_s=0.0)


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("says_sip", [False, True], ids=["never-proven", "proven-then-idle"])
def test_inbound_connections_are_closed_when_unproven_or_idle(says_sip: bool) -> None:
    """An inbound connection that never delivers a SIP message is closed after ``unproven_timeout_s``; one that did,
    after ``idle_timeout_s`` of silence either way (we never ping inbound flows: keeping them is the client's job)."""
    opts = TcpOptions(unproven_timeout_s=0.5, idle_timeout_s=1.0, keepalive_interval_s=0.3, sweep_interval_s=0.05)
    t = TcpTransport(("127.0.0.1", 0), lambda *a, **k: None, options=opts)
    try:
        with socket.create_connection(("127.0.0.1", t.port), timeout=DEADLINE_S) as sock:
            sock.settimeout(0.05)
            if says_sip:
                sock.sendall(REGISTER)
                wait_for(lambda: t.stats.messages_in == 1, "the REGISTER was not delivered")
            wait_for(lambda: _closed_by_server(sock), "the server never closed the connection")
        stats = t.stats
        assert (stats.closed_unproven, stats.closed_idle) == ((0, 1) if says_sip else (1, 0)), stats
        assert stats.pings_sent == 0 and stats.open_inbound == 0, stats
    finally:
        t.shutdown()
