"""A call whose 200 OK is lost three times (SIP retransmits it after 0.5, 1 and 2 s): the two ends start their
media sessions 3.5 s apart, beyond the 2 s skew window. Every frame that arrives once both have keys must open.

Before the start-offset rule (PROTOCOL.md, "Start offset") bob refused 306 of 386 frames as stale-interval and
alice 162 as future-interval, in a call both reported as ended normally.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.phone_calls import wait_for_call
from tests.support.phones import SPEECH, start_caller, start_listener
from tests.testbed.sip_mangler import SipMangler
from voipgw.audio.compare import compare_audio
from voipgw.audio.wav import read_wav

pytestmark = [pytest.mark.integration, pytest.mark.hardening]

DROPPED_OKS = 3


class OkDropper:
    """A SipMangler hook (``on_from_callee``) that drops the callee's first ``drop`` 200 OKs to INVITE."""

    def __init__(self, drop: int) -> None:
        self.drop = drop
        self.dropped = 0

    def __call__(self, data: bytes) -> bytes | None:
        cseq = data.partition(b"\r\nCSeq:")[2][:40]
        if data.startswith(b"SIP/2.0 200 ") and b"INVITE" in cseq and self.dropped < self.drop:
            self.dropped += 1
            return None
        return data


def test_a_200_ok_lost_three_times_costs_no_frame_after_setup(tmp_path: Path) -> None:
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH))
    try:
        dropper = OkDropper(DROPPED_OKS)
        with SipMangler(("127.0.0.1", bob.sip_port), on_from_callee=dropper) as relay:
            alice = start_caller(tmp_path, "alice", f"sip:bob@127.0.0.1:{relay.port}", "--play", str(SPEECH))
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
