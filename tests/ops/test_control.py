"""The gateway control socket: protocol, permissions, malformed input, client errors and the status table."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voipgw.ops.control import (
    MAX_CONNECTIONS,
    MAX_REQUEST_BYTES,
    ControlError,
    ControlServer,
    handle_request,
    render_status,
    request,
    socket_path,
)

SNAPSHOT: dict[str, Any] = {
    "version": "0.1.0",
    "uptime_s": 42.0,
    "registrations": [
        {"user": "alice", "aor": "alice@pbx.test", "state": "registered", "expires_in_s": 280.0},
        {"user": "bob", "aor": "bob@pbx.test", "state": "failed", "last_error": "403 Forbidden"},
    ],
    "calls": [
        {
            "call_id": "c1@gw",
            "user": "alice",
            "direction": "out",
            "peer": "carol@pbx.test",
            "state": "active",
            "security": "E2E",
            "sas": "4XJ9",
            "codec": "PCMU>opus",
            "frames_in": 1234,
            "frames_out": 1240,
        }
    ],
}


@pytest.fixture
def home() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 107-byte limit of a Unix socket path; /tmp keeps it short.
    d = Path(tempfile.mkdtemp(prefix="vgops", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def serve(path: Path, snapshot: Callable[[], Any], body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        async with ControlServer(path, snapshot):
            await asyncio.wait_for(body(), 20)

    asyncio.run(main())


def raw_exchange(path: Path, payload: bytes, answers: int) -> list[dict[str, Any]]:
    """Send raw bytes and read ``answers`` response lines (blocking; run in a thread)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(os.fspath(path))
        s.sendall(payload)
        buf = b""
        while buf.count(b"\n") < answers:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return [json.loads(line) for line in buf.splitlines()]


def test_status_round_trip_and_socket_is_private(home: Path) -> None:
    path = socket_path(home / "state")
    assert path == home / "state" / "gateway.sock" and socket_path(home, Path("/x.sock")) == Path("/x.sock")
    got: dict[str, Any] = {}

    async def body() -> None:
        got["mode"] = stat.S_IMODE(path.stat().st_mode)
        got["dir_mode"] = stat.S_IMODE(path.parent.stat().st_mode)
        got["status"] = await asyncio.to_thread(request, path)
        got["ping"] = await asyncio.to_thread(request, path, "ping")

    serve(path, lambda: SNAPSHOT, body)
    assert got["mode"] == 0o600 and got["dir_mode"] == 0o700
    assert got["status"] == SNAPSHOT
    assert got["ping"] == {}
    assert not path.exists(), "close() removes the socket file"


def test_malformed_requests_get_errors_and_the_connection_survives(home: Path) -> None:
    path = home / "gw.sock"
    bad = [b"not json", b"[1,2]", b'{"cmd": 5}', b'{"cmd": "reboot"}', b'{"cmd":"status","x":1}', b"\xff\xfe", b"{}"]
    answers: list[dict[str, Any]] = []

    async def body() -> None:
        payload = b"\n".join(bad) + b'\n{"cmd": "status"}\n'
        answers.extend(await asyncio.to_thread(raw_exchange, path, payload, len(bad) + 1))

    serve(path, lambda: SNAPSHOT, body)
    assert [a["ok"] for a in answers] == [False] * len(bad) + [True]
    assert all(isinstance(a["error"], str) and a["error"] for a in answers[:-1])
    assert "unknown command 'reboot'" in answers[3]["error"]
    assert answers[-1]["result"] == SNAPSHOT


def test_oversized_request_is_refused_and_the_server_keeps_serving(home: Path) -> None:
    path = home / "gw.sock"
    answers: list[dict[str, Any]] = []

    async def body() -> None:
        answers.extend(await asyncio.to_thread(raw_exchange, path, b"x" * (MAX_REQUEST_BYTES * 4) + b"\n", 1))
        answers.append(await asyncio.to_thread(request, path))

    serve(path, lambda: SNAPSHOT, body)
    assert answers[0]["ok"] is False and "longer than" in answers[0]["error"]
    assert answers[1] == SNAPSHOT


