"""A headless baresip softphone for tests: config dir, aufile source, sndfile recording, ctrl_tcp control.

Owns one baresip process per instance and stops it by PID; never uses the stdio module or a sound device.
Pitfalls (measured): `net_interface` must be 127.0.0.1, not `lo`; baresip binds TLS on SIP port+1 and TCP on
the SIP port, so each instance gets its own port block; with stdin /dev/null the stdio module spins, so it is
not loaded; when the registrar is already gone the first SIGTERM only starts un-REGISTER, so a second SIGTERM
is sent; the aufile source ends the call at the end of its file (from EITHER side: give the callee a long
file); sndfile writes `dump-<date-time>-dec.wav` (received) and `-enc.wav` (sent) in `snd_path`, named to the
second, so two calls on one instance in the same second overwrite each other (opus dumps are 48 kHz
stereo, G.722 16 kHz: give the aufile source the codec's rate or correlation drops to ~0.93); an unknown
`audio_codecs` entry (e.g. opus/48000/1, or opus with `opus_stereo no`) makes baresip offer ALL codecs, so
start() fails on it; received DTMF arrives as CALL_DTMF_START events; ctrl_tcp speaks JSON netstrings
(`<len>:<json>,`) and events carry their name in "type"; the `uuid` file is pasted verbatim into the
Contact's +sip.instance, so a trailing newline in it makes every REGISTER unparseable.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import signal
import socket
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.requires import need
from tests.testbed.ported import PortedProcess
from tests.testbed.ports import PortBlock, port_is_bound
from tests.testbed.proc import ManagedProcess, TestbedError

# Block layout: SIP on +0 (UDP/TCP), TLS on +1, ctrl_tcp on +2, RTP from +10 to the end.
BLOCK_SIZE = 50
CTRL_OFFSET = 2
RTP_OFFSET = 10
READY_TIMEOUT = 10.0
COMMAND_TIMEOUT = 5.0
WAV_HEADER_SLACK = 256  # bytes of RIFF/fmt/other chunks around the audio data
MODULE_PATH = "/usr/lib/baresip/modules"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_REG_STATE = re.compile(r"^> \S+\s+(OK|ERR)\b", re.MULTILINE)

CODECS = {
    "PCMU": "PCMU/8000/1",
    "PCMA": "PCMA/8000/1",
    "G722": "G722/16000/1",
    "opus": "opus/48000/2",
}


@dataclass(frozen=True)
class BaresipEvent:
    """One ctrl_tcp event (e.g. type CALL_ESTABLISHED), with the raw JSON object."""

    type: str
    peeruri: str
    param: str
    raw: dict[str, Any] = field(repr=False)


def _wav_finalized(path: Path) -> bool:
    try:
        size = path.stat().st_size
        with wave.open(str(path), "rb") as w:
            data = w.getnframes() * w.getsampwidth() * w.getnchannels()
    except (OSError, EOFError, wave.Error):
        return False
    return data > 0 and size - data <= WAV_HEADER_SLACK


class _CtrlClient:
    """JSON-netstring client of baresip's ctrl_tcp: a reader thread sorts responses and events into queues."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=COMMAND_TIMEOUT)
        self._sock.settimeout(0.2)
        self.events: queue.Queue[BaresipEvent] = queue.Queue()
        self.history: list[BaresipEvent] = []  # every event, also those a wait skipped
        self._responses: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._token = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_loop, name=f"baresip-ctrl-{port}", daemon=True)
        self._thread.start()

    def _read_loop(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while True:
                colon = buf.find(b":")
                if colon < 0:
                    break
                length = int(buf[:colon])
                if len(buf) < colon + 1 + length + 1:
                    break
                body = buf[colon + 1 : colon + 1 + length]
                buf = buf[colon + 2 + length :]
                self._dispatch(json.loads(body))

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("event"):
            ev = BaresipEvent(
                type=str(msg.get("type", "")),
                peeruri=str(msg.get("peeruri", "")),
                param=str(msg.get("param", "")),
                raw=msg,
            )
            self.history.append(ev)
            self.events.put(ev)
        elif msg.get("response"):
            self._responses.put(msg)

    def command(self, command: str, params: str = "", timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        with self._lock:
            self._token += 1
            token = f"t{self._token}"
            body = json.dumps({"command": command, "params": params, "token": token}).encode()
            self._sock.sendall(b"%d:%s," % (len(body), body))
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"baresip gave no response to {command!r} within {timeout}s")
                try:
                    resp = self._responses.get(timeout=left)
                except queue.Empty:
                    continue
                if resp.get("token") == token:
                    return resp

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=2.0)


