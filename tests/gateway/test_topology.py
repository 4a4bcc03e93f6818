"""The issue's topology on loopback: baresip alice - gateway A - Kamailio (the PBX, optionally with rtpengine) -
gateway B - baresip bob. Audio both ways in both directions (PCMU, PCMA, G.722, Opus pass-through), what the PBX side
carries (sealed only), DTMF, hold/resume, cancel while ringing, a busy far phone, non-gateway destinations under
both policies and a tampering PBX. The PBX, the gateways and the proxies are started once per module; phones once
per test. (Key changes, which restart a gateway with a new identity, have their own in test_gateway_more.py.)"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.labels import display_for
from tests.support.requires import requires
from tests.support.topology import (
    CALL_TIMEOUT,
    CLIP_SECONDS,
    MEDIA_TIMEOUT_S,
    MIN_CORRELATION,
    RATES,
    Node,
    Topology,
    event_types,
    heard,
    run_topology,
    sip_final,
    wait_closed,
    wait_until,
)
from tests.testbed import capture, speech
from tests.testbed.baresip import Baresip
from voipgw.audio.compare import AudioMatch
from voipgw.audio.wav import read_wav

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "baresip", "rtpengine", "sox")]

MAX_EAVESDROP_CORRELATION = 0.3
MAX_EAVESDROP_WINDOWED = 0.6
"""Random bytes decoded as Opus reach ~0.35 on the windowed median of a 3 s stream (it searches a lag per
window); plaintext scores > 0.9 on both figures (the inside-leg control below)."""


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """Kamailio relays the signalling; media flows gateway to gateway."""
    yield from run_topology(tmp_path_factory.mktemp("topo-direct"), with_rtpengine=False)


@pytest.fixture(scope="module")
def relayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """Kamailio with rtpengine: the PBX relays the media too, rewriting addresses and ports."""
    yield from run_topology(tmp_path_factory.mktemp("topo-rtpengine"), with_rtpengine=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("topo-clips")
    out: dict[str, Path] = {}
    for codec, rate in RATES.items():
        out[codec] = speech.make_variant(d / f"speech-{codec}.wav", rate, seconds=CLIP_SECONDS)
        out[f"{codec}-long"] = speech.make_variant(d / f"speech-{codec}_long.wav", rate)
    return out


def _call(
    topo: Topology, workdir: Path, clips: dict[str, Path], codec: str, caller: str
) -> tuple[
    dict[str, Any], dict[str, Any], AudioMatch, AudioMatch, list[capture.CapturedPacket], list[capture.CapturedPacket]
]:
    """One call from ``caller`` (alice or bob) to the other through both gateways; the caller's clip ends it.
    Returns both gateways' records of it, what each phone heard of the other, and the packets on the PBX side
    (rtpengine's ports; none without it) and on the caller's inside leg."""
    callee = "bob" if caller == "alice" else "alice"
    gw_out, gw_in = (topo.gw_a, topo.gw_b) if caller == "alice" else (topo.gw_b, topo.gw_a)
    n_out, n_in = gw_out.finished_count(), gw_in.finished_count()
    lo, hi = topo.rtpengine.rtp_range if topo.rtpengine is not None else (0, -1)
    with (
        topo.phone(workdir, callee, clips[f"{codec}-long"], codec) as answerer,
        topo.phone(workdir, caller, clips[codec], codec) as dialler,
        capture.RawCapture(lo, hi) as cap,
        capture.RawCapture(*dialler.rtp_range) as inside_cap,
    ):
        dialler.dial(f"sip:{callee}@127.0.0.1:{gw_out.port}")
        answerer.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        connected = dialler.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        # What the caller's screen shows: only what it dialled (hence the in-band cue; docs/OPERATIONS.md).
        assert "[" not in connected.raw.get("peerdisplayname", ""), connected.raw
        wait_closed(dialler)  # its clip ended: it hangs up
        wait_closed(answerer)
        assert dialler.audio_codec().startswith(codec) and answerer.audio_codec().startswith(codec)
        to_callee = heard(clips[codec], answerer.received_wav())
        to_caller = heard(clips[f"{codec}-long"], dialler.received_wav())
    calls = gw_out.finished_after(n_out), gw_in.finished_after(n_in)
    return *calls, to_callee, to_caller, cap.packets, inside_cap.packets


AUDIO_CASES = [
    (pbx, caller, codec)
    for pbx in ("direct", "relayed")
    for caller in ("alice", "bob")
    for codec in ("PCMU", "PCMA", "G722", "opus")
    if not (codec == "PCMA" and pbx == "relayed")
]
"""PCMA only without rtpengine: the codec lives on the inside legs, and what rtpengine relays (sealed Opus) is the
same for PCMA as for PCMU, which is tested through it; this keeps CI time (and exposure to a starved baresip on a
loaded machine) down."""


@pytest.mark.parametrize(("pbx", "caller", "codec"), AUDIO_CASES, ids=["-".join(case) for case in AUDIO_CASES])
def test_call_through_the_pbx_carries_audio_both_ways_sealed(
    request: pytest.FixtureRequest, tmp_path: Path, clips: dict[str, Path], pbx: str, caller: str, codec: str
) -> None:
    topo: Topology = request.getfixturevalue(pbx)
    out, inn, to_callee, to_caller, packets, inside = _call(topo, tmp_path, clips, codec, caller)
    print(f"{pbx} {codec} {caller} calls: to callee {to_callee.windowed:.3f}, to caller {to_caller.windowed:.3f}")
    assert out["direction"] == "outbound" and inn["direction"] == "inbound", (out, inn)
    assert out["security"] == inn["security"] == "secure, unverified", (out, inn)
    assert out["sas"] is not None and out["sas"] == inn["sas"]
    assert inn["display"] == display_for(inn, caller) and inn["label"] in ("first-contact", "known"), inn
    assert out["cue"] in ("first contact", "known"), out  # the module's first call is a first contact
    assert out["inside_codec"] == inn["inside_codec"] == codec.lower()
    assert out["outside_codec"] == inn["outside_codec"] == "opus"
    assert out["passthrough"] is inn["passthrough"] is (codec == "opus")
    assert out["outside_frames_refused"] == inn["outside_frames_refused"] == 0
    assert to_callee.windowed >= MIN_CORRELATION, to_callee
    assert to_caller.windowed >= MIN_CORRELATION, to_caller
    if topo.rtpengine is not None:
        # What the PBX relayed: RTP, and none of it decodes (as G.711 or Opus) to either phone's speech.
        assert sum(1 for p in packets if p.rtp() is not None) > 100, len(packets)
        for sent in (clips[codec], clips[f"{codec}-long"]):
            for as_codec in ("PCMU", "opus"):
                verdict = capture.looks_like_plain_audio(packets, sent, as_codec)
                assert verdict.streams, "no RTP stream through rtpengine"
                print(f"  PBX side decoded as {as_codec}: {[round(v.correlation, 3) for v in verdict.streams]}")
                assert max(v.correlation for v in verdict.streams) < MAX_EAVESDROP_CORRELATION, (as_codec, verdict)
                assert max(v.windowed_correlation for v in verdict.streams) < MAX_EAVESDROP_WINDOWED, verdict
        assert capture.plain_dtmf(packets) == ""
    if codec in ("PCMU", "PCMA"):  # the control: the same detector reads the plain inside leg as the caller's
        # speech, decoded as the codec the phone was given (so a PCMA phone really sent A-law, not mu-law)
        assert capture.looks_like_plain_audio(inside, clips[codec], codec).correlation >= MIN_CORRELATION
        other = "PCMA" if codec == "PCMU" else "PCMU"
        assert capture.looks_like_plain_audio(inside, clips[codec], other).correlation < MIN_CORRELATION


def _active(node: Node) -> dict[str, Any]:
    calls = node.active()
    assert len(calls) == 1, calls
    return calls[0]


def test_hold_and_resume_pass_through_both_gateways(direct: Topology, tmp_path: Path, clips: dict[str, Path]) -> None:
    """alice holds: gateway A re-INVITEs the outside leg (no new handshake), gateway B re-INVITEs bob's phone
    (sendonly); resume undoes it; then bob holds and resumes from his side. Audio flows again after each."""
    a, b = direct.gw_a, direct.gw_b
    n_a, n_b = a.finished_count(), b.finished_count()
    with (
        direct.phone(tmp_path, "bob", clips["PCMU-long"]) as bob,
        direct.phone(tmp_path, "alice", clips["PCMU-long"]) as alice,
    ):
        alice.dial(f"sip:bob@127.0.0.1:{a.port}")
        bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        alice.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)  # A answers alice once it has the SAS
        sas = _active(a)["sas"]
        for holder, node, far in ((alice, a, b), (bob, b, a)):
            holder.hold()
            wait_until(lambda n=node: _active(n)["hold"]["inside"], f"{holder.user}'s hold at its gateway")
            wait_until(lambda n=far: _active(n)["hold"]["outside"], f"{holder.user}'s hold at the far gateway")
            holder.resume()
            wait_until(lambda n=node: not _active(n)["hold"]["inside"], f"{holder.user}'s resume at its gateway")
            wait_until(lambda n=far: not _active(n)["hold"]["outside"], f"{holder.user}'s resume at the far gateway")
        before = _active(b)["outside_frames_opened"], _active(a)["outside_frames_opened"]
        time.sleep(1.0)
        after = _active(b)["outside_frames_opened"], _active(a)["outside_frames_opened"]
        alice.hangup()
        wait_closed(alice)
        wait_closed(bob)
        reinvited = [p.proc.log_text().count("call: got re-INVITE") for p in (alice, bob) if p.proc is not None]
    out, inn = a.finished_after(n_a), b.finished_after(n_b)
    assert reinvited == [2, 2], reinvited  # each phone saw the other's hold and resume as a re-INVITE
    assert after[0] > before[0] + 25 and after[1] > before[1] + 25, (before, after)
    assert out["sas"] == inn["sas"] == sas  # the same sealed session throughout
    assert out["hold"]["reinvites"] == inn["hold"]["reinvites"] == 4, (out, inn)
    assert out["outside_frames_refused"] == inn["outside_frames_refused"] == 0
    assert "holds; passing it to the outside leg" in a.log() and "holds; passing it to the inside leg" in b.log()


def _band_share(recording: Path, *bands: tuple[float, float]) -> list[float]:
    """The share of the recording's energy in each (low Hz, high Hz) band."""
    pcm = read_wav(recording).astype(np.float64)
    power = np.abs(np.fft.rfft(pcm)) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / 48000)
    total = float(power.sum()) or 1.0
    return [float(power[(freqs >= lo) & (freqs <= hi)].sum()) / total for lo, hi in bands]


