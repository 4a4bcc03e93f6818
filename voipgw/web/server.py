"""The web phone's server: serves the page (``static/``, package data: no build step, no CDN) and its
WebSocket (``/ws``, the JSON protocol of ``protocol.py``) on ``[web] listen``, HTTPS with the gateway's certificate
or plain HTTP on loopback (checked by the config). It owns the pages' connections: login and resume through
``sessions.py``, one live page per user, expiry. Bad frames are answered with their reason, counted and logged
(rate-limited); a page's misbehaviour never reaches the gateway.

Built on ``websockets`` (its ``process_request`` serves the three static files): one small dependency, no
framework; the page needs nothing else from HTTP.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voipgw.logutil import RateLimitedLog
from voipgw.ops.config import ConfigError, GatewayConfig
from voipgw.web.calls import Phase, WebCall, WebLink
from voipgw.web.protocol import (
    MAX_MESSAGE_BYTES,
    Answer,
    BadMessage,
    CallCommand,
    CloseReason,
    Dial,
    ErrorReason,
    Login,
    Logout,
    Resume,
    closing,
    error,
    parse,
)
from voipgw.web.sessions import LoginRefused, Session, Sessions
from voipgw.web.sipua import Dialog, WebUa

log = logging.getLogger(__name__)
_bad = RateLimitedLog(log)

STATIC: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Only the gateway itself: no inline script, no other host (a page injected into cannot exfiltrate)."""
EXPIRY_CHECK_S = 1.0
_quiet = logging.getLogger("voipgw.web.connections")
_quiet.setLevel(logging.WARNING)
CALL_END_WAIT_S = 10.0


LINE_EXPIRES_S = 120
"""The page's registration at the gateway's inside registrar (refreshed at 60 %) while the page is live."""


@dataclass
class Line:
    """A user's registration at the gateway (so that calls to the user ring the page) while a page of theirs is
    live; ``code`` is the registrar's last answer (403: another phone of the user is registered)."""

    ua: WebUa
    task: asyncio.Task[None] | None = None
    code: int = 0


@dataclass
class Page:
    """One open page (WebSocket connection) and, once logged in, its session and its call."""

    conn: ServerConnection
    session: Session | None = None
    call: WebCall | None = None
    call_task: asyncio.Task[None] | None = None


