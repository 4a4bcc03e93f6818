"""A userspace rtpengine media relay for tests (table=-1), with its ng control port and its own RTP ports.

Owns the rtpengine process it starts and stops it by PID; never loads the kernel module or leaves loopback.
Give Kamailio `ng_socket` ("udp:127.0.0.1:PORT") for `modparam("rtpengine", "rtpengine_sock", ...)`.

Pitfalls (measured): the `rtpengine` metapackage pulls a dkms kernel module, so only rtpengine-daemon is
used; `table = -1` keeps forwarding in userspace; the ng port is bound a little after start, so readiness
is an ng `ping` answered with `pong`; ng messages are "<cookie> <bencoded dict>" and the reply echoes the
cookie. With the Kamailio flags "replace-origin replace-session-connection" rtpengine 10.5 rewrites the
addresses and ports only: SSRC, sequence numbers and timestamps pass through unchanged.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any

from tests.support.requires import need
from tests.testbed.ported import PortedProcess
from tests.testbed.ports import PortBlock
from tests.testbed.proc import ManagedProcess

# Block layout: ng +0, cli +1, RTP from +10 to the end (rtpengine wants an even start).
BLOCK_SIZE = 200
CLI_OFFSET = 1
RTP_OFFSET = 10
READY_TIMEOUT = 10.0
NG_TIMEOUT = 2.0

Bencodable = int | bytes | str | list[Any] | dict[Any, Any]


def bencode(value: Bencodable) -> bytes:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """Decode one bencoded value; byte strings come back as str when they are UTF-8, else bytes."""
    value, end = _bdecode(data, 0)
    if end != len(data):
        raise ValueError(f"trailing bytes after bencoded value at {end}")
    return value


def _bdecode(data: bytes, i: int) -> tuple[Any, int]:
    c = data[i : i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1 : end]), end + 1
    if c == b"l":
        i += 1
        items = []
        while data[i : i + 1] != b"e":
            v, i = _bdecode(data, i)
            items.append(v)
        return items, i + 1
    if c == b"d":
        i += 1
        d: dict[Any, Any] = {}
        while data[i : i + 1] != b"e":
            k, i = _bdecode(data, i)
            v, i = _bdecode(data, i)
            d[k] = v
        return d, i + 1
    if c.isdigit():
        colon = data.index(b":", i)
        n = int(data[i:colon])
        raw = data[colon + 1 : colon + 1 + n]
        if len(raw) != n:
            raise ValueError("truncated bencoded string")
        try:
            return raw.decode(), colon + 1 + n
        except UnicodeDecodeError:
            return raw, colon + 1 + n
    raise ValueError(f"bad bencode at offset {i}")


def ng_request(port: int, command: dict[str, Any], timeout: float = NG_TIMEOUT) -> dict[str, Any]:
    """Send one ng command (e.g. {"command": "ping"}) to 127.0.0.1:`port` and return the decoded reply."""
    cookie = secrets.token_hex(6).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(cookie + b" " + bencode(command), ("127.0.0.1", port))
        deadline = time.monotonic() + timeout
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(65535)
            got_cookie, _, body = data.partition(b" ")
            if got_cookie == cookie:
                reply = bdecode(body)
                if not isinstance(reply, dict):
                    raise ValueError(f"ng reply is not a dictionary: {reply!r}")
                return reply


class Rtpengine(PortedProcess):
    """Context manager running one userspace rtpengine; `ng_port`, `ng_socket` and `rtp_range` describe it."""

    NAME = "rtpengine"
    BLOCK_SIZE = BLOCK_SIZE
    RTP_OFFSET = RTP_OFFSET

    def __init__(self, workdir: Path, *, ports: PortBlock | None = None, log_level: int = 6) -> None:
        self.dir = workdir / "rtpengine"
        super().__init__(ports)
        self.log_level = log_level
        self.proc: ManagedProcess | None = None

    @property
    def ng_port(self) -> int:
        return self.ports[0]

    @property
    def ng_socket(self) -> str:
        """The value for Kamailio's `modparam("rtpengine", "rtpengine_sock", ...)`."""
        return f"udp:127.0.0.1:{self.ng_port}"

    def _write_config(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        lo, hi = self.rtp_range
        conf = self.dir / "rtpengine.conf"
        conf.write_text(
            f"""\
[rtpengine]
table = -1
interface = 127.0.0.1
listen-ng = 127.0.0.1:{self.ng_port}
listen-cli = 127.0.0.1:{self.ports[CLI_OFFSET]}
port-min = {lo}
port-max = {hi}
foreground = true
log-stderr = true
log-level = {self.log_level}
pidfile = {self.dir / "rtpengine.pid"}
num-threads = 2
delete-delay = 0
"""
        )
        return conf

    def start(self) -> Rtpengine:
        need("rtpengine")
        self._reserve_ports()
        try:
            conf = self._write_config()
            self.proc = ManagedProcess(
                ["rtpengine", f"--config-file={conf}", "--config-section=rtpengine"], name="rtpengine", log_dir=self.dir
            )
            self.proc.wait_until(self._pong, READY_TIMEOUT, "an ng ping answered with pong")
        except BaseException:
            self.stop()
            raise
        return self

    def _pong(self) -> bool:
        try:
            return self.ping()
        except (TimeoutError, ConnectionRefusedError, OSError, ValueError):
            return False

    def ping(self) -> bool:
        return ng_request(self.ng_port, {"command": "ping"}, timeout=0.3).get("result") == "pong"

    def ng(self, command: dict[str, Any]) -> dict[str, Any]:
        return ng_request(self.ng_port, command)

    def stop(self) -> int:
        rc = -1
        if self.proc is not None:
            rc = self.proc.stop(grace=3.0)
            pidfile = self.dir / "rtpengine.pid"
            if pidfile.exists():
                os.unlink(pidfile)
        self._release_ports()
        return rc
