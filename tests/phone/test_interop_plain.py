"""voipgw against plain peers (baresip, a pjsua2 PJSIP UA), both call directions, as real processes on loopback.

``opportunistic``: the call connects NOT SECURE in a codec both sides have, and audio flows both ways.
``require``: a plain peer calling us gets 488 with our Warning; a plain peer we call is hung up on at once and
never receives one RTP packet from us (a raw capture on loopback is the proof).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from ratchet.inband import is_inband
from tests.support.phones import PhoneProc, start_caller, start_listener
from tests.support.requires import requires
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from tests.testbed.capture import CapturedPacket, RawCapture
from tests.testbed.pjsua2_peer import Pjsua2Peer
from voipgw.audio.compare import AudioMatch, compare_audio
from voipgw.audio.wav import read_wav
from voipgw.config import PhoneConfig
from voipgw.negotiate import WARN_NO_COMMON_CODEC, no_inband_offer

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("baresip", "pjsua2", "sox")]

CLIP_SECONDS = 3.0
OPPORTUNISTIC = ("--policy", "opportunistic")
MIN_G711_CORRELATION = 0.8
PROC_TIMEOUT = 25.0
SNIFFER_SETTLE_S = 0.3


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "speech8k": speech.make_variant(d / "speech8k.wav", 8000, seconds=CLIP_SECONDS),
        "speech8k_long": speech.make_variant(d / "speech8k_long.wav", 8000),
        "speech48k": speech.make_variant(d / "speech48k.wav", 48000, seconds=CLIP_SECONDS),
        # What we send is the speech reversed: a peer that echoed our audio back, or a side that heard itself,
        # would then correlate with the wrong reference.
        "ours48k": _reversed(d / "speech48k.wav", d / "ours48k.wav"),
    }


def _reversed(src: Path, out: Path) -> Path:
    subprocess.run(["sox", str(src), str(out), "reverse"], check=True, capture_output=True, timeout=30)
    return out


def _assert_directions(
    name: str, peer_sent: Path, we_heard: Path, peer_heard: Path, ours: Path, floor: float, summary: dict[str, object]
) -> None:
    """Each side heard what the other sent (windowed correlation >= floor), and not its own signal. ``summary``
    (ours) is shown on failure: its jitter and tick counters tell a starved test machine from a codec fault."""
    ours_heard, theirs_heard = heard(peer_sent, we_heard), heard(ours, peer_heard)
    control = heard(ours, we_heard)
    print(
        f"{name}: we heard the peer {ours_heard.windowed:.3f} (global {ours_heard.correlation:.3f}), "
        f"the peer heard us {theirs_heard.windowed:.3f} (global {theirs_heard.correlation:.3f}), "
        f"our own signal in our recording {control.windowed:.3f}"
    )
    assert ours_heard.windowed >= floor, (ours_heard, summary)
    assert theirs_heard.windowed >= floor, (theirs_heard, summary)
    assert control.windowed < 0.5, control


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


def _opportunistic_listener(workdir: Path, clips: dict[str, Path]) -> PhoneProc:
    """Our phone as bob under the opportunistic policy, sending the reversed speech (wire not tapped)."""
    return start_listener(workdir, "bob", *OPPORTUNISTIC, "--play", str(clips["ours48k"]), tap=False)


def _opportunistic_caller(workdir: Path, uri: str, clips: dict[str, Path]) -> PhoneProc:
    """Our phone as alice calling ``uri`` under the opportunistic policy, sending the reversed speech."""
    return start_caller(workdir, "alice", uri, *OPPORTUNISTIC, "--play", str(clips["ours48k"]), tap=False)


NO_OPUS = no_inband_offer(PhoneConfig(aor="x@y").inband_wait_s, opus=False)
NO_INBAND_OFFER = no_inband_offer(PhoneConfig(aor="x@y").inband_wait_s)


def _refusing_listener(workdir: Path, *extra: str) -> PhoneProc:
    """``listen --once`` for a call it will refuse: it must still deliver its 488 before exiting (commit 1045cf0
    made the SIP shutdown wait for it; before that one 488 in four was lost)."""
    return start_listener(workdir, "bob", *extra, tap=False, record=False)


def _sip_received(cap: RawCapture, port: int, first_line: bytes) -> list[bytes]:
    """SIP messages captured towards ``port``, once one starting with ``first_line`` is among them (bounded wait:
    the peer can report an event before the sniffer thread has read the frame that caused it)."""
    deadline = time.monotonic() + 3.0
    while True:
        msgs = [p.payload for p in cap.packets if p.dst_port == port]
        if any(m.startswith(first_line) for m in msgs) or time.monotonic() > deadline:
            return msgs
        time.sleep(0.02)


def _assert_not_secure(p: PhoneProc, codec: str) -> dict[str, object]:
    s = _ours(p)
    assert s["state"] == "ended", p.log()
    assert s["security"] == "NOT SECURE"
    assert s["codec"] == codec
    assert s["sas"] is None and s["safety_number"] is None
    assert "| NOT SECURE |" in p.log()  # the live status line
    assert "security: NOT SECURE" in p.log()  # the printed summary
    # Only what the peer sent while we waited for an in-band key exchange that never came (bounded, never played):
    assert set(s["refused_by_reason"]) <= {"not-started"}, s["refused_by_reason"]
    return s


def _our_rtp_port(packets: list[CapturedPacket], peer_sip_port: int) -> int:
    """The RTP port our INVITE's SDP announced, read off the wire."""
    invites = [p.payload for p in packets if p.dst_port == peer_sip_port and p.payload.startswith(b"INVITE ")]
    assert invites, "no INVITE captured"
    m = re.search(rb"\r\nm=audio (\d+) ", invites[0])
    assert m is not None, invites[0]
    return int(m.group(1))