def test_ringing_the_caller_hears_only_its_own_ringback_and_hanging_up_cancels(
    direct: Topology, tmp_path: Path, clips: dict[str, Path]
) -> None:
    """The early dialog, as the gateways define it: bob's phone rings with the SAS on its display while nothing
    is answered (gateway B sends its sealed ringback on the outside leg; gateway A never relays early media to
    alice, whose phone plays its own ringback). When alice hangs up, bob's ringing phone is cancelled, both
    gateways record why, and neither call was ever answered."""
    a, b = direct.gw_a, direct.gw_b
    n_a, n_b = a.finished_count(), b.finished_count()
    with (
        direct.phone(tmp_path, "bob", clips["PCMU-long"], answer="manual") as bob,
        direct.phone(tmp_path, "alice", clips["PCMU-long"]) as alice,
    ):
        alice.dial(f"sip:bob@127.0.0.1:{a.port}")
        incoming = bob.wait_event("CALL_INCOMING", timeout=CALL_TIMEOUT)
        wait_until(lambda: _active(b)["ringback_frames"] >= 75, "1.5 s of ringback")
        ringing_a = _active(a)
        alice.hangup()
        wait_closed(alice)
        wait_closed(bob)
        alice_saw, bob_saw = event_types(alice), event_types(bob)
    out, inn = a.finished_after(n_a), b.finished_after(n_b)
    assert "CALL_ESTABLISHED" not in bob_saw and "CALL_ESTABLISHED" not in alice_saw, (alice_saw, bob_saw)
    assert "CALL_RINGING" in alice_saw, alice_saw
    assert incoming.raw["peerdisplayname"] == display_for(inn, "alice") and inn["sas"] == out["sas"], incoming.raw
    assert ringing_a["inside_frames_out"] == 0, ringing_a  # nothing reaches alice before the answer
    assert inn["state"] == "failed" and "while the inside phone rang" in inn["reason"], inn
    assert out["state"] == "failed" and out["reason"] == "cancelled by the inside phone", out


