"""Test helper: run ``voipgw gateway --config FILE`` as a real process (its own home, SIP port, short control
socket path), ask it for its status, scrape its metrics, and probe what a Kamailio location table routes to.
Every process is stopped by PID; ports are held for the process's life."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.phones import _spawn, voipgw_argv
from tests.testbed.baresip import Baresip
from tests.testbed.ports import PortBlock, reserve_block
from tests.testbed.proc import stop_group
from voipgw.sip import registration as sip_registration

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
REGISTER_RECOVERY_S = (
    sip_registration.REGISTER_BACKOFF_CAP_S * (1.0 + sip_registration.REGISTER_BACKOFF_JITTER)
    + sip_registration.REGISTER_ATTEMPT_TIMEOUT_S
    + 10.0
)
"""Longest a registration may take to come back once the PBX is reachable again: a long outage (failing at once
on ICMP port unreachable) has pushed the retry backoff to its cap, so the next attempt can be a whole capped,
jittered delay away, and that attempt may need its full timeout."""


@dataclass
class GatewayProc:
    name: str
    workdir: Path
    config: Path
    sock: Path
    ports: PortBlock
    proc: subprocess.Popen[bytes]
    metrics_port: int | None = None
    _sockdir: Path | None = field(default=None, repr=False)

    @property
    def sip_port(self) -> int:
        """The inside listener (the phones')."""
        return self.ports[0]

    @property
    def web_port(self) -> int:
        """The web phone's HTTP port (``start_config_gateway(web=True)``)."""
        return self.ports[WEB]

    @property
    def outside_port(self) -> int:
        """The outside listener (the PBX's)."""
        return self.ports[OUTSIDE_SIP]

    @property
    def home(self) -> Path:
        return self.workdir / f"{self.name}-home"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self, *extra: str) -> subprocess.CompletedProcess[str]:
        argv = voipgw_argv(self.home, "gateway", "status", "--socket", str(self.sock), *extra)
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    def status_json(self) -> dict[str, Any]:
        out = self.status("--json")
        assert out.returncode == 0, (out.stdout, out.stderr, self.log())
        return dict(json.loads(out.stdout))

    def wait_registered(self, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            snap = self.status_json()
            regs = snap["registrations"]
            if regs and all(r["state"] == "registered" for r in regs):
                return snap
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{self.name} did not register: {regs}\n{self.log()}")
            time.sleep(0.2)

    def metrics(self) -> dict[str, float]:
        assert self.metrics_port is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as resp:
            return parse_metrics(resp.read().decode())

    def terminate(self) -> int:
        """SIGTERM to its process group and wait (bounded); SIGKILL only if it hangs (then the test fails on the
        return code)."""
        stop_group(self.proc, grace=STOP_TIMEOUT_S)
        return int(self.proc.returncode)

    def stop(self) -> None:
        self.terminate()
        self.ports.release()
        if self._sockdir is not None:
            shutil.rmtree(self._sockdir, ignore_errors=True)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, tables: dict[str, dict[str, Any]]) -> Path:
    """A TOML file from ``{"outside": {...}, "users.alice": {...}}`` (the test's settings only)."""
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


GATEWAY_BLOCK = 50
"""Ports a config gateway holds: [0] inside SIP, [1] metrics, [2] outside SIP, [3] the web phone, then each zone's
RTP range."""
OUTSIDE_SIP = 2
WEB = 3
INSIDE_RTP = (10, 29)
OUTSIDE_RTP = (30, 49)