def _rtp_from_us(packets: list[CapturedPacket], peer_sip_port: int) -> list[bytes]:
    """The RTP payloads our RTP port sent, read off the wire."""
    port = _our_rtp_port(packets, peer_sip_port)
    return [rtp.payload for p in packets if p.src_port == port and (rtp := p.rtp()) is not None]


def _no_rtp_from_us(packets: list[CapturedPacket], peer_sip_port: int, peer_rtp: tuple[int, int]) -> int:
    """Asserts the capture holds no RTP from our RTP port, and none into the peer's RTP range from outside it;
    returns how many RTP packets the peer sent (the sniffer's positive control, when there are any)."""
    port = _our_rtp_port(packets, peer_sip_port)
    lo, hi = peer_rtp
    assert [p for p in packets if p.src_port == port and p.rtp() is not None] == []
    assert [p for p in packets if lo <= p.dst_port <= hi and not lo <= p.src_port <= hi and p.rtp()] == []
    return len([p for p in packets if lo <= p.src_port <= hi and p.rtp() is not None])


# --- opportunistic ------------------------------------------------------------------------------------------


def test_opportunistic_pjsua2_calls_us_in_pcmu(tmp_path: Path, clips: dict[str, Path]) -> None:
    recording = tmp_path / "pj-heard.wav"
    ours = _opportunistic_listener(tmp_path, clips)
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
    _assert_directions(
        "pjsua2->us pcmu", clips["speech8k"], ours.wav, recording, clips["ours48k"], MIN_G711_CORRELATION, s
    )


def test_opportunistic_we_call_pjsua2_in_pcmu(tmp_path: Path, clips: dict[str, Path]) -> None:
    recording = tmp_path / "pj-heard.wav"
    with Pjsua2Peer(tmp_path, user="pj", play=clips["speech8k_long"], record=recording) as pj:
        ours = _opportunistic_caller(tmp_path, pj.contact_uri, clips)
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
    _assert_directions(
        "us->pjsua2 pcmu", clips["speech8k_long"], ours.wav, recording, clips["ours48k"], MIN_G711_CORRELATION, s
    )


def test_opportunistic_baresip_calls_us_in_pcma(tmp_path: Path, clips: dict[str, Path]) -> None:
    ours = _opportunistic_listener(tmp_path, clips)
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
    _assert_directions(
        "baresip->us pcma", clips["speech8k"], ours.wav, bare_rec, clips["ours48k"], MIN_G711_CORRELATION, s
    )