def test_a_destination_without_a_gateway_is_refused_under_require(
    direct: Topology, tmp_path: Path, clips: dict[str, Path]
) -> None:
    """carol is a plain phone (no gateway): alice's call to her is refused with 488 and a Warning that says why,
    carol's answered leg is hung up at once with the reason; carol's call to bob never rings bob's phone."""
    a, b = direct.gw_a, direct.gw_b
    n_a, n_b = a.finished_count(), b.finished_count()
    alice_sip, carol_sip = direct.phones["alice"][0], direct.phones["carol"][0]
    with (
        direct.plain_phone(tmp_path, "carol", clips["opus-long"], "opus") as carol,
        direct.phone(tmp_path, "alice", clips["PCMU-long"]) as alice,
        direct.phone(tmp_path, "bob", clips["PCMU-long"]) as bob,
        capture.RawCapture(alice_sip, alice_sip) as alice_wire,
        capture.RawCapture(carol_sip, carol_sip) as carol_wire,
    ):
        carol.wait_registered()
        alice.dial(f"sip:carol@127.0.0.1:{a.port}")
        refused = wait_closed(alice)
        wait_closed(carol)
        carol.dial(f"sip:bob@127.0.0.1:{direct.pbx.port}")
        refused_carol = wait_closed(carol)
        out, inn = a.finished_after(n_a), b.finished_after(n_b)
        alice_saw, bob_saw = event_types(alice), event_types(bob)
    assert refused.param == refused_carol.param == "488 Not Acceptable Here", (refused, refused_carol)
    assert "CALL_ESTABLISHED" not in alice_saw and bob_saw == []
    to_alice = sip_final(alice_wire.packets, 488)
    assert "Warning: 399" in to_alice and "no key exchange: the answer had no a=voipgw" in to_alice, to_alice
    to_carol = sip_final(carol_wire.packets, 488)
    assert "Warning: 399" in to_carol and "requires" not in to_carol and "key exchange" in to_carol, to_carol
    bye = next((p.payload.decode() for p in carol_wire.packets if p.payload.startswith(b"BYE ")), "")
    assert "Reason: SIP; cause=488" in bye and "no key exchange: the answer had no a=voipgw" in bye, bye
    assert out["policy"] == inn["policy"] == "require"
    assert out["state"] == inn["state"] == "failed" and out["security"] == inn["security"] == "refused"
    assert out["outside_frames_sealed"] == 0 and out["inside_frames_out"] == 0