class Baresip(PortedProcess):
    """Context manager running one baresip UA.

    `user`: the account user part. `registrar`: "host:port" to REGISTER to (with `password` for digest
    auth), or None for a direct, unregistered account. `codecs`: names from CODECS (or full baresip
    "name/rate/channels" strings), in preference order.
    `play`: the WAV the aufile source sends (its rate should match `srate`). `answer`: "auto" or "manual".
    `extra_account_params` are appended to the account line verbatim; `extra_config` to the config file (e.g.
    ``module srtp.so`` and ``sip_certificate``: SIP over TLS listens on the SIP port + 1).
    """

    NAME = "baresip"
    BLOCK_SIZE = BLOCK_SIZE
    RTP_OFFSET = RTP_OFFSET

    def __init__(
        self,
        workdir: Path,
        *,
        user: str,
        play: Path,
        codecs: tuple[str, ...] = ("PCMU",),
        registrar: str | None = None,
        password: str | None = None,
        answer: str = "auto",
        srate: int = 8000,
        extra_account_params: str = "",
        regint: int = 300,
        ports: PortBlock | None = None,
        extra_config: str = "",
        transport: str = "udp",
    ) -> None:
        for c in codecs:
            if c not in CODECS and "/" not in c:
                raise ValueError(f"unknown codec {c!r}: use {sorted(CODECS)} or a full name/rate/channels")
        self.user = user
        self.dir = workdir / f"baresip-{user}"
        self.rec_dir = self.dir / "rec"
        self.play = play
        self.codecs = codecs
        self.registrar = registrar
        self.transport = transport
        """The account's transport toward its registrar ("tls": load TLS with ``extra_config``)."""
        self.password = password
        self.answer = answer
        self.srate = srate
        self.extra_account_params = extra_account_params
        self.regint = regint
        self.extra_config = extra_config
        super().__init__(ports)
        self.proc: ManagedProcess | None = None
        self._ctrl: _CtrlClient | None = None

    # --- ports and URIs -------------------------------------------------------------------------------------
    @property
    def sip_port(self) -> int:
        return self.ports[0]

    @property
    def ctrl_port(self) -> int:
        return self.ports[CTRL_OFFSET]

    @property
    def contact_uri(self) -> str:
        """Where this UA can be reached directly (no registrar)."""
        return f"sip:{self.user}@127.0.0.1:{self.sip_port}"

    # --- life cycle -----------------------------------------------------------------------------------------
    def _write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rec_dir.mkdir(exist_ok=True)
        lo, hi = self.rtp_range
        nil = f"nil_{self.user}"
        config = f"""\
poll_method             epoll
sip_listen              127.0.0.1:{self.sip_port}
net_interface           127.0.0.1
audio_source            aufile,{self.play}
audio_player            aubridge,{nil}
audio_alert             aubridge,{nil}
ausrc_srate             {self.srate}
ausrc_channels          1
rtp_ports               {lo}-{hi}
rtp_timeout             0
module_path             {MODULE_PATH}
module                  g711.so
module                  g722.so
module                  opus.so
module                  aufile.so
module                  aubridge.so
module                  sndfile.so
module_tmp              uuid.so
module_tmp              account.so
module_app              menu.so
module_app              ctrl_tcp.so
ctrl_tcp_listen         127.0.0.1:{self.ctrl_port}
snd_path                {self.rec_dir}
"""
        (self.dir / "config").write_text(config + self.extra_config)
        codec_list = ",".join(CODECS.get(c, c) for c in self.codecs)
        params = f";answermode={self.answer};audio_codecs={codec_list}"
        if self.registrar is not None:
            # The registrar's host:port is the AOR's domain: REGISTER and out-of-dialog requests go there.
            aor = f"<sip:{self.user}@{self.registrar};transport={self.transport}>"
            params = f";regint={self.regint}" + params
            if self.password is not None:
                params += f";auth_pass={self.password}"
        else:
            aor = f"<sip:{self.user}@127.0.0.1:{self.sip_port};transport=udp>"
            params = ";regint=0" + params
        (self.dir / "accounts").write_text(aor + params + self.extra_account_params + "\n")
        (self.dir / "contacts").write_text("")
        # No trailing newline: baresip pastes this verbatim into +sip.instance; a newline breaks REGISTER.
        (self.dir / "uuid").write_text(f"00000000-0000-4000-8000-{self.sip_port:012d}")

    def start(self) -> Baresip:
        need("baresip")
        self._reserve_ports()
        try:
            self._write_config()
            self.proc = ManagedProcess(["baresip", "-f", str(self.dir)], name=f"baresip-{self.user}", log_dir=self.dir)
            self.proc.wait_until(
                lambda: port_is_bound(self.sip_port, "udp") and port_is_bound(self.ctrl_port, "tcp"),
                READY_TIMEOUT,
                "SIP and ctrl_tcp ports",
            )
            self._ctrl = _CtrlClient(self.ctrl_port)
            if "audio codec not found" in self.proc.log_text():
                # baresip then silently offers every codec it has; a test asking for one must not get another.
                raise self.proc.failure(f"unknown codec in {self.codecs}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> int:
        """Quit baresip (SIGTERM twice if needed, then SIGKILL) and release its ports; idempotent."""
        rc = -1
        if self._ctrl is not None:
            self._ctrl.close()
            self._ctrl = None
        if self.proc is not None:
            rc = self.proc.stop(grace=3.0, term_signals=(signal.SIGTERM, signal.SIGTERM))
        self._release_ports()
        return rc

    # --- control -----------------------------------------------------------------------------------------
    @property
    def ctrl(self) -> _CtrlClient:
        if self._ctrl is None:
            raise TestbedError(f"baresip {self.user} not running")
        return self._ctrl

    def command(self, command: str, params: str = "") -> dict[str, Any]:
        resp = self.ctrl.command(command, params)
        if not resp.get("ok", False):
            raise self._failure(f"command {command} {params!r} failed: {resp.get('data')!r}")
        return resp

    def dial(self, uri: str) -> None:
        self.command("dial", uri)

    def hangup(self) -> None:
        self.command("hangup")

    def accept(self) -> None:
        self.command("accept")

    def send_dtmf(self, digits: str) -> None:
        """Send digits as RFC 4733 telephone-events on the current call (the menu's `sndcode` command)."""
        for d in digits:
            self.command("sndcode", d)

    def hold(self) -> None:
        """Put the current call on hold (a re-INVITE with a sendonly offer)."""
        self.command("hold")

    def resume(self) -> None:
        self.command("resume")

    def received_dtmf(self) -> str:
        """Digits received as RFC 4733 telephone-events so far (CALL_DTMF_START events), in order."""
        return "".join(e.param for e in self.ctrl.history if e.type == "CALL_DTMF_START")

    def audio_codec(self) -> str:
        """The codec of the latest call's audio, from baresip's "audio tx pipeline" log line ("" if none)."""
        assert self.proc is not None
        lines = [ln for ln in self.proc.log_text().splitlines() if "audio tx pipeline:" in ln]
        return lines[-1].rsplit("--->", 1)[-1].strip() if lines else ""

    def reginfo(self) -> str:
        return str(self.command("reginfo").get("data", ""))

    def quit(self) -> None:
        with contextlib.suppress(TimeoutError, OSError):
            self.ctrl.command("quit", timeout=1.0)

    def wait_event(self, *types: str, timeout: float = 10.0) -> BaresipEvent:
        """The next event of one of `types`, skipping others; raises with the log tail on timeout."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._failure(f"no {'/'.join(types)} within {timeout}s (saw {seen})")
            try:
                ev = self.ctrl.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self.proc is not None and not self.proc.alive:
                    raise self._failure(f"exited while waiting for {'/'.join(types)}") from None
                continue
            seen.append(ev.type)
            if ev.type in types:
                return ev

    def reg_state(self) -> str:
        """ "OK", "ERR" (refused, e.g. a wrong password) or "" (pending/none), from `reginfo`: the
        REGISTER_OK/FAIL events can fire before ctrl_tcp is connected, so the state is polled instead."""
        m = _REG_STATE.search(_ANSI.sub("", self.reginfo()))
        return m.group(1) if m else ""

    def registered(self) -> bool:
        return self.reg_state() == "OK"

    def wait_reg_state(self, state: str = "OK", timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.reg_state() != state:
            if time.monotonic() >= deadline:
                raise self._failure(f"registration not {state} within {timeout}s: {self.reginfo()!r}")
            time.sleep(0.05)

    def wait_registered(self, timeout: float = 10.0) -> None:
        self.wait_reg_state("OK", timeout)

    def _failure(self, what: str) -> TestbedError:
        if self.proc is None:
            return TestbedError(f"baresip {self.user}: {what}")
        return self.proc.failure(what)

    # --- recordings ---------------------------------------------------------------------------------------
    def recordings(self, kind: str = "dec") -> list[Path]:
        """sndfile dumps, newest last: kind "dec" is what this UA received, "enc" what it sent."""
        return sorted(self.rec_dir.glob(f"dump-*-{kind}.wav"), key=lambda p: p.stat().st_mtime)

    def received_wav(self, timeout: float = 5.0) -> Path:
        """The latest received-audio recording once sndfile has finalized it (call closed on this side):
        the WAV header then parses and declares all the data the file holds."""
        deadline = time.monotonic() + timeout
        while True:
            recs = self.recordings("dec")
            if recs and _wav_finalized(recs[-1]):
                return recs[-1]
            if time.monotonic() >= deadline:
                raise self._failure(f"no received recording in {self.rec_dir} after {timeout}s")
            time.sleep(0.05)
