"""A plain PJSIP user agent (pjsua2, null sound device) run as a subprocess by pjsua2_peer.py; JSON lines out.

Owns one pjsua2 Endpoint for the life of this process; never runs inside the pytest process (pjsua2 aborts
the whole process on lifecycle mistakes), never binds beyond 127.0.0.1. No voipgw attributes: a plain peer.

Protocol: stdout carries one JSON object per line ({"event": ...}); stdin takes one JSON command per line:
{"cmd": "call", "uri": URI}, {"cmd": "hangup"}, {"cmd": "quit"}.

Pitfalls (from notes/pjsua2.md and measured here): pjsua2 is driven from this thread only (mainThreadOnly,
threadCnt 0, libHandleEvents polled), or it aborts; Call, player and recorder objects must all be dropped
before libDestroy, or it aborts; safe shutdown is hangupAllCalls, pump events until the calls end (so BYE gets
its 200), setNoDev, drop objects, gc.collect, acc.shutdown, libDestroy(NO_NETWORK); the Warning header of a
final response is only in the raw rdata of the TSX_STATE event; with the null device and VAD off, pjsua's own
stream sends 50 RTP packets per second, so a peer that latches RTP (baresip) sees media at once; pjlib
prints its first log lines to fd 1 before any log config applies, so the event channel is a dup of fd 1.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import select
import sys
import time
from typing import Any

import pjsua2 as pj

POLL_MS = 5
SHUTDOWN_WAIT_S = 2.0


# pjlib prints to fd 1 before its log config applies: the event channel is a private copy of the original
# stdout, and fd 1 is pointed at stderr (the log) so nothing else can interleave with the JSON lines.
_EVENTS = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)


def emit(event: str, **fields: Any) -> None:
    _EVENTS.write(json.dumps({"event": event, "t": round(time.monotonic(), 4), **fields}) + "\n")
    _EVENTS.flush()


def warning_of(whole_msg: str) -> str:
    for line in whole_msg.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "warning":
            return value.strip()
    return ""


def status_line(whole_msg: str) -> str:
    return whole_msg.split("\r\n", 1)[0]


class UA:
    """The endpoint, its account and its calls; every pjsua2 object lives here so shutdown drops them all."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ep = pj.Endpoint()
        self.acc: Account | None = None
        self.calls: dict[int, Call] = {}
        self.dead_calls: list[Call] = []
        self.player: pj.AudioMediaPlayer | None = None
        self.recorder: pj.AudioMediaRecorder | None = None
        self.quit = False
        self.connected_at: dict[int, float] = {}

    def start(self) -> None:
        a = self.args
        cfg = pj.EpConfig()
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.userAgent = "voipgw-testbed-pjsua2"
        # stdout is the JSON event channel: pjsua's own log goes to a file, never the console.
        cfg.logConfig.level = a.log_level
        cfg.logConfig.consoleLevel = 0
        if a.log_file:
            cfg.logConfig.filename = a.log_file
        cfg.medConfig.noVad = True
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 8000
        self.ep.libCreate()
        self.ep.libInit(cfg)
        tcfg = pj.TransportConfig()
        tcfg.port = a.port
        tcfg.boundAddress = "127.0.0.1"
        tcfg.publicAddress = "127.0.0.1"
        self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        self.ep.libStart()
        self.ep.audDevManager().setNullDev()
        for codec in self.ep.codecEnum2():
            wanted = codec.codecId.split("/")[0].lower() in {c.lower() for c in a.codec}
            self.ep.codecSetPriority(codec.codecId, 255 if wanted else 0)
        if a.play:
            self.player = pj.AudioMediaPlayer()
            self.player.createPlayer(a.play, pj.PJMEDIA_FILE_NO_LOOP)
        if a.record:
            self.recorder = pj.AudioMediaRecorder()
            self.recorder.createRecorder(a.record)

        acfg = pj.AccountConfig()
        if a.registrar:
            acfg.idUri = f"sip:{a.user}@{a.domain}"
            acfg.regConfig.registrarUri = f"sip:{a.registrar}"
            acfg.regConfig.timeoutSec = 300
            acfg.sipConfig.proxies.append(f"sip:{a.registrar};lr")
            if a.password:
                acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", a.user, 0, a.password))
        else:
            acfg.idUri = f"sip:{a.user}@127.0.0.1:{a.port}"
            acfg.regConfig.registerOnAdd = False
        mt = acfg.mediaConfig.transportConfig
        mt.port = a.rtp_port
        mt.portRange = a.rtp_range
        mt.boundAddress = "127.0.0.1"
        mt.publicAddress = "127.0.0.1"
        self.acc = Account(self)
        self.acc.create(acfg)
        emit("ready", port=a.port, pid=os.getpid(), uri=acfg.idUri)

    # --- commands ----------------------------------------------------------------------------------------
    def make_call(self, uri: str) -> None:
        assert self.acc is not None
        call = Call(self, self.acc)
        prm = pj.CallOpParam(True)
        try:
            call.makeCall(uri, prm)
        except pj.Error as exc:
            # A failed makeCall leaves the Call alive in pjsua; it is kept in dead_calls and dropped at exit.
            self.dead_calls.append(call)
            emit("error", what="makeCall", reason=exc.info())
            return
        self.calls[call.getId()] = call

    def hangup(self) -> None:
        prm = pj.CallOpParam(True)
        for call in list(self.calls.values()):
            try:
                call.hangup(prm)
            except pj.Error as exc:
                emit("error", what="hangup", reason=exc.info())

    def handle_command(self, line: str) -> None:
        try:
            cmd = json.loads(line)
        except json.JSONDecodeError:
            emit("error", what="command", reason=f"not JSON: {line!r}")
            return
        name = cmd.get("cmd")
        if name == "call":
            self.make_call(str(cmd["uri"]))
        elif name == "hangup":
            self.hangup()
        elif name == "quit":
            self.quit = True
        else:
            emit("error", what="command", reason=f"unknown command {name!r}")

    # --- loop and shutdown ---------------------------------------------------------------------------------
    def run(self) -> None:
        if self.args.call:
            self.make_call(self.args.call)
        stdin_open = True
        while not self.quit:
            self.ep.libHandleEvents(POLL_MS)
            if self.args.duration > 0:
                now = time.monotonic()
                for cid, since in list(self.connected_at.items()):
                    if now - since >= self.args.duration and cid in self.calls:
                        del self.connected_at[cid]
                        self.calls[cid].hangup(pj.CallOpParam(True))
            if stdin_open and select.select([sys.stdin], [], [], 0)[0]:
                line = sys.stdin.readline()
                if not line:
                    stdin_open = False  # parent closed stdin: treat as quit
                    self.quit = True
                elif line.strip():
                    self.handle_command(line)

    def shutdown(self) -> None:
        try:
            self.ep.hangupAllCalls()
        except pj.Error:
            pass
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        while self.calls and time.monotonic() < deadline:
            self.ep.libHandleEvents(POLL_MS)
        self.ep.audDevManager().setNoDev()
        self.player = None
        self.recorder = None
        self.calls.clear()
        self.dead_calls.clear()
        gc.collect()
        if self.acc is not None:
            self.acc.shutdown()
            self.acc = None
        gc.collect()
        self.ep.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)
        emit("stopped")


