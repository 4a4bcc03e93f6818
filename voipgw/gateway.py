"""The gateway role: a B2BUA that bridges plain inside phones (PCMU/PCMA/G.722/Opus) to secure voipgw calls
outside, on one SIP stack, with one identity per fronted user.

It never sends an inside phone's audio outside unless the outside leg is a verified, sealed voipgw call
(policy ``require``): the inside leg is answered only after the outside one is secure.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ratchet.aor import normalize_aor
from ratchet.identity import IdentityKey
from voipgw.audio.codecs import OPUS as OPUS_CODEC
from voipgw.audio.codecs import CodecInfo, get_codec
from voipgw.audio.opus import FRAME_SAMPLES, OpusDecoder, OpusEncoder, Pcm
from voipgw.audio.sources import AudioSink, AudioSource
from voipgw.call import CallState, Security
from voipgw.media import MediaStream, PlainProtector
from voipgw.phone import ActiveCall, Phone, PhoneConfig, Policy, SecureProtector
from voipgw.sdp import PCMA, PCMU, AudioDescription, Codec, SdpError, build_sdp, opus_codec, parse_sdp
from voipgw.sip import Answered, Ended, Failed, IncomingCall, OutgoingCall, Ringing, SipCall, SipStack
from voipgw.trust import TrustStore

log = logging.getLogger(__name__)

G722 = "g722"
INSIDE_CODECS = (PCMU, PCMA, G722, "opus")
"""Codecs the inside leg accepts; the inside phone's own order decides among them."""
INSIDE_OFFER = [opus_codec(), Codec(G722, 9, 8000), Codec(PCMU, 0, 8000), Codec(PCMA, 8, 8000)]
"""What the gateway offers an inside phone it rings: Opus first (passed through untouched), then the best
transcoded one."""
PIPE_MAX_FRAMES = 5
"""Frames (100 ms) a bridge pipe holds before it drops the oldest: bounds the latency two pacing loops add."""
FINISHED_KEPT = 100
SIP_PHRASES = {
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    600: "Busy Everywhere",
    603: "Decline",
}


@dataclass(frozen=True)
class InsideUser:
    """A static inside phone and the outside identity the gateway holds for it."""

    name: str
    """The inside user part (``alice``): inside phones dial as it, outside callers reach it by it."""
    contact: str
    """Where the inside phone listens, e.g. ``sip:alice@127.0.0.1:5062``."""
    outside_aor: str
    """The AOR the gateway signs for on the outside leg, e.g. ``alice@example.org``."""
    display_name: str | None = None


@dataclass(frozen=True)
class GatewayConfig:
    home: Path
    """Identities and contact stores live in ``<home>/users/<name>/``."""
    users: tuple[InsideUser, ...]
    listen_host: str = "127.0.0.1"
    listen_port: int = 5070
    outside_proxy: tuple[str, int] | None = None
    """Next hop for outside INVITEs (the PBX); None sends them to the target URI's host:port."""
    routes: dict[str, str] = field(default_factory=dict)
    """Outside destination user -> URI, for calls the inside phone dialled at the gateway itself."""
    no_answer_timeout_s: float = 30.0
    sas_wait_s: float = 3.0
    """How long an inbound call waits for the outside caller's SAS reveal before ringing inside without it."""
    bind_call_id: bool = True
    """Require the signed Call-ID to equal the SIP Call-ID; False behind a B2BUA PBX (each leg its own Call-ID)."""


def security_label(sas: str | None, security: Security) -> str:
    """What an unmodified phone shows after the name: ``[E2E 4xj9]`` (``[E2E]`` before the SAS is known),
    ``[KEY CHANGED 4xj9]`` when the peer's identity key changed (warn policy), else ``[NOT SECURE]``."""
    if security in (Security.SECURE_UNVERIFIED, Security.SECURE_VERIFIED):
        tag = "E2E"
    elif security is Security.KEY_CHANGED:
        tag = "KEY CHANGED"
    else:
        return "[NOT SECURE]"
    return f"[{tag} {sas}]" if sas else f"[{tag}]"