def zone_tables(ports: PortBlock, trusted: bool = True) -> dict[str, dict[str, Any]]:
    """The two zones of a test gateway inside its own port block: both listeners and both RTP ranges (so parallel
    tests never share a port). ``trusted``: inside.auth off with the phones' address (127.0.0.1 only, so the
    attacker at 127.0.0.66 is not trusted) as the trusted network; a test that wants digest overrides it."""
    inside: dict[str, Any] = {
        "listen": f"127.0.0.1:{ports[0]}",
        "rtp_ports": f"{ports[INSIDE_RTP[0]]}-{ports[INSIDE_RTP[1]]}",
    }
    if trusted:
        inside.update(auth=False, trusted_networks=["127.0.0.1/32"])
    return {
        "inside": inside,
        "outside": {
            "listen": f"127.0.0.1:{ports[OUTSIDE_SIP]}",
            "rtp_ports": f"{ports[OUTSIDE_RTP[0]]}-{ports[OUTSIDE_RTP[1]]}",
        },
    }


def start_config_gateway(
    workdir: Path,
    name: str,
    registrar: tuple[str, int],
    users: dict[str, dict[str, Any]],
    *,
    metrics: bool = False,
    extra: dict[str, dict[str, Any]] | None = None,
    log_format: str = "json",
    web: bool = False,
) -> GatewayProc:
    """``voipgw gateway --config`` with ``users`` (``{"alice": {"outside_aor": ..., ...}}``); waits until it
    listens. The control socket lives in a short /tmp folder (Unix socket paths are limited to 107 bytes)."""
    ports = reserve_block(GATEWAY_BLOCK)
    sockdir = Path(tempfile.mkdtemp(prefix="vgops", dir="/tmp"))
    sock = sockdir / "gw.sock"
    zones = zone_tables(ports)
    tables: dict[str, dict[str, Any]] = {
        # The spoken SAS mutes the far end for ~3 s after the answer: off unless ``extra`` turns it on.
        "gateway": {"control_socket": str(sock), "speak_sas": False},
        "inside": zones["inside"],
        "outside": {"registrar": f"{registrar[0]}:{registrar[1]}", "register_expires": 60, **zones["outside"]},
    }
    if metrics:
        tables["metrics"] = {"enabled": True, "address": f"127.0.0.1:{ports[1]}"}
    if web:
        tables["web"] = {"enabled": True, "listen": f"127.0.0.1:{ports[WEB]}"}
    for key, table in (extra or {}).items():
        tables.setdefault(key, {}).update(table)
    for user, table in users.items():
        tables[f"users.{user}"] = table
    config = write_config(workdir / f"{name}.toml", tables)
    argv = voipgw_argv(workdir / f"{name}-home", "gateway", "--config", str(config), "--log-format", log_format)
    gw = GatewayProc(name, workdir, config, sock, ports, _spawn(name, workdir, argv), None, sockdir)
    gw.metrics_port = ports[1] if metrics else None
    deadline = time.monotonic() + READY_TIMEOUT_S
    while "gateway listening on" not in gw.log():
        if gw.proc.poll() is not None or time.monotonic() > deadline:
            gw.stop()
            raise AssertionError(f"{name} did not start; log:\n{gw.log()}")
        time.sleep(0.05)
    return gw