def test_a_destination_without_a_gateway_goes_through_in_the_clear_under_opportunistic(
    direct: Topology, tmp_path: Path, clips: dict[str, Path]
) -> None:
    """dave (a plain phone) matches an ``opportunistic`` destination rule on both gateways: alice's call to him
    and his call to bob go through in the clear, marked NOT SECURE (the cue, the display, the logs, the
    snapshot), with audio both ways."""
    a, b = direct.gw_a, direct.gw_b
    n_a, n_b = a.finished_count(), b.finished_count()
    with direct.plain_phone(tmp_path / "out", "dave", clips["PCMU-long"]) as dave:
        dave.wait_registered()
        with direct.phone(tmp_path / "out", "alice", clips["PCMU"]) as alice:
            alice.dial(f"sip:dave@127.0.0.1:{a.port}")
            dave.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
            wait_closed(alice)
            wait_closed(dave)
            alice_heard, dave_heard = alice.received_wav(), dave.received_wav()
        out = a.finished_after(n_a)
    with direct.plain_phone(tmp_path / "in", "dave", clips["PCMU"]) as dave:
        dave.wait_registered()
        with direct.phone(tmp_path / "in", "bob", clips["PCMU-long"]) as bob:
            dave.dial(f"sip:bob@127.0.0.1:{direct.pbx.port}")
            shown = bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
            wait_closed(dave)
            wait_closed(bob)
            bob_heard, dave_heard_in = bob.received_wav(), dave.received_wav()
        inn = b.finished_after(n_b)
    assert out["policy"] == inn["policy"] == "opportunistic"
    assert out["security"] == inn["security"] == "NOT SECURE", (out, inn)
    assert out["sas"] is None and inn["sas"] is None
    assert out["cue"] == "not secure"
    assert inn["display"] == "[INSECURE] dave" and shown.raw["peerdisplayname"] == "[INSECURE] dave"
    assert "[NOT SECURE]" in a.log() and "'[INSECURE] dave'" in b.log()
    matches = [
        heard(clips["PCMU"], dave_heard),
        heard(clips["PCMU-long"], alice_heard),
        heard(clips["PCMU"], bob_heard),
        heard(clips["PCMU-long"], dave_heard_in),
    ]
    print("NOT SECURE calls:", ", ".join(f"{m.windowed:.3f}" for m in matches))
    assert all(m.windowed >= MIN_CORRELATION for m in matches), matches


