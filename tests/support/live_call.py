"""Test helper for the hardening tests: a long secure call between two real phones, its media through a relay
that records what alice sends, so a test can attack bob's SIP and RTP ports while the call runs.

Every process and thread started here is stopped in ``finally``; everything binds 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ratchet.session import MediaSession
from tests.support.phones import SPEECH, PhoneProc, start_caller, start_listener
from tests.support.ratchet_pairs import make_pair
from tests.support.sip_probe import finals
from tests.testbed.impair import Address, Impairment, ImpairmentRelay
from tests.testbed.sip_mangler import SipMangler, redirect_media
from voipgw.audio.compare import AudioMatch, compare_audio
from voipgw.audio.wav import read_wav, write_wav
from voipgw.rtp.packet import build_rtp

MAX_RECORDED = 5000
RELAY_START_S = 5.0


class RecordingRelay(ImpairmentRelay):
    """An impairment relay that also keeps every RTP datagram peer A (alice) sent, as an on-path attacker would."""

    def __init__(self, impairment: Impairment, peer_a: Address | None, peer_b: Address | None) -> None:
        super().__init__(impairment, peer_a, peer_b)
        self.recorded: list[bytes] = []

    def _received(self, side: str, data: bytes, addr: Address) -> None:
        if side == "a" and len(self.recorded) < MAX_RECORDED and not (len(data) >= 2 and 192 <= data[1] <= 223):
            self.recorded.append(data)
        super()._received(side, data, addr)


class RelayThread:
    """Runs a relay in its own asyncio loop so the test can drive subprocesses and sockets meanwhile."""

    def __init__(self, impairment: Impairment) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.relay: RecordingRelay | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.impairment = impairment

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        relay = self.loop.run_until_complete(RecordingRelay.open(self.impairment))
        assert isinstance(relay, RecordingRelay)
        self.relay = relay
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(relay.close())
        self.loop.close()

    def __enter__(self) -> RecordingRelay:
        self.thread.start()
        assert self.ready.wait(RELAY_START_S)
        assert self.relay is not None
        return self.relay

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def send_as_relay(self, data: list[bytes]) -> None:
        """Send ``data`` to bob from the relay's own socket: the source address his genuine stream comes from."""
        relay = self.relay
        assert relay is not None

        def burst() -> None:
            target = relay.peer["b"]
            if target is not None:
                for d in data:
                    relay._transports["b"].sendto(d, target)

        self.loop.call_soon_threadsafe(burst)


@dataclass
class LiveCall:
    alice: PhoneProc
    bob: PhoneProc
    relay: RecordingRelay
    relay_thread: RelayThread
    speech: Path
    """What both phones play (the bundled sample, repeated so the call outlasts the attacks)."""

    def bob_media(self) -> Address:
        target = self.relay.peer["b"]
        assert target is not None, "bob has sent no media yet"
        return target

    def wait_media(self, packets: int, timeout: float) -> None:
        """Until the relay has carried ``packets`` of alice's frames (so both ends have latched onto it)."""
        deadline = time.monotonic() + timeout
        while len(self.relay.recorded) < packets or self.relay.peer["b"] is None:
            if time.monotonic() > deadline or self.alice.proc.poll() is not None:
                raise AssertionError(f"media did not flow through the relay; alice:\n{self.alice.log()}")
            time.sleep(0.05)

    def heard(self, proc: PhoneProc) -> AudioMatch:
        # against one copy of the sample: ``speech`` repeats it, which would make the alignment ambiguous
        return compare_audio(read_wav(SPEECH), read_wav(proc.wav))


@contextmanager
def live_secure_call(tmp_path: Path, repeats: int = 2, extra: tuple[str, ...] = ()) -> Iterator[LiveCall]:
    """alice calls bob (a ``voipgw listen --once``); SIP goes through a mangler that points bob's media at the
    relay, so both directions flow through it once alice latches. Both phones play ``repeats`` x the sample and
    get ``extra`` arguments (e.g. ``--config FILE``)."""
    speech = tmp_path / "speech-long.wav"
    write_wav(speech, np.tile(read_wav(SPEECH), repeats))
    bob = start_listener(tmp_path, "bob", *extra, "--play", str(speech))
    thread = RelayThread(Impairment())
    alice: PhoneProc | None = None
    try:
        with thread as relay:
            relay_b = relay.addr_b

            def media_via_relay(sdp: str) -> str:
                sdp, relay.peer["a"] = redirect_media(sdp, *relay_b)
                return sdp

            with SipMangler(("127.0.0.1", bob.sip_port), on_offer=media_via_relay, lifetime_s=120) as mangler:
                alice = start_caller(
                    tmp_path, "alice", f"sip:bob@127.0.0.1:{mangler.port}", *extra, "--play", str(speech)
                )
                yield LiveCall(alice, bob, relay, thread, speech)
    finally:
        if alice is not None:
            alice.stop()
        bob.stop()


def udp_burst(target: Address, datagrams: list[bytes], *, batch: int = 50, pause: float = 0.005) -> None:
    """Send from a fresh loopback socket, paced so the kernel does not drop what the test means to count."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        for i, d in enumerate(datagrams):
            s.sendto(d, target)
            if i % batch == batch - 1:
                time.sleep(pause)


def collect_responses(
    sock: socket.socket, until: Callable[[dict[str, list[int]]], bool], timeout: float
) -> dict[str, list[int]]:
    """SIP status codes received on ``sock``, by Call-ID, until ``until(codes)`` or ``timeout``."""
    codes: dict[str, list[int]] = {}
    deadline = time.monotonic() + timeout
    while not until(codes) and time.monotonic() < deadline:
        sock.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
        try:
            data = sock.recv(65535)
        except TimeoutError:
            continue
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
        if not head[0].startswith("SIP/2.0 "):
            continue
        call_id = next((h.split(":", 1)[1].strip() for h in head[1:] if h.lower().startswith(("call-id:", "i:"))), "")
        codes.setdefault(call_id, []).append(int(head[0].split()[1]))
    return codes


def collect_finals(sock: socket.socket, call_ids: list[str], timeout: float) -> dict[str, list[int]]:
    """Status codes by Call-ID until each of ``call_ids`` has a final response, or ``timeout``."""
    return collect_responses(sock, lambda c: all(finals(c.get(cid, [])) for cid in call_ids), timeout=timeout)


INTERVAL_MS = 2000  # the phones' default time-key interval (config/phone.example.toml)


def foreign_frames(pt: int, ssrc: int, seq: int, counter: int, n: int) -> list[bytes]:
    """Frames from another call (its own keys), numbered just ahead of the live stream so that neither the
    replay window nor the time window refuses them: only the keys can."""
    keys, _ = make_pair(interval_ms=INTERVAL_MS, seed=b"another call")
    other = MediaSession(keys, time.time())
    setattr(other.sealer, "_n", counter)  # noqa: B010 - jump the other call's counter next to the live one
    out = []
    for i in range(n):
        frame = other.seal(bytes(60), time.time())
        out.append(build_rtp(pt, (seq + i) & 0xFFFF, 0, ssrc, frame))
    return out
