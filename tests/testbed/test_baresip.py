"""Self-tests of the baresip launcher, the captures and the Kamailio + rtpengine path: real processes on
loopback, each call a few seconds of PCMU speech whose arrival is measured by correlation."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.requires import requires
from tests.testbed import audio_check, speech
from tests.testbed.baresip import Baresip
from tests.testbed.capture import Capture, RawCapture, looks_like_plain_audio, plain_dtmf
from tests.testbed.kamailio import Kamailio
from tests.testbed.proc import TestbedError
from tests.testbed.rtpengine import Rtpengine
from voipgw.audio.compare import compare_audio

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "baresip", "rtpengine", "sox")]

CALL_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "speech3": speech.make_variant(d / "speech3.wav", 8000, seconds=3.0),
        "speech2": speech.make_variant(d / "speech2.wav", 8000, seconds=2.0),
        # The callee plays a long tone: an aufile source that ends hangs up the call from either side.
        "tone": speech.make_tone(d / "tone.wav", 8000, 20.0),
    }


def _wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _assert_received(sent: Path, recording: Path, control: Path) -> None:
    g, w = audio_check.compare_files(sent, recording)
    assert g >= 0.9 and w >= 0.9, (g, w)
    ref, ref_rate = audio_check.read_wav(sent)
    rec, rate = audio_check.read_wav(recording)
    match = compare_audio(audio_check.resample(ref, ref_rate, rate), rec, rate)
    assert match.correlation >= 0.9 and match.windowed >= 0.9, match
    # Negative control: the same recording does not "match" the tone the other side played.
    assert max(audio_check.compare_files(control, recording)) < 0.3


def test_direct_pcmu_call_carries_speech_and_both_captures_see_plaintext(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    with (
        Baresip(tmp_path, user="bob", play=clips["tone"]) as bob,
        Baresip(tmp_path, user="alice", play=clips["speech3"]) as alice,
    ):
        lo, hi = alice.rtp_range
        with Capture(tmp_path, lo, hi, backend="tshark") as tshark, RawCapture(lo, hi) as raw:
            alice.dial(bob.contact_uri)
            alice.wait_event("CALL_ESTABLISHED")
            bob.wait_event("CALL_ESTABLISHED")
            closed = alice.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT)  # the speech file ended
            bob.wait_event("CALL_CLOSED")
        raw_packets = raw.stop()
        assert "end of file" in closed.param
        _assert_received(clips["speech3"], bob.received_wav(), clips["tone"])
        assert max(audio_check.compare_files(clips["tone"], alice.received_wav())) >= 0.9

    assert tshark.backend == "tshark"
    for packets in (tshark.packets, raw_packets):
        verdict = looks_like_plain_audio(packets, clips["speech3"])
        assert {s.codec for s in verdict.streams} == {"PCMU"}
        assert len(verdict.streams) == 2  # one per direction
        assert verdict.correlation >= 0.9
        # The tone direction does not match the speech, and speech decoded as the wrong codec matches nothing.
        assert min(s.correlation for s in verdict.streams) < 0.3
        assert looks_like_plain_audio(packets, clips["speech3"], codec="opus").correlation < 0.3


@pytest.mark.parametrize(("codec", "rate"), [("PCMA", 8000), ("G722", 16000), ("opus", 48000)])
def test_codec_choice_is_honoured_and_dtmf_arrives(tmp_path: Path, codec: str, rate: int) -> None:
    sent = speech.make_variant(tmp_path / f"speech{rate}.wav", rate, seconds=2.0)
    tone = speech.make_tone(tmp_path / f"tone{rate}.wav", rate, 20.0)
    with (
        Baresip(tmp_path, user="bob", play=tone, codecs=(codec,), srate=rate) as bob,
        Baresip(tmp_path, user="alice", play=sent, codecs=(codec,), srate=rate) as alice,
    ):
        with RawCapture(*alice.rtp_range) as cap:
            alice.dial(bob.contact_uri)
            alice.wait_event("CALL_ESTABLISHED")
            bob.wait_event("CALL_RTPESTAB")
            alice.send_dtmf("19#*")
            alice.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT)
            bob.wait_event("CALL_CLOSED")
        assert alice.audio_codec() == bob.audio_codec() == codec
        assert bob.received_dtmf() == "19#*"
        assert plain_dtmf(cap.packets) == "19#*"  # the capture helper reads clear telephone-events
        _assert_received(sent, bob.received_wav(), tone)


def test_cancel_while_ringing_then_answer_hold_and_resume(tmp_path: Path, clips: dict[str, Path]) -> None:
    with (
        Baresip(tmp_path, user="bob", play=clips["tone"], answer="manual") as bob,
        Baresip(tmp_path, user="alice", play=clips["tone"]) as alice,
    ):
        alice.dial(bob.contact_uri)
        alice.wait_event("CALL_RINGING")
        bob.wait_event("CALL_INCOMING")
        alice.hangup()  # CANCEL
        assert "reset by peer" in bob.wait_event("CALL_CLOSED").param
        alice.wait_event("CALL_CLOSED")
        alice.dial(bob.contact_uri)
        bob.wait_event("CALL_INCOMING")
        bob.accept()
        alice.wait_event("CALL_ESTABLISHED")

        def offers() -> int:
            return sum(e.type == "CALL_REMOTE_SDP" and e.param == "offer" for e in bob.ctrl.history)

        before = offers()
        alice.hold()
        _wait_until(lambda: offers() == before + 1)  # the hold re-INVITE
        alice.resume()
        _wait_until(lambda: offers() == before + 2)  # the resume re-INVITE
        alice.hangup()
        bob.wait_event("CALL_CLOSED")


def test_unknown_codec_is_refused_at_start(tmp_path: Path, clips: dict[str, Path]) -> None:
    with pytest.raises(TestbedError, match="unknown codec"):
        Baresip(tmp_path, user="odd", play=clips["tone"], codecs=("opus/48000/1",)).start()


def test_registered_call_through_kamailio_with_digest_auth(tmp_path: Path, clips: dict[str, Path]) -> None:
    users = {"alice": "alicepw", "bob": "bobpw"}
    with Kamailio(tmp_path, users=users, auth=True) as kam:
        registrar = f"127.0.0.1:{kam.port}"
        with (
            Baresip(tmp_path, user="bob", play=clips["tone"], registrar=registrar, password="bobpw") as bob,
            Baresip(tmp_path, user="alice", play=clips["speech2"], registrar=registrar, password="alicepw") as alice,
            Baresip(tmp_path, user="mallory", play=clips["tone"], registrar=registrar, password="wrong") as bad,
        ):
            bob.wait_registered()
            alice.wait_registered()
            alice.dial(f"sip:bob@{registrar}")
            alice.wait_event("CALL_ESTABLISHED")
            assert bob.wait_event("CALL_ESTABLISHED").peeruri.startswith("sip:alice@")
            alice.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT)
            bob.wait_event("CALL_CLOSED")
            _assert_received(clips["speech2"], bob.received_wav(), clips["tone"])
            bad.wait_reg_state("ERR")  # a wrong password is refused by the registrar


def test_call_through_kamailio_and_rtpengine_is_relayed(tmp_path: Path, clips: dict[str, Path]) -> None:
    with Rtpengine(tmp_path) as rtp, Kamailio(tmp_path, rtpengine_ng=rtp.ng_socket) as kam:
        registrar = f"127.0.0.1:{kam.port}"
        with (
            Baresip(tmp_path, user="bob", play=clips["tone"], registrar=registrar) as bob,
            Baresip(tmp_path, user="alice", play=clips["speech2"], registrar=registrar) as alice,
        ):
            bob.wait_registered()
            alice.wait_registered()
            relay_lo, relay_hi = rtp.rtp_range
            with RawCapture(*alice.rtp_range) as alice_side, RawCapture(*bob.rtp_range) as bob_side:
                alice.dial(f"sip:bob@{registrar}")
                alice.wait_event("CALL_ESTABLISHED")
                alice.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT)
                bob.wait_event("CALL_CLOSED")
            _assert_received(clips["speech2"], bob.received_wav(), clips["tone"])
            # Every RTP packet either phone received came from the relay's ports, never from the other phone.
            for cap, phone in ((alice_side, alice), (bob_side, bob)):
                lo, hi = phone.rtp_range
                inbound = [p for p in cap.packets if lo <= p.dst_port <= hi and p.rtp() is not None]
                assert len(inbound) > 50
                assert all(relay_lo <= p.src_port <= relay_hi for p in inbound)