class OneCallBaresip(Baresip):
    """baresip that takes one call at a time (``call_max_calls 1``): while it talks, a new INVITE gets 486."""

    def _write_config(self) -> None:
        super()._write_config()
        with (self.dir / "config").open("a") as config:
            config.write("call_max_calls          1\n")


def test_a_busy_far_phone_reaches_the_caller_as_486_through_both_gateways(
    direct: Topology, tmp_path: Path, clips: dict[str, Path]
) -> None:
    """bob is busy: he talks to dave (a plain phone, opportunistic) and his phone takes one call at a time, so
    alice's call through both gateways and the PBX meets his 486. Nothing was answered (the key exchange ran in
    the early dialog), so alice's phone gets 486 as its final response, with the Reason passed on. Both gateways
    record it, bob's call with dave goes on, and nothing is left behind."""
    a, b = direct.gw_a, direct.gw_b
    n_a, n_b = a.finished_count(), b.finished_count()
    alice_sip = direct.phones["alice"][0]
    with (
        direct.plain_phone(tmp_path, "dave", clips["PCMU-long"]) as dave,
        OneCallBaresip(
            tmp_path, user="bob", play=clips["PCMU-long"], codecs=("PCMU",), srate=8000, ports=direct.phones["bob"]
        ) as bob,
        direct.phone(tmp_path, "alice", clips["PCMU-long"]) as alice,
        capture.RawCapture(alice_sip, alice_sip) as alice_wire,
    ):
        dave.wait_registered()
        bob.dial(f"sip:dave@127.0.0.1:{b.port}")
        dave.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        alice.dial(f"sip:bob@127.0.0.1:{a.port}")
        closed = wait_closed(alice)
        out, inn = a.finished_after(n_a), b.finished_after(n_b)
        talking = _active(b)  # bob's call with dave, still up
        alice_saw, bob_saw, dave_saw = event_types(alice), event_types(bob), event_types(dave)
        bob_log = bob.proc.log_text() if bob.proc is not None else ""
        bob.hangup()
        wait_closed(bob)
        wait_closed(dave)
    wait_until(lambda: not a.active() and not b.active(), "both gateways to have no call left")
    print(f"alice's phone: {closed.param!r}; A: {out['reason']!r}; B: {inn['reason']!r}")
    assert "rejected call" in bob_log and "maximum 1 calls" in bob_log, bob_log  # baresip answered 486 Max Calls
    # while alice's call came and went, bob's own call stayed up and his phone never rang
    assert "CALL_INCOMING" not in bob_saw and "CALL_CLOSED" not in bob_saw, bob_saw
    assert "CALL_ESTABLISHED" in dave_saw and "CALL_CLOSED" not in dave_saw, dave_saw
    # nothing was answered: alice's phone gets the 486 itself, never a connected call
    assert closed.param.startswith("486"), closed
    assert "CALL_ESTABLISHED" not in alice_saw and alice_saw.count("CALL_CLOSED") == 1, alice_saw
    assert inn["direction"] == "inbound" and inn["remote_aor"] == "alice@127.0.0.1", inn
    assert inn["state"] == "failed" and inn["reason"] == "inside phone: 486 Max Calls", inn
    assert inn["inside_frames_in"] == 0, inn
    assert out["direction"] == "outbound" and "486 Max Calls" in out["reason"], out
    assert out["security"] == inn["security"] == "secure, unverified", (out, inn)
    final = sip_final(alice_wire.packets, 486)
    assert "Reason: SIP; cause=486" in final and "Max Calls" in final, final
    assert talking["remote_aor"] == "dave@127.0.0.1" and talking["security"] == "NOT SECURE", talking


