"""The gateway as a real process between a plain baresip and a voipgw softphone, both directions, on loopback:
audio crosses (PCMU inside, sealed Opus outside), the outside leg is secure with one SAS at both ends, and the
inside callee's display shows the label with that SAS first."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.phones import PhoneProc, start_caller, start_listener
from tests.support.requires import requires
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from tests.testbed.gateway_proc import start_gateway, stop_with_snapshot
from voipgw.audio.compare import AudioMatch, compare_audio
from voipgw.audio.wav import read_wav
from voipgw.gateway.announce import Cue, announcement, render
from voipgw.gateway.model import B2buaSettings
from voipgw.negotiate import no_inband_offer

NO_INBAND_OFFER = no_inband_offer(B2buaSettings(home=Path(), users=()).inband_wait_s)

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("baresip", "sox")]

CLIP_SECONDS = 3.0
MIN_CORRELATION = 0.9
PROC_TIMEOUT = 25.0


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gw-clips")
    return {
        "speech8k": speech.make_variant(d / "speech8k.wav", 8000, seconds=CLIP_SECONDS),
        "speech8k_long": speech.make_variant(d / "speech8k_long.wav", 8000),
        "speech16k_long": speech.make_variant(d / "speech16k_long.wav", 16000),
        "speech48k": speech.make_variant(d / "speech48k.wav", 48000, seconds=CLIP_SECONDS),
        "speech48k_long": speech.make_variant(d / "speech48k_long.wav", 48000),
    }


def heard(sent: Path, recording: Path) -> AudioMatch:
    ref = read_wav(sent)
    rec = read_wav(recording)
    return compare_audio(ref[: len(rec)], rec)


def _one_call(snapshot: dict[str, Any], gw: PhoneProc) -> dict[str, Any]:
    assert snapshot["calls"] == [], snapshot
    assert len(snapshot["finished"]) == 1, (snapshot, gw.log())
    call: dict[str, Any] = snapshot["finished"][0]
    return call


def _gateway_for_bob(tmp_path: Path, bob: Baresip) -> tuple[PhoneProc, Path]:
    """A gateway for the inside phone bob, reached from outside."""
    return start_gateway(tmp_path, "--user", f"bob=sip:bob@127.0.0.1:{bob.sip_port}")


def _carol_calls_bob(tmp_path: Path, gw: PhoneProc, clips: dict[str, Path], *extra: str) -> PhoneProc:
    """carol, an outside voipgw phone, calls bob at the gateway playing the short 48 kHz clip (wire not tapped)."""
    return start_caller(
        tmp_path, "carol", f"sip:bob@127.0.0.1:{gw.sip_port}", *extra, "--play", str(clips["speech48k"]), tap=False
    )


@pytest.mark.parametrize("codec", ["PCMU", "opus"])
def test_inside_baresip_calls_outside_voipgw_through_the_gateway(
    tmp_path: Path, clips: dict[str, Path], codec: str
) -> None:
    """PCMU is transcoded to and from Opus; an Opus inside phone's frames are sealed as they are (pass-through)."""
    sent = clips["speech8k"] if codec == "PCMU" else clips["speech48k"]
    bob = start_listener(tmp_path, "bob", "--play", str(clips["speech48k_long"]), tap=False)
    try:
        with Baresip(
            tmp_path, user="alice", play=sent, codecs=(codec,), srate=8000 if codec == "PCMU" else 48000
        ) as alice:
            gw, snap = start_gateway(
                tmp_path,
                "--user",
                f"alice=sip:alice@127.0.0.1:{alice.sip_port},alice@127.0.0.1",
                "--route",
                f"bob=sip:bob@127.0.0.1:{bob.sip_port}",
            )
            try:
                alice.dial(f"sip:bob@127.0.0.1:{gw.sip_port}")
                alice.wait_event("CALL_ESTABLISHED", timeout=10.0)
                alice.wait_event("CALL_CLOSED", timeout=PROC_TIMEOUT)  # her file ended: she hangs up
                alice_heard = alice.received_wav()
                assert alice.audio_codec().startswith(codec), alice.audio_codec()
                assert bob.wait(PROC_TIMEOUT) == 0, bob.log()
            finally:
                snapshot = stop_with_snapshot(gw, snap)
    finally:
        bob.stop()
    b = bob.summary()
    call = _one_call(snapshot, gw)
    assert b["state"] == "ended" and b["security"] == "secure, unverified", b
    assert b["remote_aor"] == "alice@127.0.0.1"
    assert call["direction"] == "outbound" and call["state"] == "ended"
    assert call["security"] == "secure, unverified"
    assert call["sas"] is not None and call["sas"] == b["sas"]
    assert call["inside_codec"] == codec.lower() and call["outside_codec"] == "opus"
    assert call["passthrough"] is (codec == "opus")
    if codec == "opus":  # nearly every frame crossed as it came, both ways (the first few race the answer)
        assert call["passthrough_frames"]["to_outside"] >= 0.9 * call["outside_frames_sealed"], call
        # ...except the answer's cue, which the gateway encodes and sends itself (no spoken SAS: --speak-sas off).
        cue = len(render(announcement(Cue(call["cue"]), call["sas"], speak=False)))
        assert call["passthrough_frames"]["to_inside"] + cue >= 0.9 * call["inside_frames_out"], call
    else:
        assert call["passthrough_frames"] == {"to_outside": 0, "to_inside": 0}, call
    assert call["outside_frames_refused"] == 0 and b["frames_refused"] == 0
    assert call["reason"].startswith("inside:"), call
    assert f"secure, unverified, outside x25519 codec opus SAS {b['sas']}" in gw.log(), gw.log()
    to_bob, to_alice = heard(sent, bob.wav), heard(clips["speech48k_long"], alice_heard)
    print(f"{codec}: alice->bob {to_bob.windowed:.3f}, bob->alice {to_alice.windowed:.3f}, "
          f"outside setup {call['outside_setup_ms']} ms")  # fmt: skip
    assert to_bob.windowed >= MIN_CORRELATION, to_bob
    assert to_alice.windowed >= MIN_CORRELATION, to_alice