class WebServer:
    """``await start()``, ``port``, ``await stop()`` (idempotent). ``clock`` is monotonic seconds (tests pass
    their own to expire sessions without waiting)."""

    def __init__(
        self,
        listen: tuple[str, int],
        passwords: Mapping[str, str],
        session_ttl_s: float,
        tls: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
        link: WebLink | None = None,
    ) -> None:
        self.listen = listen
        self.link = link
        """The gateway calls go through (None: sessions only, calls are answered calls-unavailable)."""
        self._passwords = dict(passwords)
        self.tls = tls
        self.clock = clock
        self.sessions = Sessions(passwords, session_ttl_s)
        self.pages: dict[str, Page] = {}
        """The live page of each logged-in user."""
        self.lines: dict[str, Line] = {}
        self.bad_frames: collections.Counter[str] = collections.Counter()
        self.refused_origins = 0
        self._files = {path: (resources.files("voipgw.web").joinpath("static", name).read_bytes(), ctype)
                       for path, (name, ctype) in STATIC.items()}  # fmt: skip
        self._server: Server | None = None
        self._expiry: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.listen[0],
            self.listen[1],
            ssl=self.tls,
            process_request=self._http,
            max_size=MAX_MESSAGE_BYTES,
            server_header=None,
            logger=_quiet,  # not a line per page connection at INFO: the login and refusal lines say what matters
        )
        self._expiry = asyncio.get_running_loop().create_task(self._expire_loop())
        log.info("web phone on %s://%s:%d/", self.scheme, self.listen[0], self.port)

    async def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
            self._expiry = None
        for page in list(self.pages.values()):
            await self._close(page, CloseReason.SHUTDOWN, "the gateway is shutting down")
        for user in list(self.lines):
            await self._close_line(user)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # --- HTTP: the three files, and the WebSocket's origin check -------------------------------------------

    def _http(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if path == "/ws":
            origin = request.headers.get("Origin")
            host = request.headers.get("Host", "")
            # A browser always sends Origin: refusing other sites' pages stops cross-site WebSocket hijacking.
            if origin is not None and origin != f"{self.scheme}://{host}":
                self.refused_origins += 1
                _bad("origin", logging.WARNING, "web phone: WebSocket from origin %r refused", origin[:80])
                return _response(403, "Forbidden", b"wrong origin\n", "text/plain; charset=utf-8")
            return None
        found = self._files.get(path)
        if found is None:
            return _response(404, "Not Found", b"not found\n", "text/plain; charset=utf-8")
        return _response(200, "OK", *found)

    # --- the WebSocket ------------------------------------------------------------------------------------

    async def _handle(self, conn: ServerConnection) -> None:
        page = Page(conn)
        try:
            async for frame in conn:
                if page.session is not None and page.session.expired(self.clock()):
                    self.sessions.expire(self.clock())
                    await self._close(page, CloseReason.EXPIRED, "the session expired: log in again")
                    return
                await self._dispatch(page, frame)
        except ConnectionClosed:
            pass
        finally:
            if page.session is not None and self.pages.get(page.session.user) is page:
                del self.pages[page.session.user]
            await self._end_call(page)  # a closed tab hangs up: no call is left without its page
            await self._page_gone(page)

    async def _page_gone(self, page: Page) -> None:
        """The user's line stays only while a page of theirs is live (a reload's new page takes it over)."""
        if page.session is not None and page.session.user not in self.pages:
            await self._close_line(page.session.user)

    async def _dispatch(self, page: Page, frame: str | bytes) -> None:
        try:
            msg = parse(frame)
        except BadMessage as exc:
            self._bad_frame(page, exc.reason.value, str(exc))
            await page.conn.send(error(exc.reason.value, str(exc)))
            return
        if isinstance(msg, Login | Resume):
            await self._log_in(page, msg)
        elif page.session is None:
            self._bad_frame(page, ErrorReason.NOT_LOGGED_IN.value, "not logged in")
            await page.conn.send(error(ErrorReason.NOT_LOGGED_IN.value, "log in first"))
        elif isinstance(msg, Logout):
            self.sessions.logout(page.session.token)
            await self._close(page, CloseReason.LOGGED_OUT, "logged out")
        elif isinstance(msg, Dial):
            await self._dial(page, page.session, msg)
        elif isinstance(msg, Answer):
            await self._answer(page, msg)
        else:
            await self._command(page, msg)

    async def _dial(self, page: Page, session: Session, msg: Dial) -> None:
        if self.link is None:
            await page.conn.send(error(ErrorReason.CALLS_UNAVAILABLE.value, "this server places no calls"))
            return
        if page.call is not None:
            await page.conn.send(error(ErrorReason.BUSY.value, "hang up the current call first"))
            return

        async def push(view: dict[str, Any]) -> None:
            with contextlib.suppress(ConnectionClosed):
                await page.conn.send(json.dumps({"type": "state", "call": view}))

        call = WebCall(self.link, session.user, self._passwords[session.user], msg.to, push)
        page.call = call
        try:
            answer = await call.start(msg.sdp)
        except Exception as exc:  # a malformed or unusable offer: the page is told, the gateway goes on
            page.call = None
            await call.close()
            _bad("offer", logging.WARNING, "web phone: %s's WebRTC offer refused: %s", session.user, exc)
            await page.conn.send(error(ErrorReason.CALL_FAILED.value, f"the browser's offer is unusable: {exc}"))
            return
        await page.conn.send(json.dumps({"type": "media", "sdp": answer}))
        page.call_task = asyncio.ensure_future(self._run_call(page, call))

    async def _answer(self, page: Page, msg: Answer) -> None:
        call = page.call
        if call is None or call.incoming is None or call.phase is not Phase.RINGING or call.webrtc is not None:
            await page.conn.send(error(ErrorReason.NO_CALL.value, "no incoming call to answer"))
            return
        try:
            answer = await call.start(msg.sdp)
        except Exception as exc:  # an unusable offer: the call rings on; the page may try again or hang up
            call.webrtc = None
            _bad("offer", logging.WARNING, "web phone: answer offer refused: %s", exc)
            await page.conn.send(error(ErrorReason.CALL_FAILED.value, f"the browser's offer is unusable: {exc}"))
            return
        await page.conn.send(json.dumps({"type": "media", "sdp": answer}))
        call.answer()

    # --- the user's line: calls to the user ring the live page ----------------------------------------------

    async def _open_line(self, page: Page, user: str) -> None:
        if self.link is None or user in self.lines:
            return
        line = Line(WebUa(self.link.sip, user, self._passwords[user], self.link.sip[0]))
        line.ua.on_invite = functools.partial(self._ring, user, line)
        await line.ua.open()
        self.lines[user] = line
        line.task = asyncio.ensure_future(self._keep_registered(user, line))

    async def _keep_registered(self, user: str, line: Line) -> None:
        while True:
            code = await line.ua.register(LINE_EXPIRES_S)
            if code != line.code:
                line.code = code
                page = self.pages.get(user)
                if page is not None:
                    with contextlib.suppress(ConnectionClosed):
                        await page.conn.send(json.dumps({"type": "line", "registered": code == 200, "code": code}))
                if code != 200:
                    log.warning("web phone: %s's page cannot take calls: the gateway's registrar answered %d",
                                user, code)  # fmt: skip
            await asyncio.sleep(LINE_EXPIRES_S * 0.6 if code == 200 else 10.0)

    async def _close_line(self, user: str) -> None:
        line = self.lines.pop(user, None)
        if line is None:
            return
        if line.task is not None:
            line.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await line.task
        if line.code == 200:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(line.ua.register(0), 5.0)
        line.ua.close()

    def _ring(self, user: str, line: Line, dialog: Dialog) -> None:
        page = self.pages.get(user)
        if page is None or page.call is not None or self.link is None:
            line.ua.reject(dialog, 486, "Busy Here")
            return
        session_page = page

        async def push(view: dict[str, Any]) -> None:
            with contextlib.suppress(ConnectionClosed):
                await session_page.conn.send(json.dumps({"type": "state", "call": view}))

        call = WebCall(self.link, user, self._passwords[user], dialog.remote_uri.removeprefix("sip:"), push,
                       ringing=(line.ua, dialog))  # fmt: skip
        page.call = call
        page.call_task = asyncio.ensure_future(self._run_call(page, call))

    async def _run_call(self, page: Page, call: WebCall) -> None:
        try:
            await call.run()
        except Exception:
            log.exception("web phone: call to %s failed", call.to)
        finally:
            if page.call is call:
                page.call = None
                page.call_task = None
        if page.session is not None and self.pages.get(page.session.user) is page:
            dialog = call.ua.dialog
            await self._send_directory(page, page.session.user, dialog.call_id if dialog is not None else None)

    async def _send_directory(self, page: Page, user: str, after_call: str | None = None) -> None:
        """The user's contacts and recent calls, after login and after each call."""
        if self.link is None:
            return
        try:
            directory = await self.link.directory(user, after_call)
        except Exception as exc:  # a contact store the file system refuses: the phone works without the list
            log.error("web phone: cannot read %s's contacts: %s", user, exc)
            return
        with contextlib.suppress(ConnectionClosed):
            await page.conn.send(json.dumps({"type": "directory", **directory}))

    async def _command(self, page: Page, msg: CallCommand) -> None:
        call = page.call
        if call is None or (msg is not CallCommand.HANGUP and call.phase is not Phase.ESTABLISHED):
            await page.conn.send(error(ErrorReason.NO_CALL.value, f"no call to {msg.value}"))
        elif msg is CallCommand.HANGUP:
            call.hangup()
        else:
            call.sas(msg is CallCommand.SAS_MATCHES)

    async def _end_call(self, page: Page) -> None:
        task, call = page.call_task, page.call
        if call is not None:
            call.hangup()
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), CALL_END_WAIT_S)

    async def _log_in(self, page: Page, msg: Login | Resume) -> None:
        source = str(page.conn.remote_address[0]) if page.conn.remote_address else "?"
        try:
            if isinstance(msg, Login):
                session = self.sessions.login(msg.user, msg.password, source, self.clock())
            else:
                session = self.sessions.resume(msg.token, self.clock())
        except LoginRefused as exc:
            _bad(f"login-{exc.reason.value}", logging.WARNING, "web phone: login from %s refused: %s", source,
                 exc.reason.value)  # fmt: skip
            await page.conn.send(error(exc.reason.value, _LOGIN_MESSAGES[exc.reason.value]))
            return
        if page.session is not None and page.session.user != session.user:
            await self._close(page, CloseReason.REPLACED, "logged in as another user on this page")
            return
        old = self.pages.get(session.user)
        if old is not None and old is not page:
            await self._close(old, CloseReason.REPLACED, "this user opened the web phone on another page")
        page.session = session
        self.pages[session.user] = page
        log.info("web phone: %s %s from %s", session.user, "logged in" if isinstance(msg, Login) else "resumed",
                 source)  # fmt: skip
        await page.conn.send(
            json.dumps(
                {
                    "type": "session",
                    "user": session.user,
                    "token": session.token,
                    "expires_in_s": round(session.expires_at - self.clock()),
                }
            )
        )
        await page.conn.send(json.dumps({"type": "state", "call": None}))
        await self._send_directory(page, session.user)
        await self._open_line(page, session.user)

    def _bad_frame(self, page: Page, reason: str, detail: str) -> None:
        self.bad_frames[reason] += 1
        who = page.session.user if page.session is not None else "(not logged in)"
        _bad(f"frame-{reason}", logging.WARNING, "web phone: bad message from %s: %s: %s", who, reason, detail)

    async def _close(self, page: Page, reason: CloseReason, message: str) -> None:
        if page.session is not None and self.pages.get(page.session.user) is page:
            del self.pages[page.session.user]
        await self._end_call(page)
        with contextlib.suppress(ConnectionClosed):
            await page.conn.send(closing(reason, message))
        await page.conn.close(1000, reason.value)
        await self._page_gone(page)

    async def expire_sessions(self) -> int:
        """Close the pages whose session's time is up; returns how many (run every second)."""
        now = self.clock()
        self.sessions.expire(now)
        gone = [p for p in self.pages.values() if p.session is not None and p.session.expired(now)]
        for page in gone:
            await self._close(page, CloseReason.EXPIRED, "the session expired: log in again")
        return len(gone)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_CHECK_S)
            try:
                await self.expire_sessions()
            except Exception:  # one page's broken socket must not stop expiry for the others
                log.exception("web phone: session expiry failed")

    def status(self) -> dict[str, Any]:
        return {
            "pages": sorted(self.pages),
            "lines": {user: line.code for user, line in sorted(self.lines.items())},
            "sessions": len(self.sessions),
            "refused_logins": dict(self.sessions.refused),
            "bad_frames": dict(self.bad_frames),
            "refused_origins": self.refused_origins,
        }


_LOGIN_MESSAGES = {
    "bad-credentials": "wrong user name or password",
    "too-many-attempts": "too many failed logins from this address: wait a minute",
    "session-expired": "the session expired: log in again",
    "session-unknown": "this session is no longer valid: log in again",
}


def _response(status: int, phrase: str, body: bytes, ctype: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Content-Security-Policy", CSP),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
        ]
    )
    return Response(status, phrase, headers, body)


def web_server(config: GatewayConfig, link: WebLink | None = None) -> WebServer:
    """The web phone of a gateway configured with ``[web] enabled``: HTTPS with the gateway's own certificate
    (``outside.tls_cert_file``), else plain HTTP (the config allows that on loopback only)."""
    tls = None
    cert, key = config.outside.tls_cert_file, config.outside.tls_key_file
    if cert is not None and key is not None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"web: cannot load outside.tls_cert_file {cert}: {exc}") from None
    passwords = {u.name: u.inside_password for u in config.users.values() if u.inside_password}
    return WebServer(config.web.listen, passwords, config.web.session_ttl_s, tls, link=link)