def test_a_pbx_that_rewrites_the_handshake_gets_the_call_refused_at_both_ends(
    direct: Topology, tmp_path: Path, clips: dict[str, Path]
) -> None:
    """The PBX flips a bit of the offer's key exchange: gateway B refuses (488, bad signature), bob's phone
    never rings, and alice's phone gets 488 with the reason in its Warning."""
    a, b = direct.gw_a, direct.gw_b
    n_a, n_b = a.finished_count(), b.finished_count()
    rewritten = direct.mangler.offers_rewritten
    alice_sip = direct.phones["alice"][0]
    with (
        direct.phone(tmp_path, "bob", clips["PCMU-long"]) as bob,
        direct.phone(tmp_path, "alice", clips["PCMU-long"]) as alice,
        capture.RawCapture(alice_sip, alice_sip) as alice_wire,
    ):
        alice.dial(f"sip:mallory@127.0.0.1:{a.port}")  # routed to bob through the tampering PBX
        refused = wait_closed(alice)
        out, inn = a.finished_after(n_a), b.finished_after(n_b)
        bob_saw = event_types(bob)
    assert direct.mangler.offers_rewritten > rewritten
    assert refused.param == "488 Not Acceptable Here", refused
    assert bob_saw == []
    to_alice = sip_final(alice_wire.packets, 488)
    assert "Warning: 399" in to_alice and "bad-signature" in to_alice, to_alice
    assert out["state"] == inn["state"] == "failed", (out, inn)
    assert "bad-signature" in out["reason"] and "bad-signature" in inn["reason"], (out, inn)


def test_dtmf_crosses_both_gateways_sealed_through_rtpengine(
    relayed: Topology, tmp_path: Path, clips: dict[str, Path]
) -> None:
    """alice's RFC 4733 digits reach bob's phone as the same digits, and bob's reach alice; on the PBX side
    (rtpengine's ports) no telephone-event is readable, and no audio decodes."""
    a, b = relayed.gw_a, relayed.gw_b
    n_a, n_b = a.finished_count(), b.finished_count()
    assert relayed.rtpengine is not None
    sent_ab, sent_ba = "159#*2", "27D"  # not *0 or *1: those are the gateway's SAS keys (not relayed)
    with (
        relayed.phone(tmp_path, "bob", clips["PCMU-long"]) as bob,
        relayed.phone(tmp_path, "alice", clips["PCMU-long"]) as alice,
        capture.RawCapture(*relayed.rtpengine.rtp_range) as pbx_side,
    ):
        alice.dial(f"sip:bob@127.0.0.1:{a.port}")
        bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        alice.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        time.sleep(0.6)  # past the security cue: the call is in its steady state
        alice.send_dtmf(sent_ab)
        wait_until(lambda: len(bob.received_dtmf()) >= len(sent_ab), "alice's digits at bob")
        bob.send_dtmf(sent_ba)
        wait_until(lambda: len(alice.received_dtmf()) >= len(sent_ba), "bob's digits at alice")
        got_ab, got_ba = bob.received_dtmf(), alice.received_dtmf()
        alice.hangup()
        wait_closed(alice)
        wait_closed(bob)
    out, inn = a.finished_after(n_a), b.finished_after(n_b)
    assert (got_ab, got_ba) == (sent_ab, sent_ba)
    assert out["dtmf"] == {"to_outside": len(sent_ab), "to_inside": len(sent_ba), "dropped": 0}, out
    assert inn["dtmf"] == {"to_outside": len(sent_ba), "to_inside": len(sent_ab), "dropped": 0}, inn
    assert sum(1 for p in pbx_side.packets if p.rtp() is not None) > 100
    assert capture.plain_dtmf(pbx_side.packets) == ""