def test_outside_voipgw_calls_inside_baresip_shown_with_the_sas(tmp_path: Path, clips: dict[str, Path]) -> None:
    with Baresip(tmp_path, user="bob", play=clips["speech8k_long"], codecs=("PCMU",)) as bob:
        gw, snap = _gateway_for_bob(tmp_path, bob)
        try:
            carol = _carol_calls_bob(tmp_path, gw, clips)
            try:
                established = bob.wait_event("CALL_ESTABLISHED", timeout=10.0)
                assert carol.wait(PROC_TIMEOUT) == 0, carol.log()
                bob.wait_event("CALL_CLOSED", timeout=10.0)  # the gateway passed carol's BYE on
                bob_heard = bob.received_wav()
                events = [e.raw for e in bob.ctrl.history]
            finally:
                carol.stop()
        finally:
            snapshot = stop_with_snapshot(gw, snap)
    c = carol.summary()
    call = _one_call(snapshot, gw)
    assert [e["type"] for e in events].count("CALL_CLOSED") == 1, events
    assert c["state"] == "ended" and c["security"] == "secure, unverified", c
    assert call["direction"] == "inbound" and call["state"] == "ended"
    assert call["sas"] is not None and call["sas"] == c["sas"]
    assert call["display"] == f"[NEW {c['sas']}] carol" and call["label"] == "first-contact", call
    assert established.raw["peerdisplayname"] == f"[NEW {c['sas']}] carol", established.raw
    assert f"shown as '[NEW {c['sas']}] carol'" in gw.log(), gw.log()
    assert call["reason"].startswith("outside:"), call
    to_bob, to_carol = heard(clips["speech48k"], bob_heard), heard(clips["speech8k_long"], carol.wav)
    print(f"carol->bob {to_bob.windowed:.3f}, bob->carol {to_carol.windowed:.3f}, SAS after {call['sas_wait_ms']} ms")
    assert to_bob.windowed >= MIN_CORRELATION, to_bob
    assert to_carol.windowed >= MIN_CORRELATION, to_carol


def _gateway_for_alice(tmp_path: Path, alice: Baresip, bob: PhoneProc) -> tuple[PhoneProc, Path]:
    return start_gateway(
        tmp_path,
        "--user",
        f"alice=sip:alice@127.0.0.1:{alice.sip_port}",
        "--route",
        f"bob=sip:bob@127.0.0.1:{bob.sip_port}",
    )