def parse_metrics(text: str) -> dict[str, float]:
    """``{'voipgw_calls_total{security="secure_unverified"}': 1.0, ...}`` from the exposition format."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def options_status(registrar: tuple[str, int], user: str, timeout: float = 5.0) -> int:
    """Send ``OPTIONS sip:user@<registrar>`` to the PBX: 200 when its location table routes ``user`` to a live
    gateway (which answers OPTIONS), 404 when ``user`` is not registered there. Returns the final status code."""
    host, port = registrar
    return sip_request((host, port), "OPTIONS", f"sip:{user}@{host}:{port}", "probe", timeout)


def sip_request(addr: tuple[str, int], method: str, ruri: str, from_user: str, timeout: float = 5.0) -> int:
    """Send one out-of-dialog request (an INVITE carries a minimal PCMU offer) from a fresh loopback port and
    return its final status code; a final response to an INVITE is acknowledged, as RFC 3261 wants."""
    return int(sip_exchange(addr, method, ruri, from_user, timeout).split(" ", 2)[1])


def sip_exchange(
    addr: tuple[str, int], method: str, ruri: str, from_user: str, timeout: float = 5.0, source: str = "127.0.0.1"
) -> str:
    """``sip_request`` from ``source`` (e.g. the attacker's 127.0.0.66), returning the whole final response."""
    host, port = addr
    tag = secrets.token_hex(6)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        lport = sock.getsockname()[1]
        via = f"Via: SIP/2.0/UDP {source}:{lport};branch=z9hG4bK{tag}\r\n"
        frm = f"From: <sip:{from_user}@{source}:{lport}>;tag={tag}\r\n"
        body = (
            f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {lport + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            if method == "INVITE"
            else ""
        )
        msg = (
            f"{method} {ruri} SIP/2.0\r\n{via}{frm}To: <{ruri}>\r\nCall-ID: probe-{tag}\r\n"
            f"CSeq: 1 {method}\r\nContact: <sip:{from_user}@{source}:{lport}>\r\nMax-Forwards: 70\r\n"
            + ("Content-Type: application/sdp\r\n" if body else "")
            + f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        sock.settimeout(0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.sendto(msg.encode(), (host, port))
            try:
                while True:
                    data = sock.recv(65535).decode(errors="replace")
                    code = int(data.split(" ", 2)[1])
                    if code < 200 or f"probe-{tag}" not in data:
                        continue
                    if method == "INVITE":
                        to = next(line for line in data.split("\r\n") if line.lower().startswith(("to:", "t:")))
                        ack = (
                            f"ACK {ruri} SIP/2.0\r\n{via}{frm}{to}\r\nCall-ID: probe-{tag}\r\nCSeq: 1 ACK\r\n"
                            f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                        )
                        sock.sendto(ack.encode(), (host, port))
                    return data
            except TimeoutError:
                continue
    raise AssertionError(f"no final answer to {method} {ruri}")


CALL_TIMEOUT_S = 20.0
PASSWORDS = {"alice": "alice-pbx-pw", "bob": "bob-pbx-pw", "carol": "carol-pbx-pw"}


def user(name: str, phone: Baresip, **extra: Any) -> dict[str, Any]:
    return {
        "outside_aor": f"{name}@127.0.0.1",
        "password": PASSWORDS[name],
        "inside_contact": f"127.0.0.1:{phone.sip_port}",
        "display_name": name.capitalize(),
        **extra,
    }


def wait_live_call(gw: GatewayProc, timeout: float = CALL_TIMEOUT_S) -> dict[str, Any]:
    """The gateway's one active call, once media flows both ways on its outside leg."""
    deadline = time.monotonic() + timeout
    while True:
        calls = gw.status_json()["calls"]
        if len(calls) == 1 and calls[0]["outside_frames_sealed"] > 0 and calls[0]["outside_frames_opened"] > 0:
            return dict(calls[0])
        if time.monotonic() > deadline:
            raise AssertionError(f"no live call with media on {gw.name}: {calls}\n{gw.log()}")
        time.sleep(0.2)


def wait_idle(gw: GatewayProc, finished: int, timeout: float = CALL_TIMEOUT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        snap = gw.status_json()
        if not snap["calls"] and len(snap["finished"]) >= finished:
            return snap
        if time.monotonic() > deadline:
            raise AssertionError(f"{gw.name} still has calls: {snap['calls']}\n{gw.log()}")
        time.sleep(0.2)


def udp_ports_of(pid: int) -> set[int]:
    """The local ports of every UDP socket process ``pid`` holds (from /proc: its fds' socket inodes)."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def zone_port_ranges(gw: GatewayProc) -> tuple[range, range]:
    """The inside and outside RTP ranges ``zone_tables`` gave ``gw``."""
    p = gw.ports
    return range(p[INSIDE_RTP[0]], p[INSIDE_RTP[1]] + 1), range(p[OUTSIDE_RTP[0]], p[OUTSIDE_RTP[1]] + 1)