def test_opportunistic_we_call_baresip_in_opus(tmp_path: Path, clips: dict[str, Path]) -> None:
    with Baresip(
        tmp_path,
        user="bob",
        play=speech.make_variant(tmp_path / "b48.wav", 48000),
        codecs=("opus", "PCMU"),
        srate=48000,
    ) as bob:
        ours = _opportunistic_caller(tmp_path, bob.contact_uri, clips)
        try:
            bob.wait_event("CALL_ESTABLISHED")
            bob.wait_event("CALL_CLOSED", timeout=PROC_TIMEOUT)  # our BYE once our file ended
            bare_rec = bob.received_wav()
            assert bob.audio_codec().startswith("opus"), bob.audio_codec()
            s = _assert_not_secure(ours, "opus")
        finally:
            ours.stop()
    assert s["frames_sent"] >= 140 and s["frames_opened"] >= 140
    _assert_directions("us->baresip opus", tmp_path / "b48.wav", ours.wav, bare_rec, clips["ours48k"], 0.9, s)


# --- require ------------------------------------------------------------------------------------------------


def test_require_refuses_pjsua2_with_488_and_our_warning(tmp_path: Path, clips: dict[str, Path]) -> None:
    ours = _refusing_listener(tmp_path, "--play", str(clips["speech48k"]))
    try:
        with Pjsua2Peer(tmp_path, user="pj") as pj:
            pj.call(f"sip:bob@127.0.0.1:{ours.sip_port}")
            gone = pj.wait_event("disconnected", timeout=10.0)
        s = _ours(ours)
    finally:
        ours.stop()
    assert gone["code"] == 488 and gone["status_line"] == "SIP/2.0 488 Not Acceptable Here"
    # pjsua2 offers no Opus: nothing could come in the media path, so the refusal is at once and says why.
    assert NO_OPUS in gone["warning"]
    assert s["state"] == "failed" and s["security"] == "refused"
    assert NO_OPUS in str(s["reason"]) and str(s["reason"]).startswith("488")
    assert s["frames_sent"] == 0 and s["codec"] is None


def test_require_refuses_baresip_with_488_and_our_warning(tmp_path: Path, clips: dict[str, Path]) -> None:
    """baresip 1.0 reports only the status line ("488 Not Acceptable Here") in its CALL_CLOSED event and log, so
    the Warning it received is read from a raw capture of the SIP response on its port."""
    ours = _refusing_listener(tmp_path, "--play", str(clips["speech48k"]))
    try:
        with (
            Baresip(tmp_path, user="alice", play=clips["speech8k"], codecs=("opus", "PCMU")) as alice,
            RawCapture(alice.sip_port, alice.sip_port) as cap,
        ):
            alice.dial(f"sip:bob@127.0.0.1:{ours.sip_port}")
            closed = alice.wait_event("CALL_CLOSED", timeout=10.0)
            sip_in = _sip_received(cap, alice.sip_port, b"SIP/2.0 488 ")
        s = _ours(ours)
    finally:
        ours.stop()
    assert closed.param == "488 Not Acceptable Here", closed
    refusals = [m.decode(errors="replace") for m in sip_in if m.startswith(b"SIP/2.0 488 ")]
    assert len(refusals) >= 1, sip_in
    warning = next(ln for ln in refusals[0].split("\r\n") if ln.lower().startswith("warning:"))
    # baresip offers Opus: bob answered the SDP (183), waited the bounded time for an in-band offer, then refused.
    assert NO_INBAND_OFFER in warning, warning
    assert s["state"] == "failed" and s["security"] == "refused"
    assert NO_INBAND_OFFER in str(s["reason"])
    assert s["frames_sent"] == 0 and s["frames_played"] == 0


