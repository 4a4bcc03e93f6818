"""A voipgw SipStack in a child process, driven by JSON lines on stdin and reporting JSON lines on stdout.

sippy's state is per process, so two stacks that talk need two processes; this is the second one.
Never touches anything but 127.0.0.0/8; `SipPeer.stop()` ends the child by PID, bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.testbed.proc import stop_group

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 15.0


def udp_socket_inodes(pid: int) -> set[str]:
    """Inodes of the UDP sockets (IPv4 or IPv6) that process `pid` holds open, read from /proc."""
    udp: set[str] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as fh:
            next(fh)
            udp.update(line.split()[9] for line in fh)
    held: set[str] = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            target = os.readlink(f"{fd_dir}/{fd}")
            if target.startswith("socket:[") and target[8:-1] in udp:
                held.add(target[8:-1])
    return held


# --- child side ---


async def _child_main(host: str, port: int, reactor: Any = None) -> int:
    """With `reactor` (a voipgw.sip.mainthread.MainThreadReactor) this runs in its asyncio worker and sippy's
    reactor gets the main thread, the layout a CLI would use."""
    from voipgw.sip import IncomingCall, OutgoingCall, SipCall, SipStack, TcpOptions
    from voipgw.sip.events import TERMINAL_EVENTS

    loop = asyncio.get_running_loop()
    stack = SipStack(
        host,
        port,
        loop,
        user_agent="voipgw-peer",
        own_reactor_thread=reactor is None,
        reactor_hz=100.0 if reactor is not None else 1000.0,
        tcp=TcpOptions() if os.environ.get("VOIPGW_PEER_TCP") == "1" else None,
    )
    if reactor is not None:
        reactor.adopt(stack)
    await stack.start()
    out_lock = threading.Lock()

    def emit(**obj: Any) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    mode: dict[str, Any] = {"incoming": "hold"}
    calls: dict[str, SipCall] = {}
    current: list[SipCall] = []
    regs: dict[str, Any] = {}
    pumps: list[asyncio.Task[None]] = []
    stop_evt = asyncio.Event() if reactor is None else reactor.stop_requested
    if reactor is None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_evt.set)

    async def pump(call: SipCall) -> None:
        async for ev in call:
            data = asdict(ev)
            emit(ev="call_event", call_id=call.call_id, type=type(ev).__name__, data=data, t=time.monotonic())
            if isinstance(ev, TERMINAL_EVENTS):
                break

    def track(call: SipCall) -> None:
        calls[call.call_id] = call
        current[:] = [call]
        if mode.get("reoffer_answer") is not None:
            answer = mode["reoffer_answer"]
            call.reoffer_handler = lambda sdp: answer.replace("{remote_len}", str(len(sdp)))
        pumps.append(loop.create_task(pump(call)))

    async def incoming_loop() -> None:
        while True:
            call: IncomingCall = await stack.incoming.get()
            emit(
                ev="incoming",
                call_id=call.call_id,
                from_aor=call.from_aor,
                to_aor=call.to_aor,
                from_display=call.from_display,
                remote_sdp=call.remote_sdp,
                source=list(call.source_addr),
                t=time.monotonic(),
            )
            track(call)
            action = mode["incoming"]
            if action == "progress":
                call.progress(mode["progress_sdp"])
            if action in ("ring", "answer"):
                call.ring()
            if action == "answer":
                call.answer(mode["answer_sdp"])
            elif action == "reject":
                call.reject(mode["code"], mode["reason"], mode.get("warning"))

    def pick(cmd: dict[str, Any]) -> SipCall:
        cid = cmd.get("call_id")
        return calls[cid] if cid else current[0]

    async def handle(cmd: dict[str, Any]) -> None:
        op = cmd["op"]
        if op == "mode":
            mode.update(cmd)
            emit(ev="mode_set")
        elif op == "call":
            sdp = cmd["sdp"]
            proxy = tuple(cmd["proxy"]) if cmd.get("proxy") else None
            out = await stack.place_call(
                cmd["target"],
                cmd["from"],
                lambda cid: sdp.replace("{call_id}", cid),
                display_name=cmd.get("display"),
                proxy=proxy,  # type: ignore[arg-type]
                username=cmd.get("username"),
                password=cmd.get("password"),
                timeout_s=cmd.get("timeout", 30.0),
                transport=cmd.get("transport"),
            )
            track(out)
            emit(ev="placed", call_id=out.call_id, t=time.monotonic())
        elif op == "answer":
            call = pick(cmd)
            assert isinstance(call, IncomingCall)
            call.answer(cmd["sdp"])
        elif op == "reject":
            call = pick(cmd)
            assert isinstance(call, IncomingCall)
            cause = cmd.get("cause")
            call.reject(cmd["code"], cmd["reason"], cmd.get("warning"), tuple(cause) if cause else None)
        elif op in ("progress", "progress_ack", "ring", "cancel"):
            call = pick(cmd)
            if op == "cancel":
                assert isinstance(call, OutgoingCall)
                call.cancel()
                return
            assert isinstance(call, IncomingCall)
            if op == "progress":
                call.progress(cmd["sdp"])
            elif op == "progress_ack":
                call.progress_acknowledged()
            else:
                call.ring(cmd.get("sdp"), tuple(tuple(h) for h in cmd.get("headers", ())))  # type: ignore[misc]
        elif op == "hangup":
            pick(cmd).hangup()
        elif op == "reoffer":
            pick(cmd).reoffer(cmd["sdp"])
        elif op == "register":
            reg = await stack.register(
                tuple(cmd["registrar"]),  # type: ignore[arg-type]
                cmd["aor"],
                cmd.get("username"),
                cmd.get("password"),
                expires=cmd.get("expires", 300),
                transport=cmd.get("transport", "udp"),
            )
            regs[reg.aor] = reg
            emit(ev="registered", state=asdict(reg.state) if reg.state else None)
        elif op == "stats":
            tcp = stack.tcp_stats
            emit(
                ev="stats", stats=asdict(stack.stats), port=stack.local_port, tcp=asdict(tcp) if tcp else None,
                active_calls=stack.active_calls,
            )  # fmt: skip
        elif op == "stop":
            stop_evt.set()

    async def stdin_loop() -> None:
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                stop_evt.set()
                return
            cmd = json.loads(line)
            try:
                await handle(cmd)
            except Exception as exc:
                emit(ev="error", op=cmd.get("op"), error=f"{type(exc).__name__}: {exc}")

    tasks = [loop.create_task(incoming_loop()), loop.create_task(stdin_loop())]
    emit(ev="ready", port=stack.local_port, pid=os.getpid())
    await stop_evt.wait()
    await stack.stop()
    for task in tasks:
        task.cancel()
    emit(ev="stopped", udp_sockets=sorted(udp_socket_inodes(os.getpid())))
    return 0


# --- parent side ---


class SipPeer:
    """Start with ``SipPeer(port)``; ``send(op=...)`` commands, ``expect(ev, **match)`` reports (bounded)."""

    def __init__(
        self, port: int = 0, host: str = "127.0.0.1", *, main_reactor: bool = False, tcp: bool = False
    ) -> None:
        """``main_reactor``: run sippy's reactor on the child's main thread and asyncio in a worker.
        ``tcp``: the child's stack also speaks SIP over TCP (``call`` and ``register`` take ``transport``)."""
        env = dict(os.environ)
        env["VOIPGW_PEER_TCP"] = "1" if tcp else "0"
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.testbed.sip_peer", host, str(port)]
            + (["main-reactor"] if main_reactor else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env=env,
            text=True,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self._q: queue.Queue[dict[str, Any]] = queue.Queue()
        self._stderr: list[str] = []
        self._seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        try:
            ready = self.expect("ready", timeout=READY_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        self.port = int(ready["port"])

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self._q.put(json.loads(line))

    def _read_err(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def send(self, **cmd: Any) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(cmd) + "\n")
        self.popen.stdin.flush()

    def set_mode(self, **mode: Any) -> None:
        """How the peer treats incoming calls (incoming="hold"|"ring"|"progress"|"answer"|"reject", answer_sdp,
        progress_sdp, code, reason, warning, reoffer_answer); returns once the child has applied it, so no INVITE
        can race it."""
        self.send(op="mode", **mode)
        self.expect("mode_set")

    def expect(self, ev: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """Next report named ``ev`` whose fields equal ``match`` (earlier unmatched reports are kept)."""
        for i, item in enumerate(self._seen):
            if item.get("ev") == ev and all(item.get(k) == v for k, v in match.items()):
                return self._seen.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"peer: no {ev} {match} within {timeout}s; stderr:\n{self.stderr[-3000:]}")
            try:
                item = self._q.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.popen.poll() is not None and self._q.empty():
                    raise RuntimeError(f"peer exited rc={self.popen.returncode}:\n{self.stderr[-3000:]}") from None
                continue
            if item.get("ev") == "error":
                raise RuntimeError(f"peer error: {item}")
            if item.get("ev") == ev and all(item.get(k) == v for k, v in match.items()):
                return item
            self._seen.append(item)

    def call_event(self, type_: str, timeout: float = 10.0) -> dict[str, Any]:
        return self.expect("call_event", timeout=timeout, type=type_)

    async def aexpect(self, ev: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.expect, ev, timeout, **match)

    async def acall_event(self, type_: str, timeout: float = 10.0) -> dict[str, Any]:
        return await asyncio.to_thread(self.call_event, type_, timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """Signal the child's process group and wait (bounded); SIGKILL if it hangs. Returns the exit code."""
        stop_group(self.popen, grace=timeout, term_signals=(sig,))
        for stream in (self.popen.stdin,):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return int(self.popen.returncode)

    def __enter__(self) -> SipPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _run_with_main_reactor(host: str, port: int) -> int:
    import voipgw.sip  # noqa: F401 - sippy's reactor binds its wake-up signal to the importing thread
    from voipgw.sip.mainthread import MainThreadReactor

    runner: MainThreadReactor[int] = MainThreadReactor()
    return runner.run(lambda reactor: _child_main(host, port, reactor))


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="peer %(name)s %(levelname)s %(message)s")
    if len(sys.argv) > 3 and sys.argv[3] == "main-reactor":
        sys.exit(_run_with_main_reactor(sys.argv[1], int(sys.argv[2])))
    sys.exit(asyncio.run(_child_main(sys.argv[1], int(sys.argv[2]))))


# --- shared test fixtures ---

LONG_ATTR = "a=voipgw:" + "Zm9v" * 400  # ~1.6 KB, like a handshake attribute


def sdp(port: int, extra: str = "") -> str:
    """An opus-only SDP with a long ``a=voipgw:`` attribute; tests compare it byte for byte."""
    return (
        "v=0\r\no=- 4242 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n{LONG_ATTR}\r\n{extra}"
    )


@contextlib.asynccontextmanager
async def running_stack(port: int = 0, **kwargs: Any) -> Any:
    """A started voipgw SipStack on 127.0.0.1 in this process, stopped on exit."""
    from voipgw.sip import SipStack

    stack = SipStack("127.0.0.1", port, asyncio.get_running_loop(), **kwargs)
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()
