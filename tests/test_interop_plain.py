"""voipgw against plain peers (baresip, a pjsua2 PJSIP UA), both call directions, as real processes on loopback.

``opportunistic``: the call connects NOT SECURE in a codec both sides have, and audio flows both ways.
``require``: a plain peer calling us gets 488 with our Warning; a plain peer we call is hung up on at once and
never receives one RTP packet from us (a raw capture on loopback is the proof).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.phones import PhoneProc, start_caller, start_listener
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from tests.testbed.capture import CapturedPacket, RawCapture
from tests.testbed.pjsua2_peer import Pjsua2Peer
from voipgw.audio.compare import AudioMatch, compare_audio
from voipgw.audio.wav import read_wav
from voipgw.phone import WARN_NO_KEY_EXCHANGE

pytestmark = pytest.mark.integration

CLIP_SECONDS = 3.0
OPPORTUNISTIC = ("--policy", "opportunistic")
MIN_G711_CORRELATION = 0.8
PROC_TIMEOUT = 25.0


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "speech8k": speech.make_variant(d / "speech8k.wav", 8000, seconds=CLIP_SECONDS),
        "speech8k_long": speech.make_variant(d / "speech8k_long.wav", 8000),
        "speech48k": speech.make_variant(d / "speech48k.wav", 48000, seconds=CLIP_SECONDS),
    }


def heard(sent: Path, recording: Path) -> AudioMatch:
    """How well ``recording`` (any rate/channels) holds ``sent``; the reference is cut to the recording's length
    so a call that ended before the peer's file did is judged on what it carried."""
    ref = read_wav(sent)
    rec = read_wav(recording)
    return compare_audio(ref[: len(rec)], rec)


def _ours(p: PhoneProc) -> dict[str, object]:
    """Our side's summary, after its process ended on its own."""
    assert p.wait(PROC_TIMEOUT) in (0, 1), p.log()
    return p.summary()


def _assert_not_secure(p: PhoneProc, codec: str) -> dict[str, object]:
    s = _ours(p)
    assert s["state"] == "ended", p.log()
    assert s["security"] == "NOT SECURE"
    assert s["codec"] == codec
    assert s["sas"] is None and s["safety_number"] is None
    assert "| NOT SECURE |" in p.log()  # the live status line
    assert "security: NOT SECURE" in p.log()  # the printed summary
    assert s["frames_refused"] == 0
    return s


def _rtp_sent_to(packets: list[CapturedPacket], lo: int, hi: int) -> list[CapturedPacket]:
    """RTP packets whose destination is in [lo, hi] from a port outside it (i.e. from us, not the peer)."""
    return [p for p in packets if lo <= p.dst_port <= hi and not lo <= p.src_port <= hi and p.rtp() is not None]


# --- opportunistic ------------------------------------------------------------------------------------------


def test_opportunistic_pjsua2_calls_us_in_pcmu(tmp_path: Path, clips: dict[str, Path]) -> None:
    recording = tmp_path / "pj-heard.wav"
    ours = start_listener(tmp_path, "bob", *OPPORTUNISTIC, "--play", str(clips["speech48k"]), tap=False)
    try:
        with Pjsua2Peer(
            tmp_path, user="pj", duration=CLIP_SECONDS + 0.8, play=clips["speech8k"], record=recording
        ) as pj:
            pj.call(f"sip:bob@127.0.0.1:{ours.sip_port}")
            assert pj.wait_state("CONFIRMED")["role"] == "caller"
            gone = pj.wait_event("disconnected", timeout=PROC_TIMEOUT)
            assert gone["code"] == 200 and gone["duration"] >= CLIP_SECONDS
        s = _assert_not_secure(ours, "pcmu")
    finally:
        ours.stop()
    assert s["frames_sent"] >= 140 and s["frames_opened"] >= 140
    ours_heard, pj_heard = heard(clips["speech8k"], ours.wav), heard(clips["speech48k"], recording)
    print(f"pjsua2->us pcmu: we heard {ours_heard}, pjsua2 heard {pj_heard}")
    assert ours_heard.windowed >= MIN_G711_CORRELATION, ours_heard
    assert pj_heard.windowed >= MIN_G711_CORRELATION, pj_heard