def test_a_plain_outside_answer_is_refused_and_the_inside_phone_gets_488(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    """A destination without voipgw (a plain phone) answers; under require the gateway hangs that leg up at once
    and the inside phone gets 488 with the reason, never a call whose audio would leave in the clear."""
    bob = start_listener(
        tmp_path, "bob", "--plain", "--policy", "opportunistic", "--play", str(clips["speech48k"]), tap=False
    )
    try:
        with Baresip(tmp_path, user="alice", play=clips["speech8k"], codecs=("PCMU",)) as alice:
            gw, snap = _gateway_for_alice(tmp_path, alice, bob)
            try:
                alice.dial(f"sip:bob@127.0.0.1:{gw.sip_port}")
                closed = alice.wait_event("CALL_CLOSED", timeout=10.0)
                assert "CALL_ESTABLISHED" not in [e.type for e in alice.ctrl.history]
                bob.wait(PROC_TIMEOUT)
            finally:
                snapshot = stop_with_snapshot(gw, snap)
    finally:
        bob.stop()
    assert closed.param == "488 Not Acceptable Here", closed
    call = _one_call(snapshot, gw)
    assert call["state"] == "failed" and call["security"] == "refused", call
    # bob answered plain (its stream had no a=voipgw and no in-band answer came within the bounded wait)
    assert call["reason"].startswith("488 ") and "no key exchange: the answer had no a=voipgw" in call["reason"], call
    assert call["outside_frames_sealed"] == 0 and call["inside_frames_out"] == 0
    b = bob.summary()
    # All bob got from the gateway was its offer in the media path (one packet per burst while it waited), which
    # bob's Opus decoder refused: nothing played.
    assert b["frames_received"] <= 6 and b["decode_failures"] == b["frames_received"] and b["frames_played"] == 0, b


def test_cancel_from_the_inside_phone_cancels_the_ringing_outside_leg(tmp_path: Path, clips: dict[str, Path]) -> None:
    bob = start_listener(tmp_path, "bob", "--answer-after", "20", "--play", str(clips["speech48k"]), tap=False)
    try:
        with Baresip(tmp_path, user="alice", play=clips["speech8k"], codecs=("PCMU",)) as alice:
            gw, snap = _gateway_for_alice(tmp_path, alice, bob)
            try:
                alice.dial(f"sip:bob@127.0.0.1:{gw.sip_port}")
                alice.wait_event("CALL_RINGING", timeout=10.0)
                _wait_log(bob, "incoming call from sip:alice@127.0.0.1")
                alice.hangup()
                alice.wait_event("CALL_CLOSED", timeout=10.0)
                assert bob.wait(PROC_TIMEOUT) == 1, bob.log()  # --once: the missed call is its only call
            finally:
                snapshot = stop_with_snapshot(gw, snap)
    finally:
        bob.stop()
    b = bob.summary()
    assert b["state"] == "failed" and "cancelled by the caller" in b["reason"], b
    call = _one_call(snapshot, gw)
    assert call["state"] == "failed" and call["reason"] == "cancelled by the inside phone", call


def test_outside_hangup_while_the_inside_phone_rings_cancels_it(tmp_path: Path, clips: dict[str, Path]) -> None:
    with Baresip(tmp_path, user="bob", play=clips["speech8k_long"], codecs=("PCMU",), answer="manual") as bob:
        gw, snap = _gateway_for_bob(tmp_path, bob)
        try:
            carol = _carol_calls_bob(tmp_path, gw, clips)
            try:
                incoming = bob.wait_event("CALL_INCOMING", timeout=10.0)
                carol.signal(15)  # SIGTERM: carol gives up while bob's phone rings (nothing was answered: CANCEL)
                assert carol.wait(PROC_TIMEOUT) == 1, carol.log()
                bob.wait_event("CALL_CLOSED", timeout=10.0)
                assert "CALL_ESTABLISHED" not in [e.type for e in bob.ctrl.history]
            finally:
                carol.stop()
        finally:
            snapshot = stop_with_snapshot(gw, snap)
    c = carol.summary()
    assert c["state"] == "failed" and c["reason"] == "cancelled" and c["security"] == "secure, unverified", c
    call = _one_call(snapshot, gw)
    assert call["sas"] and incoming.raw["peerdisplayname"] == f"[NEW {call['sas']}] carol", incoming.raw
    assert call["state"] == "failed" and "while the inside phone rang" in call["reason"], call


def test_gateway_sigterm_hangs_up_both_legs(tmp_path: Path, clips: dict[str, Path]) -> None:
    bob = start_listener(tmp_path, "bob", "--play", str(clips["speech48k_long"]), tap=False)
    try:
        with Baresip(tmp_path, user="alice", play=clips["speech16k_long"], codecs=("G722",), srate=16000) as alice:
            gw, snap = _gateway_for_alice(tmp_path, alice, bob)
            try:
                alice.dial(f"sip:bob@127.0.0.1:{gw.sip_port}")
                alice.wait_event("CALL_ESTABLISHED", timeout=10.0)
                assert alice.audio_codec().startswith("G722"), alice.audio_codec()
                time.sleep(1.0)  # let audio flow, so the counters below have something to count
            finally:
                snapshot = stop_with_snapshot(gw, snap)
            alice.wait_event("CALL_CLOSED", timeout=10.0)
            assert bob.wait(PROC_TIMEOUT) == 0, bob.log()
    finally:
        bob.stop()
    b = bob.summary()
    assert b["state"] == "ended" and b["security"] == "secure, unverified", b
    call = _one_call(snapshot, gw)
    assert call["inside_codec"] == "g722" and call["sas"] == b["sas"], call
    assert call["reason"] == "gateway shutdown", call
    assert call["inside_frames_in"] > 0 and call["outside_frames_opened"] > 0 and b["frames_opened"] > 0


def _wait_log(p: PhoneProc, text: str) -> None:
    deadline = time.monotonic() + 10.0
    while text not in p.log():
        if p.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{p.name} never logged {text!r}; log:\n{p.log()}")
        time.sleep(0.05)


def test_inside_phone_declining_ends_the_outside_call_with_the_reason(tmp_path: Path, clips: dict[str, Path]) -> None:
    with Baresip(tmp_path, user="bob", play=clips["speech8k_long"], codecs=("PCMU",), answer="manual") as bob:
        gw, snap = _gateway_for_bob(tmp_path, bob)
        try:
            carol = _carol_calls_bob(tmp_path, gw, clips)
            try:
                bob.wait_event("CALL_INCOMING", timeout=10.0)
                bob.hangup()  # decline while ringing: baresip 1.0 answers "486 Rejected" (it has no 603)
                carol.wait(PROC_TIMEOUT)
            finally:
                carol.stop()
        finally:
            snapshot = stop_with_snapshot(gw, snap)
    c = carol.summary()
    call = _one_call(snapshot, gw)
    assert call["state"] == "failed" and call["reason"] == "inside phone: 486 Rejected", call
    # carol's call was never answered: she gets the phone's own status as her final response
    assert c["state"] == "failed" and c["reason"].startswith("486 Rejected"), c


def test_unknown_user_and_outside_no_answer_get_clear_sip_failures(tmp_path: Path, clips: dict[str, Path]) -> None:
    bob = start_listener(tmp_path, "bob", "--answer-after", "20", "--play", str(clips["speech48k"]), tap=False)
    try:
        with Baresip(tmp_path, user="alice", play=clips["speech8k"], codecs=("PCMU",)) as alice:
            gw, snap = start_gateway(
                tmp_path,
                "--no-answer-timeout",
                "1",
                "--user",
                f"alice=sip:alice@127.0.0.1:{alice.sip_port}",
                "--route",
                f"bob=sip:bob@127.0.0.1:{bob.sip_port}",
            )
            try:
                carol = start_caller(
                    tmp_path,
                    "carol",
                    f"sip:nobody@127.0.0.1:{gw.sip_port}",
                    "--play",
                    str(clips["speech48k"]),
                    tap=False,
                )
                try:
                    assert carol.wait(PROC_TIMEOUT) != 0, carol.log()
                finally:
                    carol.stop()
                alice.dial(f"sip:bob@127.0.0.1:{gw.sip_port}")
                closed = alice.wait_event("CALL_CLOSED", timeout=10.0)
            finally:
                snapshot = stop_with_snapshot(gw, snap)
    finally:
        bob.stop()
    c = carol.summary()
    assert c["state"] == "failed" and c["reason"].startswith("404 "), c
    assert "no such user" in c["reason"], c
    assert closed.param.startswith("408 "), closed
    call = _one_call(snapshot, gw)
    assert call["state"] == "failed" and call["reason"].startswith("408 "), call
    # flag mode (no zones, no inside auth) says at every start that it is a lab mode
    assert "warning: flag mode is a lab mode" in gw.log(), gw.log()[-2000:]


def test_a_plain_outside_caller_is_refused_before_the_inside_phone_rings(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    with Baresip(tmp_path, user="bob", play=clips["speech8k_long"], codecs=("PCMU",)) as bob:
        gw, snap = _gateway_for_bob(tmp_path, bob)
        try:
            carol = _carol_calls_bob(tmp_path, gw, clips, "--plain", "--policy", "opportunistic")
            try:
                assert carol.wait(PROC_TIMEOUT) != 0, carol.log()
            finally:
                carol.stop()
            history = [e.type for e in bob.ctrl.history]
        finally:
            snapshot = stop_with_snapshot(gw, snap)
    c = carol.summary()
    assert c["state"] == "failed" and c["reason"].startswith("488 "), c
    assert NO_INBAND_OFFER in c["reason"], c  # the gateway waited (bounded) for an in-band offer, none came
    assert c["frames_sent"] == 0 and c["frames_received"] == 0, c
    assert history == [], history  # the inside phone never rang
    call = _one_call(snapshot, gw)
    assert call["state"] == "failed" and call["security"] == "refused", call


def test_two_gateways_back_to_back_bridge_two_plain_phones_end_to_end(tmp_path: Path, clips: dict[str, Path]) -> None:
    """baresip alice - gateway A - sealed Opus - gateway B - baresip bob: the issue's topology without the PBX."""
    with (
        Baresip(tmp_path, user="bob", play=clips["speech8k_long"], codecs=("PCMU",)) as bob,
        Baresip(tmp_path, user="alice", play=clips["speech8k"], codecs=("PCMU",)) as alice,
    ):
        gw_b, snap_b = start_gateway(tmp_path, "--user", f"bob=sip:bob@127.0.0.1:{bob.sip_port}", name="gw-b")
        try:
            gw_a, snap_a = start_gateway(
                tmp_path,
                "--user",
                f"alice=sip:alice@127.0.0.1:{alice.sip_port}",
                "--route",
                f"bob=sip:bob@127.0.0.1:{gw_b.sip_port}",
                name="gw-a",
            )
            try:
                alice.dial(f"sip:bob@127.0.0.1:{gw_a.sip_port}")
                rang = bob.wait_event("CALL_ESTABLISHED", timeout=10.0)
                alice.wait_event("CALL_CLOSED", timeout=PROC_TIMEOUT)  # her file ended: she hangs up
                bob.wait_event("CALL_CLOSED", timeout=10.0)
                alice_heard, bob_heard = alice.received_wav(), bob.received_wav()
            finally:
                a = stop_with_snapshot(gw_a, snap_a)
        finally:
            b = stop_with_snapshot(gw_b, snap_b)
    out, inn = _one_call(a, gw_a), _one_call(b, gw_b)
    assert out["direction"] == "outbound" and inn["direction"] == "inbound"
    assert out["security"] == inn["security"] == "secure, unverified"
    assert out["sas"] is not None and out["sas"] == inn["sas"]
    assert rang.raw["peerdisplayname"] == f"[NEW {out['sas']}] alice", rang.raw
    to_bob, to_alice = heard(clips["speech8k"], bob_heard), heard(clips["speech8k_long"], alice_heard)
    print(f"gateway to gateway: alice->bob {to_bob.windowed:.3f}, bob->alice {to_alice.windowed:.3f}")
    assert to_bob.windowed >= MIN_CORRELATION, to_bob
    assert to_alice.windowed >= MIN_CORRELATION, to_alice
