"""A call whose 200 OK is lost three times (SIP retransmits it after 0.5, 1 and 2 s): the two ends start their
media sessions 3.5 s apart, beyond the 2 s skew window. Every frame that arrives once both have keys must open.

Before the start-offset rule (PROTOCOL.md, "Start offset") bob refused 306 of 386 frames as stale-interval and
alice 162 as future-interval, in a call both reported as ended normally.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.phone_calls import wait_for_call
from tests.phones import SPEECH, start_caller, start_listener
from voipgw.audio.compare import compare_audio
from voipgw.audio.wav import read_wav

pytestmark = pytest.mark.integration

DROPPED_OKS = 3
LIFETIME_S = 60.0


class OkDropper:
    """A loopback SIP relay between one caller and ``callee`` that drops the callee's first N 200 OKs to INVITE."""

    def __init__(self, callee: tuple[str, int], drop: int) -> None:
        self.callee = callee
        self.drop = drop
        self.dropped = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ok-dropper", daemon=True)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def _run(self) -> None:
        caller: tuple[str, int] | None = None
        deadline = time.monotonic() + LIFETIME_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            if not select.select([self._sock], [], [], 0.1)[0]:
                continue
            data, addr = self._sock.recvfrom(65535)
            if addr != self.callee:
                caller = addr
                self._sock.sendto(data, self.callee)
                continue
            cseq = data.partition(b"\r\nCSeq:")[2][:40]
            if data.startswith(b"SIP/2.0 200 ") and b"INVITE" in cseq and self.dropped < self.drop:
                self.dropped += 1
                continue
            if caller is not None:
                self._sock.sendto(data, caller)

    def __enter__(self) -> OkDropper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def test_a_200_ok_lost_three_times_costs_no_frame_after_setup(tmp_path: Path) -> None:
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH))
    try:
        with OkDropper(("127.0.0.1", bob.sip_port), DROPPED_OKS) as dropper:
            alice = start_caller(tmp_path, "alice", f"sip:bob@127.0.0.1:{dropper.port}", "--play", str(SPEECH))
            wait_for_call(alice, bob, 60, 20)
    finally:
        bob.stop()
    assert dropper.dropped == DROPPED_OKS
    a, b = alice.summary(), bob.summary()
    assert a["state"] == b["state"] == "ended" and a["sas"] == b["sas"] is not None
    # bob's keys existed before alice sent anything: every frame opens
    assert b["frames_refused"] == 0 and b["frames_opened"] == b["frames_received"] > 300
    # alice: only what bob sent in the 3.5 s before alice had keys, beyond her early-packet buffer
    assert set(a["refused_by_reason"]) <= {"not-started"}
    assert a["frames_opened"] >= a["frames_received"] - a["refused_by_reason"].get("not-started", 0)
    speech = read_wav(SPEECH)
    assert compare_audio(speech, read_wav(bob.wav)).windowed >= 0.9
    assert compare_audio(speech, read_wav(alice.wav)).windowed >= 0.8
