"""The gateway's local control socket (Unix, mode 0600; ``{"cmd": "status"}`` in, ``{"ok": ..., "result"|"error": ...}``
out, one JSON object per line), its client, and the ``voipgw gateway status`` table. It only reads a snapshot: it
must never change call state or show key material."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypedDict

log = logging.getLogger(__name__)

SOCKET_NAME = "gateway.sock"
MAX_REQUEST_BYTES = 4096
# A snapshot of many calls is much bigger than a request; the client still bounds what it will read.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_CONNECTIONS = 16
IDLE_TIMEOUT_S = 30.0
BUSY_READ_TIMEOUT_S = 2.0
CLOSE_TIMEOUT_S = 5.0
COMMANDS = frozenset({"status", "ping"})


class ControlError(Exception):
    """A control-socket failure the CLI prints as one line (no gateway running, timeout, bad answer)."""


class RequestError(ValueError):
    """A malformed control request; its message goes back to the client as the JSON error."""


class RegistrationStatus(TypedDict, total=False):
    """One fronted user's outside registration, as ``GatewayRuntime.snapshot()`` reports it."""

    user: str
    aor: str
    state: str  # "registering", "registered", "failed" (retrying with backoff), "unregistered", "stopped"
    granted_s: int  # what the PBX granted; the gateway refreshes at 60 % of it
    since_s: float  # seconds since the state last changed
    expires_in_s: float  # older snapshots: seconds left
    last_error: str


class CallStatus(TypedDict, total=False):
    """One active call (both legs), as ``Gateway.snapshot()`` reports it."""

    call_id: str
    user: str
    direction: str  # "out" (inside phone called) or "in"
    peer: str
    state: str  # "ringing", "active", "held", ...
    security: str  # "E2E", "E2E verified", "NOT SECURE", "refused", ...
    sas: str
    codec: str  # e.g. "PCMU>opus" (transcoded) or "opus" (pass-through)
    frames_in: int
    frames_out: int
    frames_refused: int
    duration_s: float
    reason: str  # why a finished call ended


class MalformedByReason(TypedDict, total=False):
    """Input refused before it reached any call, by reason (only reasons seen so far)."""

    sip: dict[str, int]  # at the SIP socket: runt, non_utf8, bad_start_line, bad_header, oversized, ...
    rtp: dict[str, int]  # at the calls' media sockets, not RTP at all: too-short, bad-version, truncated-csrc, ...


class GatewaySnapshot(TypedDict, total=False):
    """What the status callable returns; every key is optional so the table degrades rather than fails."""

    version: str
    uptime_s: float
    registrations: list[RegistrationStatus]
    calls: list[CallStatus]
    finished: list[CallStatus]
    refused_invites: dict[str, int]  # status code -> INVITEs refused with it (unknown user, policy, key exchange)
    refused_calls: dict[str, int]  # reason (bad-signature, no_key_exchange, sip-486...) -> calls that ended refused
    malformed_by_reason: MalformedByReason
    zone_refusals: dict[str, int]  # reason -> requests refused by a trust-zone rule (voipgw.gateway.zones)
    unanswered_secure_calls: dict[str, int]  # before-reveal / after-reveal / alert (voipgw.probes)
    sas_probe_suspects: list[str]  # AORs over the SAS-probing limit now


SnapshotFn = Callable[[], Mapping[str, Any]]