class PcmPipe:
    """One direction of the bridge: the sink of one leg's MediaStream and the source of the other's.

    Closed (until both legs are up) it drops what it is given and yields silence; it never ends (a None frame
    would stop the reading stream for good)."""

    def __init__(self) -> None:
        self.open = False
        self.outside_codec: CodecInfo | None = None
        """Set on the pipe that feeds the outside leg: the Opus codec that leg's stream must use."""
        self.frames: collections.deque[Pcm] = collections.deque()
        self.passed = 0
        self.dropped = 0
        self._silence: Pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def write_frame(self, pcm: Pcm) -> None:
        if not self.open:
            return
        self.frames.append(pcm)
        if len(self.frames) > PIPE_MAX_FRAMES:
            self.frames.popleft()
            self.dropped += 1

    def read_frame(self) -> Pcm | None:
        if self.frames:
            self.passed += 1
            return self.frames.popleft()
        return self._silence

    def close(self) -> None:
        """The streams close their source and sink on stop; the pipe outlives neither, so nothing to do."""


class OpusRelay:
    """One direction of Opus pass-through: payloads the receiving leg opened, for the other leg to seal as they
    are (no decode, no re-encode). Bounded like PcmPipe."""

    def __init__(self) -> None:
        self.frames: collections.deque[bytes] = collections.deque()
        self.passed = 0
        self.dropped = 0

    def push(self, payload: bytes) -> None:
        self.frames.append(payload)
        if len(self.frames) > PIPE_MAX_FRAMES:
            self.frames.popleft()
            self.dropped += 1

    def pop(self) -> bytes | None:
        if self.frames:
            self.passed += 1
            return self.frames.popleft()
        return None


class _SwitchEncoder:
    """Encodes the PCM the pacing loop reads, unless pass-through is on and the other leg sent an Opus frame:
    that frame goes out as it came (the PCM is then silence from a closed pipe, or unused)."""

    def __init__(self, relay: OpusRelay, passthrough: list[bool]) -> None:
        self._relay = relay
        self._passthrough = passthrough
        self._encoder = OpusEncoder()

    def encode(self, pcm: Pcm) -> bytes:
        if self._passthrough[0]:
            payload = self._relay.pop()
            if payload is not None:
                return payload
        return self._encoder.encode(pcm)


class _SwitchDecoder:
    """Decodes Opus to PCM for the bridge, or under pass-through hands the payload on and plays silence."""

    def __init__(self, relay: OpusRelay, passthrough: list[bool]) -> None:
        self._relay = relay
        self._passthrough = passthrough
        self._decoder = OpusDecoder()
        self._silence: Pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    @property
    def failed(self) -> int:
        return self._decoder.failed

    def decode(self, payload: bytes | None) -> Pcm:
        if self._passthrough[0]:
            if payload is not None:
                self._relay.push(payload)
            return self._silence
        return self._decoder.decode(payload)


def switch_codec(rx: OpusRelay, tx: OpusRelay, passthrough: list[bool]) -> CodecInfo:
    """An Opus CodecInfo for one leg of a bridge: received frames go to ``rx``, sent ones come from ``tx`` while
    ``passthrough[0]`` is True (a shared flag: the inside codec is known only after the outside leg is up)."""
    return CodecInfo(
        OPUS_CODEC.name,
        OPUS_CODEC.rtp_clock_rate,
        None,
        lambda: _SwitchEncoder(tx, passthrough),
        lambda: _SwitchDecoder(rx, passthrough),
    )


class _GatewayPhone(Phone):
    """A Phone whose secure media uses the bridge's switchable Opus codec (for pass-through), found on the
    bridge's PcmPipe source. Everything else (handshake, policy, trust) is Phone's own."""

    async def _start_media(
        self,
        call: ActiveCall,
        remote: AudioDescription,
        codec: Codec,
        source: AudioSource | None,
        sink: AudioSink | None,
    ) -> None:
        info = source.outside_codec if isinstance(source, PcmPipe) else None
        if info is None or call.session is None or call.media is None:
            await super()._start_media(call, remote, codec, source, sink)
            return
        await call.media.start(
            SecureProtector(call.session),
            remote.rtp_address,
            source=source,
            sink=sink,
            clock=time.monotonic,
            codec=info,
            payload_type=codec.payload_type,
        )