class Account(pj.Account):  # type: ignore[misc]
    def __init__(self, ua: UA) -> None:
        super().__init__()
        self.ua = ua

    def onRegState(self, prm: Any) -> None:
        emit("reg", code=int(prm.code), reason=str(prm.reason), expiration=int(prm.expiration))

    def onIncomingCall(self, prm: Any) -> None:
        call = Call(self.ua, self, prm.callId)
        self.ua.calls[call.getId()] = call
        ci = call.getInfo()
        emit("incoming", remote=ci.remoteUri, call_id=ci.callIdString, invite=prm.rdata.wholeMsg)
        op = pj.CallOpParam(True)
        op.statusCode = self.ua.args.answer_code
        call.answer(op)


class Call(pj.Call):  # type: ignore[misc]
    def __init__(self, ua: UA, acc: Account, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(acc, call_id)
        self.ua = ua
        self.warning = ""
        self.final_status = ""

    def onCallState(self, prm: Any) -> None:
        ci = self.getInfo()
        ev = prm.e
        if ev.type == pj.PJSIP_EVENT_TSX_STATE and ev.body.tsxState.type == pj.PJSIP_EVENT_RX_MSG:
            msg = ev.body.tsxState.src.rdata.wholeMsg
            if msg.startswith("SIP/2.0"):
                self.final_status = status_line(msg)
                self.warning = warning_of(msg) or self.warning
        emit(
            "state",
            state=ci.stateText,
            code=int(ci.lastStatusCode),
            reason=str(ci.lastReason),
            call_id=ci.callIdString,
            role="caller" if ci.role == pj.PJSIP_ROLE_UAC else "callee",
            warning=self.warning,
        )
        if ci.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.ua.connected_at[ci.id] = time.monotonic()
        if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            emit(
                "disconnected",
                code=int(ci.lastStatusCode),
                reason=str(ci.lastReason),
                warning=self.warning,
                status_line=self.final_status,
                call_id=ci.callIdString,
                duration=float(ci.connectDuration.sec + ci.connectDuration.msec / 1000.0),
            )
            self.ua.connected_at.pop(ci.id, None)
            # Dropped from the live set here, kept alive until shutdown (never deleted inside its callback).
            self.ua.dead_calls.append(self)
            self.ua.calls.pop(ci.id, None)

    def onCallMediaState(self, prm: Any) -> None:
        ci = self.getInfo()
        for i, mi in enumerate(ci.media):
            if mi.type != pj.PJMEDIA_TYPE_AUDIO or mi.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            aud = self.getAudioMedia(i)
            if self.ua.player is not None:
                self.ua.player.startTransmit(aud)
            if self.ua.recorder is not None:
                aud.startTransmit(self.ua.recorder)
            emit("media", active=True, index=i)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--user", default="pjsua")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rtp-port", type=int, required=True)
    p.add_argument("--rtp-range", type=int, default=20)
    p.add_argument("--codec", action="append", default=[], help="codec names to enable (default PCMU)")
    p.add_argument("--answer-code", type=int, default=200, help="final answer to INVITEs (200, 486, 603...)")
    p.add_argument("--call", default="", help="URI to call once started")
    p.add_argument("--duration", type=float, default=0.0, help="hang up this many seconds after CONFIRMED")
    p.add_argument("--registrar", default="", help="host:port to register to and send calls through")
    p.add_argument("--domain", default="127.0.0.1")
    p.add_argument("--password", default="")
    p.add_argument("--play", default="", help="WAV sent to every call")
    p.add_argument("--record", default="", help="WAV recording what every call receives")
    p.add_argument("--log-level", type=int, default=4)
    p.add_argument("--log-file", default="")
    args = p.parse_args(argv)
    if not args.codec:
        args.codec = ["PCMU"]
    return args


def main(argv: list[str]) -> int:
    ua = UA(parse_args(argv))
    try:
        ua.start()
        ua.run()
    except pj.Error as exc:
        emit("error", what="fatal", reason=exc.info())
        return 2
    finally:
        ua.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
