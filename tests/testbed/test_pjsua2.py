"""Self-tests of the plain pjsua2 peer (its own process, null sound device) against baresip and sipp."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.requires import requires
from tests.testbed import audio_check, speech
from tests.testbed.baresip import Baresip
from tests.testbed.capture import RawCapture
from tests.testbed.kamailio import Kamailio
from tests.testbed.pjsua2_peer import Pjsua2Peer
from tests.testbed.sipp import SippUas

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "baresip", "sipp", "pjsua2", "sox")]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "speech2": speech.make_variant(d / "speech2.wav", 8000, seconds=2.0),
        "tone": speech.make_tone(d / "tone.wav", 8000, 20.0),
    }


def test_baresip_calls_pjsua2_which_answers_records_and_sees_the_bye(tmp_path: Path, clips: dict[str, Path]) -> None:
    recording = tmp_path / "pjsua-received.wav"
    with (
        Pjsua2Peer(tmp_path, user="pj", record=recording) as pj,
        Baresip(tmp_path, user="alice", play=clips["speech2"]) as alice,
    ):
        alice.dial(pj.contact_uri)
        alice.wait_event("CALL_ESTABLISHED")
        assert pj.wait_state("CONFIRMED")["role"] == "callee"
        alice.wait_event("CALL_CLOSED", timeout=10.0)  # alice's file ended: she sends BYE
        gone = pj.wait_event("disconnected")
        assert gone["reason"] == "Normal call clearing"
        assert pj.states() == ["INCOMING", "CONNECTING", "CONFIRMED", "DISCONNECTED"]
        incoming = next(e for e in pj.events if e["event"] == "incoming")
        assert "m=audio" in incoming["invite"] and "sip:alice@" in incoming["remote"]
    assert pj.events[-1]["event"] == "stopped"  # clean libDestroy, not a kill
    assert pj.proc is not None and pj.proc.popen.returncode == 0
    # pjsua's jitter buffer sometimes drops or inserts a frame mid-call (measured: global 0.67, windowed
    # 0.9999), so the time-stretch-robust windowed figure is the one held to 0.9 here.
    g, w = audio_check.compare_files(clips["speech2"], recording)
    assert w >= 0.9 and g >= 0.5, (g, w)


def test_pjsua2_calls_baresip_and_hangs_up_after_its_duration(tmp_path: Path, clips: dict[str, Path]) -> None:
    with (
        Baresip(tmp_path, user="bob", play=clips["tone"]) as bob,
        Pjsua2Peer(tmp_path, user="pj", call="", duration=2.0, play=clips["speech2"]) as pj,
    ):
        pj.call(bob.contact_uri)
        bob.wait_event("CALL_ESTABLISHED")
        assert pj.wait_state("CONFIRMED")["role"] == "caller"
        closed = bob.wait_event("CALL_CLOSED", timeout=10.0)  # pjsua's BYE after 2 s
        gone = pj.wait_event("disconnected")
        assert gone["duration"] >= 1.5
        assert "CALLING" in pj.states() and pj.states()[-1] == "DISCONNECTED"
        assert closed.type == "CALL_CLOSED"
        g, w = audio_check.compare_files(clips["speech2"], bob.received_wav())
        assert w >= 0.9 and g >= 0.5, (g, w)  # windowed: pjsua's media clock may slip a frame (see above)


def test_pjsua2_reports_a_488_refusal_with_its_warning_header(tmp_path: Path) -> None:
    with SippUas(tmp_path, name="refuser", scenario_name="uas_488") as uas, Pjsua2Peer(tmp_path) as pj:
        pj.call(f"sip:bob@{uas.address}")
        gone = pj.wait_event("disconnected")
    assert gone["code"] == 488
    assert gone["status_line"] == "SIP/2.0 488 Not Acceptable Here"
    assert "end-to-end encryption required" in gone["warning"]
    assert uas.result is not None and uas.result.successful == 1


def test_pjsua2_busy_answer_reaches_the_baresip_caller(tmp_path: Path, clips: dict[str, Path]) -> None:
    with (
        Pjsua2Peer(tmp_path, user="busy", answer_code=486) as pj,
        Baresip(tmp_path, user="alice", play=clips["speech2"]) as alice,
    ):
        alice.dial(pj.contact_uri)
        closed = alice.wait_event("CALL_CLOSED", "CALL_ESTABLISHED", timeout=10.0)
        assert closed.type == "CALL_CLOSED"
        assert "486" in closed.param, closed
        assert pj.wait_event("disconnected")["code"] == 486


def test_pjsua2_registers_with_digest_auth_and_calls_both_ways_through_kamailio(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    with Kamailio(tmp_path, users={"alice": "alicepw", "pj": "pjpw"}, auth=True) as kam:
        registrar = f"127.0.0.1:{kam.port}"
        with (
            Pjsua2Peer(tmp_path, user="pj", registrar=registrar, password="pjpw") as pj,
            Baresip(tmp_path, user="alice", play=clips["tone"], registrar=registrar, password="alicepw") as alice,
        ):
            assert pj.wait_event("reg", lambda e: e["code"] != 100)["code"] == 200
            alice.wait_registered()
            alice.dial(f"sip:pj@{registrar}")
            alice.wait_event("CALL_ESTABLISHED")
            assert pj.wait_state("CONFIRMED")["role"] == "callee"
            alice.hangup()
            assert pj.wait_event("disconnected")["reason"] == "Normal call clearing"
            pj.call(f"sip:alice@{registrar}")  # challenged by Kamailio, retried with credentials
            alice.wait_event("CALL_ESTABLISHED")
            assert pj.wait_state("CONFIRMED")["role"] == "caller"
            pj.hangup()
            alice.wait_event("CALL_CLOSED")
            assert pj.wait_event("disconnected")["code"] == 200


def test_plain_pjsua2_refuses_an_opus_only_offer_with_488_before_any_callback(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    # What an Opus-only voipgw offer will meet: this wheel has no Opus, and PJSIP answers before Python runs.
    with (
        Pjsua2Peer(tmp_path, user="pj") as pj,
        Baresip(tmp_path, user="alice", play=clips["tone"], codecs=("opus",)) as alice,
        RawCapture(pj.sip_port, pj.sip_port) as cap,
    ):
        alice.dial(pj.contact_uri)
        assert alice.wait_event("CALL_CLOSED").param == "488 Not Acceptable Here"
    refusal = next(p.payload.decode() for p in cap.packets if p.payload.startswith(b"SIP/2.0 488"))
    assert "No suitable codec for remote offer" in refusal
    assert not any(e["event"] == "incoming" for e in pj.events)