def test_opportunistic_we_call_pjsua2_in_pcmu(tmp_path: Path, clips: dict[str, Path]) -> None:
    recording = tmp_path / "pj-heard.wav"
    with Pjsua2Peer(tmp_path, user="pj", play=clips["speech8k_long"], record=recording) as pj:
        ours = start_caller(
            tmp_path, "alice", pj.contact_uri, *OPPORTUNISTIC, "--play", str(clips["speech48k"]), tap=False
        )
        try:
            s = _assert_not_secure(ours, "pcmu")
        finally:
            ours.stop()
        gone = pj.wait_event("disconnected", timeout=10.0)
        assert gone["reason"] == "Normal call clearing"
    incoming = next(e for e in pj.events if e["event"] == "incoming")
    # Our opportunistic offer: Opus first, then PCMU and PCMA, and the voipgw key exchange.
    assert "m=audio" in incoming["invite"] and " RTP/AVP 111 0 8" in incoming["invite"]
    assert "a=voipgw:" in incoming["invite"]
    assert s["frames_sent"] >= 140 and s["frames_opened"] >= 140
    ours_heard, pj_heard = heard(clips["speech8k_long"], ours.wav), heard(clips["speech48k"], recording)
    print(f"us->pjsua2 pcmu: we heard {ours_heard}, pjsua2 heard {pj_heard}")
    assert ours_heard.windowed >= MIN_G711_CORRELATION, ours_heard
    assert pj_heard.windowed >= MIN_G711_CORRELATION, pj_heard


def test_opportunistic_baresip_calls_us_in_pcma(tmp_path: Path, clips: dict[str, Path]) -> None:
    ours = start_listener(tmp_path, "bob", *OPPORTUNISTIC, "--play", str(clips["speech48k"]), tap=False)
    try:
        with Baresip(tmp_path, user="alice", play=clips["speech8k"], codecs=("PCMA",)) as alice:
            alice.dial(f"sip:bob@127.0.0.1:{ours.sip_port}")
            alice.wait_event("CALL_ESTABLISHED")
            alice.wait_event("CALL_CLOSED", timeout=PROC_TIMEOUT)  # her file ended: she hangs up
            bare_rec = alice.received_wav()
            assert alice.audio_codec().startswith("PCMA"), alice.audio_codec()
            s = _assert_not_secure(ours, "pcma")
    finally:
        ours.stop()
    assert s["frames_sent"] >= 100 and s["frames_opened"] >= 100
    ours_heard, bare_heard = heard(clips["speech8k"], ours.wav), heard(clips["speech48k"], bare_rec)
    print(f"baresip->us pcma: we heard {ours_heard}, baresip heard {bare_heard}")
    assert ours_heard.windowed >= MIN_G711_CORRELATION, ours_heard
    assert bare_heard.windowed >= MIN_G711_CORRELATION, bare_heard


def test_opportunistic_we_call_baresip_in_opus(tmp_path: Path, clips: dict[str, Path]) -> None:
    with Baresip(
        tmp_path,
        user="bob",
        play=speech.make_variant(tmp_path / "b48.wav", 48000),
        codecs=("opus", "PCMU"),
        srate=48000,
    ) as bob:
        ours = start_caller(
            tmp_path, "alice", bob.contact_uri, *OPPORTUNISTIC, "--play", str(clips["speech48k"]), tap=False
        )
        try:
            bob.wait_event("CALL_ESTABLISHED")
            bob.wait_event("CALL_CLOSED", timeout=PROC_TIMEOUT)  # our BYE once our file ended
            bare_rec = bob.received_wav()
            assert bob.audio_codec().startswith("opus"), bob.audio_codec()
            s = _assert_not_secure(ours, "opus")
        finally:
            ours.stop()
    assert s["frames_sent"] >= 140 and s["frames_opened"] >= 140
    ours_heard = heard(tmp_path / "b48.wav", ours.wav)
    bare_heard = heard(clips["speech48k"], bare_rec)
    print(f"us->baresip opus: we heard {ours_heard}, baresip heard {bare_heard}")
    assert ours_heard.windowed >= 0.9, ours_heard
    assert bare_heard.windowed >= 0.9, bare_heard


# --- require ------------------------------------------------------------------------------------------------