def test_failing_snapshot_is_a_json_error_not_a_crash(home: Path) -> None:
    path = home / "gw.sock"
    calls = {"n": 0}

    def snapshot() -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        if calls["n"] == 2:
            return {"calls": [object()]}  # not JSON-serialisable
        return SNAPSHOT

    errors: list[str] = []

    async def body() -> None:
        for _ in range(2):
            with pytest.raises(ControlError) as info:
                await asyncio.to_thread(request, path)
            errors.append(str(info.value))
        assert await asyncio.to_thread(request, path) == SNAPSHOT

    serve(path, snapshot, body)
    assert errors[0] == "gateway: status snapshot failed (RuntimeError)"
    assert errors[1] == "gateway: status snapshot failed (TypeError)"


def test_connection_cap(home: Path) -> None:
    path = home / "gw.sock"
    result: list[dict[str, Any]] = []

    def clients() -> None:
        held = []
        try:
            for _ in range(MAX_CONNECTIONS):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                held.append(s)
                s.settimeout(10)
                s.connect(os.fspath(path))
                s.sendall(b'{"cmd":"ping"}\n')
                assert json.loads(s.recv(4096))["ok"] is True  # served, so counted
            result.extend(raw_exchange(path, b'{"cmd":"ping"}\n', 1))
        finally:
            for s in held:
                s.close()

    async def body() -> None:
        await asyncio.to_thread(clients)
        # The held connections are gone: a new client is served again.
        for _ in range(100):
            try:
                await asyncio.to_thread(request, path, "ping")
                return
            except ControlError:
                await asyncio.sleep(0.05)
        raise AssertionError("server did not recover after the capped clients left")

    serve(path, lambda: SNAPSHOT, body)
    assert result == [{"ok": False, "error": "too many control connections"}]


def test_second_gateway_is_refused_and_stale_socket_is_replaced(home: Path) -> None:
    path = home / "gw.sock"

    async def body() -> None:
        with pytest.raises(ControlError, match="already running"):
            await ControlServer(path, dict).start()

    serve(path, lambda: SNAPSHOT, body)

    # A socket file left by a killed gateway: nobody listens, so the next start replaces it.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(path))
    stale.close()
    assert path.exists()
    got: list[dict[str, Any]] = []

    async def body2() -> None:
        got.append(await asyncio.to_thread(request, path))

    serve(path, lambda: SNAPSHOT, body2)
    assert got == [SNAPSHOT]

    path.write_text("not a socket")

    async def start_on_file() -> None:
        await ControlServer(path, dict).start()

    with pytest.raises(ControlError, match="not a socket"):
        asyncio.run(start_on_file())


def test_client_errors_are_one_line(home: Path) -> None:
    with pytest.raises(ControlError, match=r"^no gateway running \(control socket .* not found\)$"):
        request(home / "missing.sock")
    # A server that accepts but never answers.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(os.fspath(home / "mute.sock"))
        mute.listen(1)
        with pytest.raises(ControlError, match="did not answer"):
            request(home / "mute.sock", timeout=0.3)


def test_deeply_nested_json_is_an_error_not_a_recursion_crash() -> None:
    for line in (b"[" * 2000 + b"]" * 2000, b'{"cmd":' * 500 + b"1" + b"}" * 500):
        answer = json.loads(handle_request(line, lambda: SNAPSHOT))
        assert answer["ok"] is False and answer["error"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=MAX_REQUEST_BYTES + 64))
def test_fuzz_raw_bytes_always_get_one_json_line(line: bytes) -> None:
    out = handle_request(line, lambda: SNAPSHOT)
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    answer = json.loads(out)
    assert isinstance(answer["ok"], bool)
    assert answer["ok"] is (answer.get("result") == SNAPSHOT or answer.get("result") == {})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["cmd", "args", "x"]), json_values, max_size=3) | json_values)
def test_fuzz_json_shapes(obj: Any) -> None:
    answer = json.loads(handle_request(json.dumps(obj).encode(), lambda: SNAPSHOT))
    valid = isinstance(obj, dict) and set(obj) == {"cmd"} and obj["cmd"] in ("status", "ping")
    assert answer["ok"] is valid
    if not valid:
        assert isinstance(answer["error"], str) and len(answer["error"]) < 400