def _reply(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _error(message: str) -> bytes:
    return _reply({"ok": False, "error": message})


def parse_request(line: bytes) -> str:
    """Return the command of one request line, or raise :class:`RequestError` saying what is wrong."""
    if len(line) > MAX_REQUEST_BYTES:
        raise RequestError(f"request longer than {MAX_REQUEST_BYTES} bytes")
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError("request is not UTF-8") from None
    except (json.JSONDecodeError, RecursionError):
        raise RequestError("request is not JSON") from None
    if not isinstance(obj, dict):
        raise RequestError('request must be a JSON object such as {"cmd": "status"}')
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        raise RequestError('missing "cmd" (a string)')
    extra = set(obj) - {"cmd"}
    if extra:
        raise RequestError(f"unknown field(s): {', '.join(sorted(extra))[:200]}")
    if cmd not in COMMANDS:
        raise RequestError(f"unknown command {cmd[:64]!r} (known: {', '.join(sorted(COMMANDS))})")
    return cmd


def handle_request(line: bytes, snapshot: SnapshotFn) -> bytes:
    """Answer one request line with one response line. Never raises: every failure becomes a JSON error."""
    try:
        cmd = parse_request(line)
    except RequestError as exc:
        return _error(str(exc))
    if cmd == "ping":
        return _reply({"ok": True, "result": {}})
    try:
        result = dict(snapshot())
        return _reply({"ok": True, "result": result})
    except Exception as exc:  # a bug in the snapshot must not take the socket (or the gateway) down
        log.warning("control: status snapshot failed: %s", type(exc).__name__)
        return _error(f"status snapshot failed ({type(exc).__name__})")


class ControlServer:
    """Serves the control protocol on a Unix socket at ``path`` until :meth:`close`.

    Refuses to start when a live gateway already answers at ``path``; a stale socket file is replaced.
    """

    def __init__(self, path: Path, snapshot: SnapshotFn) -> None:
        self.path = path
        self._snapshot = snapshot
        self._server: asyncio.AbstractServer | None = None
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if len(os.fsencode(self.path)) > 107:
            raise ControlError(f"control socket path {self.path} is too long for a Unix socket (max 107 bytes)")
        _remove_stale(self.path)
        # Bind under a restrictive umask so the socket is never world-connectable, even for an instant.
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_REQUEST_BYTES)
        except OSError as exc:
            raise ControlError(f"control socket {self.path}: {exc.strerror or exc}") from None
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            # A connection accepted in the last loop step is still being set up; closing the server under it
            # makes Python 3.11 drop it with an AssertionError and leak its socket. Let it reach _serve first.
            for _ in range(5):
                await asyncio.sleep(0)
            self._server.close()
            # Close the clients' transports rather than cancel their tasks: each handler then sees EOF and ends
            # normally (a cancelled handler makes Python 3.11's stream machinery log a spurious error).
            for writer in list(self._clients.values()):
                writer.close()
            if self._clients:
                _, stuck = await asyncio.wait(list(self._clients), timeout=CLOSE_TIMEOUT_S)
                for task in stuck:
                    task.cancel()
            await self._server.wait_closed()
            self._server = None
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # a home gone read-only or full must not turn a clean stop into an error
                log.warning("could not remove the control socket %s: %s", self.path, exc.strerror or exc)

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        busy = len(self._clients) >= MAX_CONNECTIONS
        # Every handler is tracked, refused ones too, so close() can end them all before the loop goes away.
        self._clients[task] = writer
        try:
            if busy:
                # Read the request first: closing on a client that is still sending makes its send fail with
                # EPIPE instead of showing this answer.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reader.readuntil(b"\n"), BUSY_READ_TIMEOUT_S)
                writer.write(_error("too many control connections"))
                return
            await self._requests(reader, writer)
        except ConnectionError:
            pass
        finally:
            await _close_writer(writer)
            self._clients.pop(task, None)

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), IDLE_TIMEOUT_S)
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    writer.write(handle_request(exc.partial, self._snapshot))
                return
            except asyncio.LimitOverrunError:
                # The rest of an oversized line cannot be framed reliably: answer and hang up.
                writer.write(_error(f"request longer than {MAX_REQUEST_BYTES} bytes"))
                return
            except (TimeoutError, ConnectionError):
                return
            if line.strip():
                writer.write(handle_request(line, self._snapshot))
                await writer.drain()


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def _remove_stale(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlError(f"control socket path {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)
        return
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        probe.close()
    raise ControlError(f"another gateway is already running (control socket {path} answers)")


def request(path: Path, cmd: str = "status", timeout: float = 5.0) -> dict[str, Any]:
    """Send one command to the gateway at ``path`` and return its ``result`` (blocking; for the CLI)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(os.fspath(path))
        except FileNotFoundError:
            raise ControlError(f"no gateway running (control socket {path} not found)") from None
        except ConnectionRefusedError:
            raise ControlError(f"no gateway running (control socket {path} refuses connections)") from None
        except PermissionError:
            raise ControlError(f"control socket {path}: permission denied (run as the gateway's user)") from None
        sock.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        buf = bytearray()
        while b"\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_RESPONSE_BYTES:
                raise ControlError(f"gateway answer longer than {MAX_RESPONSE_BYTES} bytes")
    except TimeoutError:
        raise ControlError(f"gateway did not answer on {path} within {timeout:g} s") from None
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    line, sep, _ = bytes(buf).partition(b"\n")
    if not sep:
        raise ControlError("gateway closed the control connection without an answer")
    try:
        answer = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError("gateway sent a malformed answer") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        raise ControlError("gateway sent a malformed answer")
    if not answer["ok"]:
        raise ControlError(f"gateway: {answer.get('error', 'unknown error')}")
    result = answer.get("result")
    if not isinstance(result, dict):
        raise ControlError("gateway sent a malformed answer")
    return result


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    text = f"{value:.0f}" if isinstance(value, float) else str(value)
    # SIP display names and reasons come from the network: never let them drive the operator's terminal.
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:48]


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return out


def _first(row: Mapping[str, Any], *keys: str) -> Any:
    return next((row[k] for k in keys if row.get(k) not in (None, "")), None)


def _codec(call: Mapping[str, Any]) -> Any:
    if call.get("codec"):
        return call["codec"]
    inside, outside = call.get("inside_codec"), call.get("outside_codec")
    if call.get("passthrough") and outside:
        return f"{outside} (pass-through)"
    if inside and outside and inside != outside:
        return f"{inside}>{outside}"
    return inside or outside


def _call_row(call: Mapping[str, Any]) -> list[str]:
    # Reads both the names documented in CallStatus and those of Gateway.snapshot() (remote_aor, outside_call_id,
    # inside_codec/outside_codec/passthrough, outside_frames_*), so either shape renders.
    return [
        _cell(v)
        for v in (
            _first(call, "call_id", "outside_call_id", "inside_call_id"),
            call.get("user"),
            call.get("direction"),
            _first(call, "peer", "remote_aor"),
            call.get("state"),
            call.get("security"),
            call.get("sas"),
            _codec(call),
            _first(call, "frames_in", "outside_frames_opened"),
            _first(call, "frames_out", "outside_frames_sealed"),
            _first(call, "frames_refused", "outside_frames_refused"),
            _first(call, "pq_epochs", "outside_pq_epochs"),
        )
    ]


_CALL_HEADERS = ["CALL-ID", "USER", "DIR", "PEER", "STATE", "SECURITY", "SAS", "CODEC", "FRAMES IN", "FRAMES OUT"]
"""The table's first columns; a row's last two cells (frames refused, post-quantum epochs completed on a hybrid
call, PROTOCOL.md §B.12) go under REFUSED and PQ."""


def _rows(snapshot: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = snapshot.get(key)
    return [r for r in value if isinstance(r, Mapping)] if isinstance(value, list) else []


def _counts(value: Any, sep: str = " ") -> str | None:
    if not isinstance(value, Mapping):
        return None
    items = [(k, v) for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return ", ".join(f"{_cell(k)}{sep}{v}" for k, v in sorted(items, key=lambda kv: str(kv[0]))) or None


def refusal_summary(snapshot: Mapping[str, Any]) -> str:
    """One line: INVITEs refused by status code, calls refused by reason, malformed SIP and RTP by reason,
    inside-leg datagrams dropped by reason (wrong source, SRTP auth/replay), requests refused by a trust-zone rule
    by reason (``none`` for each empty one)."""
    malformed = snapshot.get("malformed_by_reason")
    malformed = malformed if isinstance(malformed, Mapping) else {}
    return (
        f"refused INVITEs: {_counts(snapshot.get('refused_invites'), ' x') or 'none'}; "
        f"refused calls: {_counts(snapshot.get('refused_calls'), ' x') or 'none'}; "
        f"malformed SIP: {_counts(malformed.get('sip')) or 'none'}; "
        f"malformed RTP: {_counts(malformed.get('rtp')) or 'none'}; "
        f"inside media dropped: {_counts(snapshot.get('inside_media_dropped')) or 'none'}; "
        f"zone rules: {_counts(snapshot.get('zone_refusals')) or 'none'}; "
        f"unanswered secure calls: {_counts(snapshot.get('unanswered_secure_calls')) or 'none'}"
        + _suspects(snapshot.get("sas_probe_suspects"))
    )


def _suspects(value: object) -> str:
    """The SAS-probing alert of the status: the peers over the limit now, if any."""
    if not isinstance(value, list) or not value:
        return ""
    return "; POSSIBLE SAS PROBING from: " + ", ".join(_cell(v) for v in value[:10])


FLAG_MODE = "flag"
"""``mode`` of a gateway started with --listen/--user flags instead of --config."""
FLAG_MODE_NOTE = (
    "flag mode (a lab mode): no registrations to a PBX, no trust zones, no inside authentication, no metrics; "
    "phones are known by address. Deploy with --config FILE."
)


def render_status(snapshot: Mapping[str, Any]) -> str:
    """The ``voipgw gateway status`` text: registrations (or users), active calls with security state, SAS, codec
    and frame counters, then recently finished calls with their reason."""
    lines: list[str] = []
    head = "voipgw gateway"
    if snapshot.get("version"):
        head += f" {_cell(snapshot['version'])}"
    if snapshot.get("listen"):
        head += f" on {_cell(snapshot['listen'])}"
    if isinstance(snapshot.get("uptime_s"), int | float):
        head += f", up {_cell(float(snapshot['uptime_s']))} s"
    lines.append(head)
    if snapshot.get("mode") == FLAG_MODE:
        lines.append(FLAG_MODE_NOTE)
    users = _rows(snapshot, "users")
    if users and "registrations" not in snapshot:
        lines += ["", f"Users ({len(users)})"]
        rows = [
            [_cell(_first(u, "name", "user")), _cell(_first(u, "outside_aor", "aor")), _cell(u.get("contact"))]
            for u in users
        ]
        lines += _table(["USER", "OUTSIDE AOR", "INSIDE CONTACT"], rows)
    else:
        regs = _rows(snapshot, "registrations")
        lines += ["", f"Registrations ({len(regs)})"]
        if regs:
            rows = [
                [
                    _cell(r.get("user")),
                    _cell(r.get("aor")),
                    _cell(r.get("state")),
                    _cell(_first(r, "granted_s", "expires_in_s")),
                    _cell(r.get("since_s")),
                    _cell(r.get("last_error")),
                ]
                for r in regs
            ]
            lines += _table(["USER", "OUTSIDE AOR", "STATE", "GRANTED(s)", "SINCE(s)", "LAST ERROR"], rows)
        else:
            lines.append("  none")
    inside = _rows(snapshot, "inside")
    if inside:
        lines += ["", f"Inside phones ({len(inside)})"]
        rows = [[_cell(p.get(k)) for k in ("user", "state", "contact", "source", "expires_in_s")] for p in inside]
        lines += _table(["USER", "STATE", "CONTACT", "SOURCE", "EXPIRES(s)"], rows)
    calls = _rows(snapshot, "calls")
    lines += ["", f"Active calls ({len(calls)})"]
    if calls:
        lines += _table([*_CALL_HEADERS, "REFUSED", "PQ"], [_call_row(c) for c in calls])
    else:
        lines.append("  none")
    degraded = [c for c in calls if isinstance(c.get("degraded"), Mapping) and c["degraded"].get("active")]
    if degraded:
        # Issue 14: a call whose keys stopped advancing, or that cannot be verified, is never degraded silently.
        lines += ["", f"DEGRADED calls ({len(degraded)})"]
        for c in degraded:
            what = ", ".join(_cell(v) for v in c["degraded"]["active"])
            lines.append(f"  {_cell(c.get('user'))} {_cell(_first(c, 'remote_aor', 'peer'))}: {what}")
    finished = _rows(snapshot, "finished")
    if finished:
        lines += ["", f"Recently finished ({len(finished)})"]
        rows = [[*_call_row(c)[:8], _cell(c.get("reason"))] for c in finished]
        lines += _table([*_CALL_HEADERS[:8], "REASON"], rows)
    if "refused_invites" in snapshot or "malformed_by_reason" in snapshot:
        lines += ["", "Refused since start", "  " + refusal_summary(snapshot).replace("; ", "\n  ")]
    return "\n".join(lines) + "\n"


def socket_path(home: Path, configured: Path | None = None) -> Path:
    """Where the control socket lives: the configured path, else ``<home>/gateway.sock``."""
    return configured if configured is not None else home / SOCKET_NAME