def test_require_refuses_pjsua2_with_488_and_our_warning(tmp_path: Path, clips: dict[str, Path]) -> None:
    ours = start_listener(tmp_path, "bob", "--play", str(clips["speech48k"]), tap=False)
    try:
        with Pjsua2Peer(tmp_path, user="pj") as pj:
            pj.call(f"sip:bob@127.0.0.1:{ours.sip_port}")
            gone = pj.wait_event("disconnected", timeout=10.0)
        s = _ours(ours)
    finally:
        ours.stop()
    assert gone["code"] == 488 and gone["status_line"] == "SIP/2.0 488 Not Acceptable Here"
    assert WARN_NO_KEY_EXCHANGE in gone["warning"]
    assert s["state"] == "failed" and s["security"] == "refused"
    assert WARN_NO_KEY_EXCHANGE in str(s["reason"]) and str(s["reason"]).startswith("488")
    assert s["frames_sent"] == 0 and s["codec"] is None


def test_require_refuses_baresip_with_488_and_our_warning(tmp_path: Path, clips: dict[str, Path]) -> None:
    """baresip 1.0 reports only the status line ("488 Not Acceptable Here") in its CALL_CLOSED event and log, so
    the Warning it received is read from a raw capture of the SIP response on its port."""
    ours = start_listener(tmp_path, "bob", "--play", str(clips["speech48k"]), tap=False)
    try:
        with (
            Baresip(tmp_path, user="alice", play=clips["speech8k"], codecs=("opus", "PCMU")) as alice,
            RawCapture(alice.sip_port, alice.sip_port) as cap,
        ):
            alice.dial(f"sip:bob@127.0.0.1:{ours.sip_port}")
            closed = alice.wait_event("CALL_CLOSED", timeout=10.0)
            sip_in = [p.payload for p in cap.packets if p.dst_port == alice.sip_port]
        s = _ours(ours)
    finally:
        ours.stop()
    assert closed.param == "488 Not Acceptable Here", closed
    refusals = [m.decode(errors="replace") for m in sip_in if m.startswith(b"SIP/2.0 488 ")]
    assert len(refusals) >= 1, sip_in
    warning = next(ln for ln in refusals[0].split("\r\n") if ln.lower().startswith("warning:"))
    assert WARN_NO_KEY_EXCHANGE in warning, warning
    assert s["state"] == "failed" and s["security"] == "refused"
    assert WARN_NO_KEY_EXCHANGE in str(s["reason"])
    assert s["frames_sent"] == 0


def test_require_we_call_baresip_hang_up_at_once_and_send_no_rtp(tmp_path: Path, clips: dict[str, Path]) -> None:
    with Baresip(tmp_path, user="bob", play=clips["speech8k_long"], codecs=("opus", "PCMU")) as bob:
        lo, hi = bob.rtp_range
        with RawCapture(lo, hi) as cap:
            ours = start_caller(tmp_path, "alice", bob.contact_uri, "--play", str(clips["speech48k"]), tap=False)
            try:
                bob.wait_event("CALL_ESTABLISHED")
                closed = bob.wait_event("CALL_CLOSED", timeout=10.0)
                s = _ours(ours)
            finally:
                ours.stop()
            packets = cap.packets
    assert s["state"] == "failed" and s["security"] == "refused"
    assert "answered without the voipgw key exchange" in str(s["reason"])
    assert s["frames_sent"] == 0
    from_us = _rtp_sent_to(packets, lo, hi)
    from_peer = [p for p in packets if lo <= p.src_port <= hi and p.rtp() is not None]
    print(f"require us->baresip: {closed.param!r}; RTP captured from us {len(from_us)}, from baresip {len(from_peer)}")
    assert from_us == []


def test_require_we_call_pjsua2_which_cannot_answer_opus_only(tmp_path: Path, clips: dict[str, Path]) -> None:
    """A secure offer is Opus only and this pjsua2 build has no Opus: it refuses with 488 before answering, so
    the call ends with no media at all (there is nothing to hang up on)."""
    with Pjsua2Peer(tmp_path, user="pj") as pj:
        lo, hi = pj.rtp_range
        with RawCapture(lo, hi) as cap:
            ours = start_caller(tmp_path, "alice", pj.contact_uri, "--play", str(clips["speech48k"]), tap=False)
            try:
                s = _ours(ours)
            finally:
                ours.stop()
            packets = cap.packets
    assert s["state"] == "failed" and s["security"] in ("pending", "refused")
    assert str(s["reason"]).startswith("488"), s["reason"]
    assert s["frames_sent"] == 0
    assert _rtp_sent_to(packets, lo, hi) == []
    assert np.all([not p.rtp() for p in packets if not lo <= p.src_port <= hi])