@dataclass
class Bridge:
    """One gateway call: the inside (plain) leg, the outside (secure) leg and the two pipes between them."""

    user: InsideUser
    direction: str
    """``outbound`` (inside phone -> outside) or ``inbound`` (outside -> inside phone)."""
    remote_aor: str
    inside_sip: SipCall | None = None
    inside_media: MediaStream | None = None
    inside_codec: str | None = None
    outside: ActiveCall | None = None
    phone: Phone | None = None
    """The Phone that owns the outside leg (one per outbound call; the user's answerer for inbound ones)."""
    to_outside: PcmPipe = field(default_factory=PcmPipe)
    to_inside: PcmPipe = field(default_factory=PcmPipe)
    relay_out: OpusRelay = field(default_factory=OpusRelay)
    """Opus frames from the inside phone for the outside leg (pass-through)."""
    relay_in: OpusRelay = field(default_factory=OpusRelay)
    passthrough: list[bool] = field(default_factory=lambda: [False])
    state: str = "setup"
    reason: str = ""
    display: str | None = None
    """The display name the inside phone was shown (inbound calls)."""
    sas_wait_ms: float | None = None
    """Inbound: from the outside answer to the SAS reveal (the inside phone rings only after it)."""
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def call_id(self) -> str:
        return self.outside.record.call_id if self.outside is not None else ""

    def __post_init__(self) -> None:
        self.to_outside.outside_codec = switch_codec(self.relay_in, self.relay_out, self.passthrough)

    def snapshot(self) -> dict[str, Any]:
        rec = self.outside.record if self.outside is not None else None
        out_media = self.outside.media if self.outside is not None else None
        in_media = self.inside_media
        return {
            "user": self.user.name,
            "direction": self.direction,
            "remote_aor": self.remote_aor,
            "state": self.state,
            "reason": self.reason,
            "outside_call_id": rec.call_id if rec else None,
            "inside_call_id": self.inside_sip.call_id if self.inside_sip is not None else None,
            "security": rec.security.value if rec else "pending",
            "sas": rec.sas if rec else None,
            "safety_number": rec.safety_number if rec else None,
            "display": self.display,
            "inside_codec": self.inside_codec,
            "passthrough": self.passthrough[0],
            "passthrough_frames": {"to_outside": self.relay_out.passed, "to_inside": self.relay_in.passed},
            "pipe_frames_dropped": self.to_outside.dropped + self.to_inside.dropped,
            "outside_codec": rec.codec if rec else None,
            "outside_setup_ms": rec.setup_ms if rec else None,
            "sas_wait_ms": self.sas_wait_ms,
            "inside_frames_in": in_media.stats.frames_opened if in_media else 0,
            "inside_frames_out": in_media.stats.frames_sent if in_media else 0,
            "outside_frames_sealed": out_media.stats.frames_sent if out_media else 0,
            "outside_frames_opened": out_media.stats.frames_opened if out_media else 0,
            "outside_frames_refused": out_media.stats.frames_refused if out_media else 0,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


class Gateway:
    """``await start()``; incoming INVITEs are routed by who sent them; ``snapshot()``; ``await stop()``.

    Routing: an INVITE from a configured inside phone's address (and From user) is outbound; any other INVITE is
    inbound, for the inside user named in its To.

    Outbound (inside phone -> outside): 180 to the phone at once, then the secure outside INVITE; the phone's
    200 OK follows the outside 200 OK (and its SAS, which the offerer knows at once). An outside failure, or an
    answer without the key exchange, becomes the phone's final response (488 + Warning with the reason).

    Inbound (outside -> inside phone): the outside leg is verified and ANSWERED FIRST, then the gateway waits
    (up to ``sas_wait_s``) for the caller's SAS reveal, which only travels in the caller's first media frames,
    and only then rings the inside phone with ``From: "Name [E2E sas]"``. Unmodified phones show the From display
    name while ringing and cannot update it later, so this is the only order that puts the SAS on their screen.
    The price: the outside caller sees the call answered while the inside phone rings (it hears silence, and what
    it says meanwhile is dropped); a decline or no-answer inside then ends the outside call with a BYE whose
    Reason says so.
    """

    def __init__(
        self,
        config: GatewayConfig,
        identities: dict[str, IdentityKey],
        trust: dict[str, TrustStore] | None = None,
    ) -> None:
        missing = [u.name for u in config.users if u.name not in identities]
        if missing:
            raise ValueError(f"no identity for inside user(s) {', '.join(missing)}")
        self.config = config
        self.identities = identities
        self.trust = trust or {}
        self.users = {u.name: u for u in config.users}
        self.stack: SipStack | None = None
        self.bridges: list[Bridge] = []
        self.finished: collections.deque[Bridge] = collections.deque(maxlen=FINISHED_KEPT)
        self._answerers: dict[str, Phone] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._accept: asyncio.Task[None] | None = None
        self._inside_addrs: dict[tuple[str, int], InsideUser] = {}
        for u in config.users:
            host, port = _uri_hostport(u.contact)
            self._inside_addrs[(host, port)] = u

    @property
    def port(self) -> int:
        assert self.stack is not None
        return self.stack.local_port

    async def start(self) -> None:
        self.stack = SipStack(self.config.listen_host, self.config.listen_port, asyncio.get_running_loop())
        await self.stack.start()
        for user in self.config.users:
            self._answerers[user.name] = self._phone(user)
        self._accept = asyncio.get_running_loop().create_task(self._accept_loop())
        log.info("gateway listening on udp:%s:%d for %d user(s)", self.config.listen_host, self.port, len(self.users))

    async def stop(self) -> None:
        """BYE (or CANCEL) every call on both legs, then close the SIP stack."""
        if self._accept is not None:
            self._accept.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept
        for bridge in list(self.bridges):
            self._end(bridge, "gateway shutdown")
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        for phone in self._answerers.values():
            await _settle(phone)
        if self.stack is not None:
            await self.stack.stop()

    def snapshot(self) -> dict[str, Any]:
        """Active and recently finished calls with security state, SAS, codecs and frame counters (JSON-ready)."""
        return {
            "listen": f"{self.config.listen_host}:{self.stack.local_port if self.stack else self.config.listen_port}",
            "users": [
                {"name": u.name, "outside_aor": u.outside_aor, "contact": u.contact} for u in self.users.values()
            ],
            "calls": [b.snapshot() for b in self.bridges],
            "finished": [b.snapshot() for b in self.finished],
        }

    # --- plumbing ----------------------------------------------------------------------------------------

    def _phone(self, user: InsideUser) -> Phone:
        """A Phone for ``user`` on the gateway's shared stack (never started or stopped itself)."""
        cfg = PhoneConfig(
            aor=user.outside_aor,
            display_name=user.display_name or user.name,
            listen_host=self.config.listen_host,
            listen_port=self.port,
            policy=Policy.REQUIRE,
            proxy=self.config.outside_proxy,
            no_answer_timeout_s=self.config.no_answer_timeout_s,
            bind_call_id=self.config.bind_call_id,
        )
        phone = _GatewayPhone(cfg, self.identities[user.name], self.trust.get(user.name))
        phone.stack = self.stack
        answerer = self._answerers.get(user.name)
        if answerer is not None:
            phone._nonces = answerer._nonces  # one replay cache per identity
        return phone

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept_loop(self) -> None:
        assert self.stack is not None
        while True:
            incoming = await self.stack.incoming.get()
            try:
                self._route(incoming)
            except Exception as exc:  # one bad INVITE must never stop the gateway
                log.error("cannot route call %s: %s", incoming.call_id, exc, exc_info=True)
                with contextlib.suppress(Exception):
                    incoming.reject(500, "Server Internal Error", f"voipgw gateway: {type(exc).__name__}")

    def _route(self, incoming: IncomingCall) -> None:
        inside = self._inside_addrs.get(incoming.source_addr)
        from_user = _user_part(incoming.from_aor)
        if inside is not None and from_user == inside.name:
            self._spawn(self._outbound(inside, incoming))
            return
        user = self.users.get(_user_part(incoming.to_aor))
        if user is None:
            log.warning("call %s to %s: no such inside user", incoming.call_id, incoming.to_aor)
            incoming.reject(404, "Not Found", "voipgw gateway: no such user here")
            return
        self._spawn(self._inbound(user, incoming))

    def _outside_target(self, to_aor: str) -> str | None:
        user = _user_part(to_aor)
        if user in self.config.routes:
            return self.config.routes[user]
        host, port = _uri_hostport(to_aor)
        if (port in (self.port, 0) and host == self.config.listen_host) and self.config.outside_proxy is None:
            return None  # dialled at the gateway itself, with nowhere to send it
        return to_aor if to_aor.startswith("sip") else f"sip:{to_aor}"

    def _begin(self, bridge: Bridge) -> None:
        self.bridges.append(bridge)

    def _finish(self, bridge: Bridge, reason: str) -> None:
        if bridge.ended_at is None:
            bridge.ended_at = time.time()
            bridge.reason = bridge.reason or reason
            if bridge.state != "failed":
                bridge.state = "ended"
        if bridge in self.bridges:
            self.bridges.remove(bridge)
            self.finished.append(bridge)
        bridge.done.set()
        log.info("gateway call %s (%s, %s) over: %s", bridge.call_id, bridge.user.name, bridge.direction, bridge.reason)

    def _end(self, bridge: Bridge, why: str) -> None:
        """Hang up both legs (BYE, or CANCEL/487 while ringing)."""
        bridge.reason = bridge.reason or why
        if bridge.outside is not None:
            bridge.outside.hangup(None if why == "gateway shutdown" else f"voipgw gateway: {why}")
        if bridge.inside_sip is not None:
            with contextlib.suppress(Exception):
                bridge.inside_sip.hangup()

    async def _start_inside_media(
        self, bridge: Bridge, stream: MediaStream, remote: AudioDescription, codec: Codec
    ) -> None:
        # An Opus inside phone: frames cross untouched in both directions (no transcoding, no added codec delay).
        bridge.passthrough[0] = codec.name == OPUS_CODEC.name
        info = switch_codec(bridge.relay_out, bridge.relay_in, bridge.passthrough) if bridge.passthrough[0] else None
        # The inside leg is plain by design (the LAN side); only the outside leg must be sealed.
        await stream.start(
            PlainProtector(),
            remote.rtp_address,
            source=bridge.to_inside,
            sink=bridge.to_outside,
            allow_insecure=True,
            clock=time.monotonic,
            codec=info or get_codec(codec.name),
            payload_type=codec.payload_type,
        )
        bridge.inside_codec = codec.name
        bridge.to_inside.open = bridge.to_outside.open = True

    async def _follow(self, bridge: Bridge) -> None:
        """Both legs are up: wait until either ends, then end the other."""
        assert bridge.inside_sip is not None and bridge.outside is not None
        bridge.state = "up"
        inside_gone = asyncio.ensure_future(_wait_terminal(bridge.inside_sip))
        outside_gone = asyncio.ensure_future(bridge.outside.done.wait())
        try:
            await asyncio.wait({inside_gone, outside_gone}, return_when=asyncio.FIRST_COMPLETED)
            # A reason set already is ours (e.g. the shutdown): the legs then end because we hung them up.
            if bridge.reason:
                pass
            elif inside_gone.done():
                ev = inside_gone.result()
                bridge.reason = f"inside: {ev.reason}" if ev is not None else "inside: ended"
            else:
                bridge.reason = f"outside: {bridge.outside.record.reason or 'ended'}"
            self._end(bridge, bridge.reason)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(bridge.outside.done.wait(), 5.0)
        finally:
            inside_gone.cancel()
            outside_gone.cancel()

    async def _close(self, bridge: Bridge, reason: str) -> None:
        if bridge.inside_media is not None:
            await bridge.inside_media.stop()
        self._finish(bridge, reason)
        # The Phone records the call in the contact store in the background: done before the store may close.
        await _settle(bridge.phone)

    # --- inside phone -> outside ---------------------------------------------------------------------------

    async def _supervise(self, bridge: Bridge, setup: Coroutine[Any, Any, None]) -> None:
        """Run one bridge from setup to the end; any failure ends this call only, never the gateway."""
        self._begin(bridge)
        try:
            await setup
            if bridge.state == "answered":
                await self._follow(bridge)
        except Exception as exc:
            log.error("gateway %s call of %s failed: %s", bridge.direction, bridge.user.name, exc, exc_info=True)
            bridge.state = "failed"
            self._end(bridge, f"internal error: {type(exc).__name__}")
        finally:
            await self._close(bridge, "ended")

    async def _outbound(self, user: InsideUser, incoming: IncomingCall) -> None:
        bridge = Bridge(user, "outbound", normalize_aor(incoming.to_aor), inside_sip=incoming)
        await self._supervise(bridge, self._outbound_setup(bridge, user, incoming))

    async def _outbound_setup(self, bridge: Bridge, user: InsideUser, incoming: IncomingCall) -> None:
        try:
            remote = parse_sdp(incoming.remote_sdp or "")
        except SdpError as exc:
            return self._reject(bridge, incoming, 488, f"voipgw gateway: unusable offer: {exc.reason}")
        codec = _pick_inside_codec(remote.codecs)
        if codec is None:
            return self._reject(bridge, incoming, 488, "voipgw gateway: no common codec (PCMU, PCMA, G.722, opus)")
        target = self._outside_target(incoming.to_aor)
        if target is None:
            return self._reject(bridge, incoming, 404, "voipgw gateway: no route to the dialled user")
        stream = await MediaStream.bind(self.config.listen_host)
        bridge.inside_media = stream
        incoming.ring()
        phone = self._phone(user)
        bridge.phone = phone
        placing = asyncio.ensure_future(phone.place_call(target, source=bridge.to_outside, sink=bridge.to_inside))
        cancelled = asyncio.ensure_future(_wait_terminal(incoming))
        await asyncio.wait({placing, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        if cancelled.done() and not placing.done():
            bridge.reason = "cancelled by the inside phone"
            # place_call may still be sending the INVITE: retry the CANCEL until its call is pending.
            while not placing.done():
                if phone.cancel_pending():
                    break
                await asyncio.sleep(0.02)
        out = await placing
        inside_gone = cancelled.done()
        cancelled.cancel()
        bridge.outside = out
        rec = out.record
        if rec.state is not CallState.ESTABLISHED:
            bridge.state = "failed"
            if inside_gone:
                bridge.reason = bridge.reason or "cancelled by the inside phone"
                return
            code = _code_of(rec.reason)
            return self._reject(bridge, incoming, code, f"voipgw gateway: outside leg: {rec.reason}")
        if inside_gone:
            # The inside phone gave up just as the outside answered.
            bridge.state = "failed"
            self._end(bridge, "cancelled by the inside phone")
            return
        log.info(
            "gateway call %s: %s -> %s %s, outside %s codec %s SAS %s",
            rec.call_id, user.name, rec.remote_aor, rec.security.value, rec.suite, rec.codec, rec.sas,
        )  # fmt: skip
        await self._start_inside_media(bridge, stream, remote, codec)
        incoming.answer(build_sdp(self.config.listen_host, stream.local[1], [codec]))
        bridge.state = "answered"

    def _reject(self, bridge: Bridge, incoming: IncomingCall, code: int, warning: str) -> None:
        bridge.state = "failed"
        bridge.reason = f"{code} {warning}"
        log.warning("gateway refuses call %s from %s: %d %s", incoming.call_id, bridge.user.name, code, warning)
        incoming.reject(code, SIP_PHRASES.get(code, "Call Failed"), warning)

    # --- outside -> inside phone ---------------------------------------------------------------------------

    async def _inbound(self, user: InsideUser, incoming: IncomingCall) -> None:
        bridge = Bridge(user, "inbound", normalize_aor(incoming.from_aor))
        await self._supervise(bridge, self._inbound_setup(bridge, user, incoming))

    async def _inbound_setup(self, bridge: Bridge, user: InsideUser, incoming: IncomingCall) -> None:
        assert self.stack is not None
        incoming.ring()
        # The outside leg is answered first: the SAS exists for the answerer only after the caller's reveal,
        # which travels in its first media frames, and the inside phone must see the SAS in the INVITE's From.
        out = await self._answerers[user.name].answer(incoming, source=bridge.to_outside, sink=bridge.to_inside)
        bridge.outside = out
        rec = out.record
        if rec.state is not CallState.ESTABLISHED:
            bridge.state = "failed"
            bridge.reason = f"outside leg: {rec.reason}"
            return
        t_answered = time.monotonic()
        deadline = t_answered + self.config.sas_wait_s
        while rec.sas is None and not rec.finished and time.monotonic() < deadline:
            out.poll_session_events()
            await asyncio.sleep(0.005)
        bridge.sas_wait_ms = (time.monotonic() - t_answered) * 1e3
        if rec.finished:
            bridge.state = "failed"
            bridge.reason = f"outside leg: {rec.reason}"
            return
        name = incoming.from_display or _user_part(rec.remote_aor) or rec.remote_aor
        bridge.display = f"{name} {security_label(rec.sas, rec.security)}"
        stream = await MediaStream.bind(self.config.listen_host)
        bridge.inside_media = stream
        port = stream.local[1]
        inside = await self.stack.place_call(
            user.contact,
            f"sip:{rec.remote_aor}",
            lambda _call_id: build_sdp(self.config.listen_host, port, INSIDE_OFFER),
            display_name=bridge.display,
            timeout_s=self.config.no_answer_timeout_s,
        )
        bridge.inside_sip = inside
        log.info("gateway call %s: %s -> %s shown as %r", rec.call_id, rec.remote_aor, user.name, bridge.display)
        answered = asyncio.ensure_future(_wait_answer(inside))
        outside_gone = asyncio.ensure_future(out.done.wait())
        await asyncio.wait({answered, outside_gone}, return_when=asyncio.FIRST_COMPLETED)
        if not answered.done():
            bridge.state = "failed"
            bridge.reason = f"outside: {rec.reason or 'caller hung up'} while the inside phone rang"
            inside.hangup()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(answered, 2.0)
            outside_gone.cancel()
            return
        outside_gone.cancel()
        ev = answered.result()
        if not isinstance(ev, Answered):
            bridge.state = "failed"
            what = f"{ev.code} {ev.reason}" if isinstance(ev, Failed) else ev.reason
            bridge.reason = f"inside phone: {what}"
            out.hangup(f"voipgw gateway: the inside phone did not answer ({what})")
            return
        try:
            remote = parse_sdp(ev.remote_sdp)
        except SdpError as exc:
            remote = None
            why = f"unusable answer from the inside phone: {exc.reason}"
        codec = _pick_inside_codec(remote.codecs) if remote is not None else None
        if remote is None or codec is None:
            bridge.state = "failed"
            bridge.reason = why if remote is None else "no common codec with the inside phone"
            self._end(bridge, bridge.reason)
            return
        if out.record.finished:
            bridge.state = "failed"
            self._end(bridge, "outside: caller hung up as the inside phone answered")
            return
        await self._start_inside_media(bridge, stream, remote, codec)
        bridge.state = "answered"


async def _settle(phone: Phone | None) -> None:
    """Wait (bounded) for a Phone's background work: contact-store writes and the late safety number."""
    if phone is not None and phone._background:
        await asyncio.wait(set(phone._background), timeout=5.0)


async def _wait_terminal(sip: SipCall) -> Ended | Failed | None:
    """The leg's terminal event (its other events are of no interest while we wait)."""
    while True:
        ev = await sip.next_event()
        if isinstance(ev, Ended | Failed):
            return ev


async def _wait_answer(sip: OutgoingCall) -> Answered | Ended | Failed:
    while True:
        ev = await sip.next_event()
        if isinstance(ev, Answered | Ended | Failed):
            return ev
        if isinstance(ev, Ringing):
            log.debug("inside leg %s ringing", sip.call_id)


def _pick_inside_codec(offered: tuple[Codec, ...]) -> Codec | None:
    """The inside phone's first codec that we transcode (its order, not ours: it knows its network)."""
    return next((c for c in offered if c.name in INSIDE_CODECS), None)


def _code_of(reason: str) -> int:
    """The SIP status an outside failure maps to for the inside phone (488 for a policy refusal)."""
    head = reason[:3]
    if head.isdigit() and 400 <= int(head) <= 699:
        return int(head)
    return 488


def _user_part(aor: str) -> str:
    text = aor.split(":", 1)[1] if aor.startswith(("sip:", "sips:")) else aor
    return text.split("@", 1)[0] if "@" in text else ""


def _uri_hostport(uri: str) -> tuple[str, int]:
    text = uri.split(":", 1)[1] if uri.startswith(("sip:", "sips:")) else uri
    text = text.split("@", 1)[-1].split(";", 1)[0].split(">", 1)[0]
    host, _, port = text.partition(":")
    return host, int(port) if port.isdigit() else 5060


__all__ = ["Bridge", "Gateway", "GatewayConfig", "InsideUser", "PcmPipe", "security_label"]