def test_require_we_call_baresip_hang_up_after_the_bounded_wait_and_send_no_audio(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    with (
        Baresip(tmp_path, user="bob", play=clips["speech8k_long"], codecs=("opus", "PCMU")) as bob,
        RawCapture(1024, 65535) as cap,
    ):
        ours = start_caller(tmp_path, "alice", bob.contact_uri, "--play", str(clips["speech48k"]), tap=False)
        try:
            bob.wait_event("CALL_ESTABLISHED")  # baresip has Opus: it answers our (plain-to-it) offer
            closed = bob.wait_event("CALL_CLOSED", timeout=10.0)
            s = _ours(ours)
        finally:
            ours.stop()
        time.sleep(SNIFFER_SETTLE_S)  # our process has exited: let the sniffer read what is still queued
        packets, sip_port = cap.packets, bob.sip_port
    assert s["state"] == "failed" and s["security"] == "refused"
    assert "no key exchange: the answer had no a=voipgw and none came in the media path" in str(s["reason"])
    assert s["frames_sent"] == 0 and s["frames_played"] == 0
    assert closed.param == "Connection reset by peer"  # baresip's wording for a BYE received
    # What we sent baresip was our offer in the media path (which its Opus decoder refuses), never audio:
    ours_rtp = _rtp_from_us(packets, sip_port)
    assert 1 <= len(ours_rtp) <= 20 and all(is_inband(payload) for payload in ours_rtp), len(ours_rtp)
    print(f"require us->baresip: {len(ours_rtp)} in-band packets from us, no audio")


def test_require_we_call_pjsua2_which_cannot_answer_opus_only(tmp_path: Path, clips: dict[str, Path]) -> None:
    """A secure offer is Opus only and this pjsua2 build has no Opus: it refuses with 488 before answering, so
    the call ends with no media at all (there is nothing to hang up on)."""
    with Pjsua2Peer(tmp_path, user="pj") as pj, RawCapture(1024, 65535) as cap:
        ours = start_caller(tmp_path, "alice", pj.contact_uri, "--play", str(clips["speech48k"]), tap=False)
        try:
            s = _ours(ours)
        finally:
            ours.stop()
        time.sleep(SNIFFER_SETTLE_S)  # our process has exited: let the sniffer read what is still queued
        packets, sip_port, rtp_range = cap.packets, pj.sip_port, pj.rtp_range
    assert s["state"] == "failed" and s["security"] == "refused"
    assert str(s["reason"]).startswith("488 Not Acceptable Here"), s["reason"]
    assert s["frames_sent"] == 0 and s["codec"] is None
    _no_rtp_from_us(packets, sip_port, rtp_range)


def test_opportunistic_refuses_a_plain_offer_without_a_common_codec(tmp_path: Path, clips: dict[str, Path]) -> None:
    ours = _refusing_listener(tmp_path, *OPPORTUNISTIC, "--play", str(clips["ours48k"]))
    try:
        g722 = speech.make_variant(tmp_path / "g722.wav", 16000, seconds=CLIP_SECONDS)
        with Baresip(tmp_path, user="alice", play=g722, codecs=("G722",), srate=16000) as alice:
            alice.dial(f"sip:bob@127.0.0.1:{ours.sip_port}")
            closed = alice.wait_event("CALL_CLOSED", timeout=10.0)
        s = _ours(ours)
    finally:
        ours.stop()
    assert closed.param == "488 Not Acceptable Here", closed
    assert s["state"] == "failed" and s["security"] == "refused"
    assert WARN_NO_COMMON_CODEC in str(s["reason"])
    assert s["frames_sent"] == 0


def test_two_opportunistic_voipgw_phones_still_agree_on_a_secure_opus_call(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    """Offering G.711 for plain peers must not change a call between two voipgw phones: secure, Opus."""
    bob = start_listener(tmp_path, "bob", *OPPORTUNISTIC, "--play", str(clips["speech48k"]), tap=False)
    alice = start_caller(
        tmp_path,
        "alice",
        f"sip:bob@127.0.0.1:{bob.sip_port}",
        *OPPORTUNISTIC,
        "--play",
        str(clips["ours48k"]),
        tap=False,
    )
    try:
        a, b = _ours(alice), _ours(bob)
    finally:
        alice.stop()
        bob.stop()
    for s in (a, b):
        assert s["state"] == "ended" and s["security"] == "secure, unverified" and s["codec"] == "opus"
    assert a["sas"] is not None and a["sas"] == b["sas"]
    assert heard(clips["ours48k"], bob.wav).windowed >= 0.9
    assert heard(clips["speech48k"], alice.wav).windowed >= 0.9
