"""The web phone's server (voipgw.web.server) with a real WebSocket client and real HTTP requests on loopback:
the page and its headers, login, wrong password, expired session, a second tab, a reload, bad frames, origins,
and HTTPS with the gateway's certificate."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.pki import make_pki
from voipgw.ops.config import ConfigError, gateway_config_from_mapping
from voipgw.web.server import CSP, WebServer, web_server

PASSWORDS = {"alice": "alice-inside-pw", "bob": "bob-inside-pw"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running(clock: Clock, ttl_s: float = 3600.0, tls: ssl.SSLContext | None = None) -> AsyncIterator[WebServer]:
    server = WebServer(("127.0.0.1", 0), PASSWORDS, ttl_s, tls, clock)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def recv(ws: ClientConnection) -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return msg


async def login(ws: ClientConnection, user: str = "alice", password: str | None = None) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "login", "user": user, "password": password or PASSWORDS[user]}))
    return await recv(ws)


def url(server: WebServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


def get(port: int, path: str, context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        if context is not None
        else http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    )
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_the_page_is_three_files_from_the_gateway_with_a_strict_policy() -> None:
    async def test() -> None:
        async with running(Clock()) as server:
            status, headers, body = await asyncio.to_thread(get, server.port, "/")
            assert status == 200 and headers["content-type"].startswith("text/html")
            assert headers["content-security-policy"] == CSP and "default-src 'none'" in CSP
            assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"
            page = body.decode()
            assert 'src="/app.js"' in page and 'href="/app.css"' in page
            assert "http://" not in page and "https://" not in page  # nothing from another host
            for path, ctype in (("/app.js", "text/javascript"), ("/app.css", "text/css")):
                status, headers, body = await asyncio.to_thread(get, server.port, path)
                assert status == 200 and headers["content-type"].startswith(ctype) and body
                assert b"http://" not in body and b"https://" not in body
            status, _, _ = await asyncio.to_thread(get, server.port, "/../etc/passwd")
            assert status == 404
            status, _, _ = await asyncio.to_thread(get, server.port, "/static/index.html")
            assert status == 404

    run(test)


def test_wrong_password_then_login_then_calls_need_a_session() -> None:
    async def test() -> None:
        async with running(Clock()) as server, connect(url(server)) as ws:
            await ws.send(json.dumps({"type": "dial", "to": "201", "sdp": "v=0"}))
            assert (await recv(ws))["reason"] == "not-logged-in"
            refused = await login(ws, password="nope")
            assert refused == {"type": "error", "reason": "bad-credentials", "message": "wrong user name or password"}
            unknown = await login(ws, user="mallory", password="alice-inside-pw")
            assert unknown["reason"] == "bad-credentials"  # an unknown user reads the same as a wrong password
            session = await login(ws)
            assert session["type"] == "session" and session["user"] == "alice" and session["expires_in_s"] == 3600
            assert await recv(ws) == {"type": "state", "call": None}
            assert server.status()["pages"] == ["alice"]
            assert server.sessions.refused == {"bad-credentials": 2}
            # A server with no gateway behind it says so; the call buttons need a call.
            await ws.send(json.dumps({"type": "dial", "to": "201", "sdp": "v=0"}))
            assert (await recv(ws))["reason"] == "calls-unavailable"
            for command in ("hangup", "sas-matches", "sas-mismatch"):
                await ws.send(json.dumps({"type": command}))
                assert (await recv(ws))["reason"] == "no-call"
            await ws.send(json.dumps({"type": "answer", "sdp": "v=0"}))
            assert (await recv(ws))["reason"] == "no-call"

    run(test)


def test_bad_frames_are_answered_with_the_reason_and_counted() -> None:
    async def test() -> None:
        async with running(Clock()) as server, connect(url(server)) as ws:
            for frame, reason in (("{", "bad-json"), ("[]", "not-an-object"), ('{"type":"rm"}', "unknown-type")):
                await ws.send(frame)
                assert (await recv(ws))["reason"] == reason
            await ws.send(b"\x00\x01")
            assert (await recv(ws))["reason"] == "bad-json"
            await login(ws)
            await recv(ws)
            await ws.send(json.dumps({"type": "dial"}))
            assert (await recv(ws))["reason"] == "bad-field"
            assert server.bad_frames == {"bad-json": 2, "not-an-object": 1, "unknown-type": 1, "bad-field": 1}
        async with running(Clock()) as server, connect(url(server)) as ws:
            await ws.send("x" * 20_000)  # over the frame limit: the connection is closed, the server goes on
            with pytest.raises(ConnectionClosed):
                await recv(ws)
            async with connect(url(server)) as again:
                assert (await login(again))["type"] == "session"

    run(test)


def test_a_second_tab_replaces_the_first_and_a_reload_resumes() -> None:
    async def test() -> None:
        async with running(Clock()) as server:
            async with connect(url(server)) as first, connect(url(server)) as second:
                token = (await login(first))["token"]
                await recv(first)
                session2 = await login(second)
                assert session2["type"] == "session" and session2["token"] != token
                closed = await recv(first)
                assert closed["type"] == "closed" and closed["reason"] == "session-replaced"
                assert "another page" in closed["message"]
                with pytest.raises(ConnectionClosed):
                    await recv(first)
                assert server.pages["alice"].session is not None
                assert server.pages["alice"].session.token == session2["token"]
                # Bob on his own page is untouched by Alice's tabs.
                async with connect(url(server)) as bob:
                    assert (await login(bob, "bob"))["user"] == "bob"
                    assert sorted(server.pages) == ["alice", "bob"]
            # A reload: the tab's token, on a new connection, resumes the same session.
            async with connect(url(server)) as reloaded:
                await reloaded.send(json.dumps({"type": "resume", "token": session2["token"]}))
                resumed = await recv(reloaded)
                assert resumed["type"] == "session" and resumed["token"] == session2["token"]
                assert (await recv(reloaded))["type"] == "state"
                await reloaded.send(json.dumps({"type": "logout"}))
                assert (await recv(reloaded))["reason"] == "logged-out"
            async with connect(url(server)) as after:
                await after.send(json.dumps({"type": "resume", "token": session2["token"]}))
                assert (await recv(after))["reason"] == "session-unknown"

    run(test)


def test_an_expired_session_closes_the_page_and_cannot_resume() -> None:
    async def test() -> None:
        clock = Clock()
        async with running(clock, ttl_s=600.0) as server:
            async with connect(url(server)) as ws:
                token = (await login(ws))["token"]
                await recv(ws)
                clock.now += 599.0
                assert await server.expire_sessions() == 0
                clock.now += 1.0
                assert await server.expire_sessions() == 1
                closed = await recv(ws)
                assert closed == {
                    "type": "closed",
                    "reason": "session-expired",
                    "message": "the session expired: log in again",
                }
            async with connect(url(server)) as ws:
                await ws.send(json.dumps({"type": "resume", "token": token}))
                assert (await recv(ws))["reason"] in ("session-expired", "session-unknown")
                assert (await login(ws))["type"] == "session"  # the password still works
            # Expiry noticed by the next message too, before the periodic check runs.
            async with connect(url(server)) as ws:
                await login(ws)
                await recv(ws)
                clock.now += 600.0
                await ws.send(json.dumps({"type": "hangup"}))
                assert (await recv(ws))["reason"] == "session-expired"
            assert server.pages == {}

    run(test)


def test_another_sites_page_cannot_open_the_websocket() -> None:
    async def test() -> None:
        async with running(Clock()) as server:
            with pytest.raises(InvalidStatus) as exc:
                async with connect(url(server), origin="https://evil.example"):  # type: ignore[arg-type]
                    pass
            assert exc.value.response.status_code == 403 and server.refused_origins == 1
            own = f"http://127.0.0.1:{server.port}"
            async with connect(url(server), origin=own) as ws:  # type: ignore[arg-type]
                assert (await login(ws))["type"] == "session"

    run(test)


def test_https_with_the_gateways_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(*pki.kamailio)
    client_tls = ssl.create_default_context(cafile=str(pki.ca))
    client_tls.check_hostname = False  # the test certificate is for the IP address, not a name

    async def test() -> None:
        async with running(Clock(), tls=server_tls) as server:
            assert server.scheme == "https"
            status, _, body = await asyncio.to_thread(get, server.port, "/", client_tls)
            assert status == 200 and b"voipgw web phone" in body
            async with connect(f"wss://127.0.0.1:{server.port}/ws", ssl=client_tls) as ws:
                assert (await login(ws))["type"] == "session"
            with pytest.raises((OSError, ConnectionClosed, http.client.HTTPException)):
                await asyncio.to_thread(get, server.port, "/")  # plain HTTP to the HTTPS port gets nothing

    run(test)


def test_the_gateway_config_serves_https_with_its_certificate_and_refuses_a_bad_one(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    cert, key = pki.kamailio
    data: dict[str, Any] = {
        "inside": {"listen": "127.0.0.1:0"},
        "outside": {"registrar": "127.0.0.1:5060", "tls_cert_file": str(cert), "tls_key_file": str(key)},
        "users": {"alice": {"outside_aor": "alice@pbx.test", "inside_password": "alice-inside-pw"}},
        "web": {"enabled": True, "listen": "0.0.0.0:0"},
    }
    client_tls = ssl.create_default_context(cafile=str(pki.ca))
    client_tls.check_hostname = False

    async def test() -> None:
        server = web_server(gateway_config_from_mapping(data))
        await server.start()
        try:
            assert server.scheme == "https"
            status, _, body = await asyncio.to_thread(get, server.port, "/app.js", client_tls)
            assert status == 200 and b"WebSocket" in body
            async with connect(f"wss://127.0.0.1:{server.port}/ws", ssl=client_tls) as ws:
                assert (await login(ws))["user"] == "alice"
        finally:
            await server.stop()

    run(test)
    key.write_text("not a key")
    with pytest.raises(ConfigError, match=r"web: cannot load outside\.tls_cert_file"):
        web_server(gateway_config_from_mapping(data))