def test_render_status_shows_security_sas_codec_and_frames() -> None:
    text = render_status(SNAPSHOT)
    lines = text.splitlines()
    assert lines[0] == "voipgw gateway 0.1.0, up 42 s"
    assert "Registrations (2)" in lines and "Active calls (1)" in lines
    row = next(line for line in lines if line.startswith("c1@gw"))
    for cell in ("alice", "out", "carol@pbx.test", "active", "E2E", "4XJ9", "PCMU>opus", "1234", "1240"):
        assert cell in row.split()
    header = lines[lines.index(row) - 1]
    assert header.split()[:2] == ["CALL-ID", "USER"] and "SAS" in header and "FRAMES" in header
    bob = next(line for line in lines if line.startswith("bob"))
    assert "failed" in bob and "403 Forbidden" in bob and " - " in bob


def test_render_status_empty_and_hostile_values() -> None:
    assert render_status({}).splitlines() == [
        "voipgw gateway",
        "",
        "Registrations (0)",
        "  none",
        "",
        "Active calls (0)",
        "  none",
    ]
    evil = {
        "calls": [{"call_id": "x", "peer": "\x1b[2J\x1b]0;pwned\x07eve", "security": "NOT SECURE"}],
        "registrations": ["junk"],
    }
    text = render_status(evil)
    assert "\x1b" not in text and "\x07" not in text
    assert "?[2J" in text and "NOT SECURE" in text and "Registrations (0)" in text


def test_render_status_reads_the_gateway_core_snapshot_shape() -> None:
    # The shape Gateway.snapshot() returns (voipgw/gateway.py), written out here so this test does not depend on it.
    call = {
        "user": "alice",
        "direction": "out",
        "remote_aor": "bob@pbx.test",
        "state": "active",
        "reason": None,
        "outside_call_id": "out-1@gw",
        "inside_call_id": "in-1@phone",
        "security": "secure, unverified",
        "sas": "d7d3",
        "inside_codec": "PCMU",
        "outside_codec": "opus",
        "passthrough": False,
        "outside_frames_sealed": 250,
        "outside_frames_opened": 249,
        "outside_frames_refused": 1,
    }
    snap = {
        "listen": "127.0.0.1:5070",
        "users": [{"name": "alice", "outside_aor": "alice@pbx.test", "contact": "127.0.0.1:5062"}],
        "calls": [call, {**call, "outside_call_id": "out-2@gw", "inside_codec": "opus", "passthrough": True}],
        "finished": [
            {**call, "outside_call_id": "out-0@gw", "state": "ended", "reason": "busy", "security": "refused"}
        ],
    }
    lines = render_status(snap).splitlines()
    assert lines[0] == "voipgw gateway on 127.0.0.1:5070"
    assert "Users (1)" in lines and "Active calls (2)" in lines and "Recently finished (1)" in lines
    assert "alice@pbx.test" in next(line for line in lines if line.startswith("alice"))
    one = next(line for line in lines if line.startswith("out-1@gw"))
    for cell in ("bob@pbx.test", "secure, unverified", "d7d3", "PCMU>opus", "249", "250"):
        assert cell in one
    assert one.split()[-4:] == ["249", "250", "1", "-"]  # frames in, out, refused; no PQ epochs (a classical call)
    assert "opus (pass-through)" in next(line for line in lines if line.startswith("out-2@gw"))
    ended = next(line for line in lines if line.startswith("out-0@gw"))
    assert ended.split()[-1] == "busy" and "refused" in ended


def test_render_status_lists_degraded_calls_apart() -> None:
    calls = [
        {**SNAPSHOT["calls"][0], "degraded": {"active": ["no-peer-dh-step"], "seen": ["no-peer-dh-step"]}},
        {**SNAPSHOT["calls"][0], "call_id": "c2@gw", "user": "bob", "degraded": {"active": [], "seen": ["x"]}},
    ]
    lines = render_status({**SNAPSHOT, "calls": calls}).splitlines()
    at = lines.index("DEGRADED calls (1)")
    assert lines[at + 1] == "  alice carol@pbx.test: no-peer-dh-step"
    assert not any("bob" in line for line in lines[at:])
    assert "DEGRADED" not in render_status(SNAPSHOT)