def test_a_call_whose_media_dies_is_ended_with_the_reason(
    direct: Topology, tmp_path: Path, clips: dict[str, Path]
) -> None:
    """Never a dead, silent call: gateway B freezes (SIGSTOP) mid-call, so A's outside leg receives nothing;
    A ends the call after its media timeout, telling alice's phone why (BYE Reason); when B thaws it ends
    bob's leg too."""
    a, b = direct.gw_a, direct.gw_b
    n_a, n_b = a.finished_count(), b.finished_count()
    alice_sip = direct.phones["alice"][0]
    with (
        direct.phone(tmp_path, "bob", clips["PCMU-long"]) as bob,
        direct.phone(tmp_path, "alice", clips["PCMU-long"]) as alice,
        capture.RawCapture(alice_sip, alice_sip) as alice_wire,
    ):
        alice.dial(f"sip:bob@127.0.0.1:{a.port}")
        bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        wait_until(lambda: _active(a)["outside_frames_opened"] > 25, "media on the outside leg")
        b.proc.signal(signal.SIGSTOP)
        try:
            wait_closed(alice, timeout=MEDIA_TIMEOUT_S + CALL_TIMEOUT)
        finally:
            b.proc.signal(signal.SIGCONT)
        wait_closed(bob)
        out, inn = a.finished_after(n_a), b.finished_after(n_b)
    reason = f"no media from the outside leg for {MEDIA_TIMEOUT_S:g} s"
    assert out["reason"] == reason, out
    bye = next((p.payload.decode() for p in alice_wire.packets if p.payload.startswith(b"BYE ")), "")
    assert "cause=488" in bye and reason in bye, bye
    assert reason in inn["reason"], inn


def test_cancel_while_the_outside_leg_rings_cancels_it_through_the_pbx(
    direct: Topology, tmp_path: Path, clips: dict[str, Path]
) -> None:
    """alice gives up before the far side answered (gateway B is frozen, so the outside INVITE only rings at the
    PBX): her CANCEL becomes gateway A's CANCEL of the outside leg, and bob's phone never gets a call."""
    a, b = direct.gw_a, direct.gw_b
    n_a = a.finished_count()
    with (
        direct.phone(tmp_path, "bob", clips["PCMU-long"]) as bob,
        direct.phone(tmp_path, "alice", clips["PCMU-long"]) as alice,
    ):
        b.proc.signal(signal.SIGSTOP)
        try:
            alice.dial(f"sip:bob@127.0.0.1:{a.port}")
            alice.wait_event("CALL_RINGING", timeout=CALL_TIMEOUT)
            wait_until(lambda: bool(a.active()), "the outside INVITE")
            alice.hangup()
            closed = wait_closed(alice)
            out = a.finished_after(n_a)
        finally:
            b.proc.signal(signal.SIGCONT)
        wait_until(lambda: not b.active(), "gateway B to settle")
        time.sleep(0.5)  # B has read the INVITE and the CANCEL by now: bob's phone must stay quiet
        bob_saw = event_types(bob)
    assert closed.type == "CALL_CLOSED"
    assert out["state"] == "failed" and out["reason"] == "cancelled by the inside phone", out
    assert out["outside_frames_sealed"] == 0 and out["inside_frames_out"] == 0, out
    assert "CALL_ESTABLISHED" not in bob_saw and "CALL_INCOMING" not in bob_saw, bob_saw
