"""SDES-SRTP on the gateway's inside leg with an unmodified phone (baresip's srtp module, ``mediaenc=srtp-mand``)
over SIP/TLS, ``inside.srtp = "required"``: an outside voipgw caller reaches the inside phone, audio crosses both
ways, a capture of the inside leg decodes to nothing (neither party's speech is in it), and packets forged or
replayed from the phone's own (spoofed) address are dropped and counted; a phone without SRTP is refused 488."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.support.phones import start_caller
from tests.support.pki import make_pki
from tests.support.requires import requires
from tests.support.rtp_spray import send_spoofed
from tests.support.srtp_gateway import start_srtp_gateway
from tests.testbed import capture, speech
from tests.testbed.baresip import Baresip
from tests.testbed.ports import reserve_block
from voipgw.audio.compare import AudioMatch, compare_audio
from voipgw.audio.wav import read_wav
from voipgw.rtp.packet import build_rtp

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("baresip", "sox", "tshark")]

MIN_CORRELATION = 0.9
MAX_EAVESDROP_CORRELATION = 0.3
"""Plain PCMU on the inside leg scores > 0.99 against the speech (test_topology's control); SRTP scores like noise."""
CALL_SECONDS = 5.0
PROC_TIMEOUT = 40.0


FORGED = 50
REPLAYED = 5


def forge_and_replay(phone_rtp: tuple[int, int]) -> None:
    """An attacker on the phone's network: it copies one of the phone's SRTP packets, then sends it again and sends
    forged ones, all from the phone's own address and port (spoofed), at the gateway's inside port."""
    lo, hi = phone_rtp
    with capture.RawCapture(lo, hi) as cap:
        deadline = time.monotonic() + 5.0
        while not any(lo <= p.src_port <= hi and p.rtp() is not None for p in cap.packets):
            assert time.monotonic() < deadline, "no SRTP from the phone"
            time.sleep(0.05)
    seen = next(p for p in cap.packets if lo <= p.src_port <= hi and p.rtp() is not None)
    src, dst = ("127.0.0.1", seen.src_port), ("127.0.0.1", seen.dst_port)
    for _ in range(REPLAYED):
        send_spoofed(src, dst, seen.payload)
    rtp = seen.rtp()
    assert rtp is not None
    for i in range(FORGED):  # ahead of the phone's sequence, so that only the tag can refuse them
        body = build_rtp(rtp.payload_type, (rtp.seq + 500 + i) & 0xFFFF, rtp.timestamp, rtp.ssrc, os.urandom(170))
        send_spoofed(src, dst, body)


def _heard(sent: Path, recording: Path) -> AudioMatch:
    ref, rec = read_wav(sent), read_wav(recording)
    return compare_audio(ref[: len(rec)], rec)


@pytest.mark.parametrize(
    ("mode", "mediaenc"),
    [("required", "srtp-mand"), ("optional", "srtp")],
    ids=["required-RTP/SAVP", "optional-RTP/AVP+crypto"],
)
def test_srtp_inside_leg_over_tls_carries_audio_and_its_capture_decodes_to_nothing(
    tmp_path: Path, mode: str, mediaenc: str
) -> None:
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    phone_cert, phone_key = pki.phone
    gw_cert, gw_key = pki.kamailio  # a certificate for 127.0.0.1 signed by the test CA
    phone_pem = tmp_path / "alice.pem"
    phone_pem.write_bytes(phone_cert.read_bytes() + phone_key.read_bytes())
    carol48 = speech.make_variant(tmp_path / "carol48.wav", 48000, seconds=CALL_SECONDS)
    carol8 = speech.make_variant(tmp_path / "carol8.wav", 8000, seconds=CALL_SECONDS)
    alice8 = speech.make_variant(tmp_path / "alice8.wav", 8000)
    tls_config = (
        f"module                  srtp.so\nsip_certificate         {phone_pem}\nsip_cafile              {pki.ca}\n"
    )
    block = reserve_block(2)
    try:
        with Baresip(
            tmp_path,
            user="alice",
            play=alice8,
            codecs=("PCMU",),
            extra_config=tls_config,
            extra_account_params=f";mediaenc={mediaenc}",
        ) as alice:
            contact = f"sip:alice@127.0.0.1:{alice.sip_port + 1};transport=tls"
            gw, snap = start_srtp_gateway(
                tmp_path,
                "gw",
                block,
                port=block[0],
                users=[{"name": "alice", "contact": contact, "outside_aor": "alice@127.0.0.1"}],
                inside_srtp=mode,
                tls={"ca": pki.ca, "cert": gw_cert, "key": gw_key, "port": block[1]},
                media_timeout_s=10.0,
            )
            try:
                with capture.Capture(tmp_path, *alice.rtp_range, backend="tshark") as cap:
                    carol = start_caller(
                        tmp_path, "carol", f"sip:alice@127.0.0.1:{gw.sip_port}", "--play", str(carol48), tap=False
                    )
                    alice.wait_event("CALL_ESTABLISHED", timeout=20.0)
                    forge_and_replay(alice.rtp_range)
                    assert carol.wait(PROC_TIMEOUT) == 0, carol.log()
                    alice.wait_event("CALL_CLOSED", timeout=20.0)
                to_alice = _heard(carol8, alice.received_wav())
            finally:
                gw.stop()
            snapshot = json.loads(snap.read_text())
    finally:
        block.release()
    summary = carol.summary()
    (call,) = snapshot["finished"]
    assert "no TLS certificate" not in gw.log(), gw.log()[-2000:]
    assert "inline:" not in gw.log() and "a=crypto" not in gw.log()  # no SDES key is ever logged
    assert call["inside_srtp"] is True, call
    assert call["security"] == "secure, unverified" and summary["security"] == "secure, unverified", (call, summary)
    alice48 = speech.make_variant(tmp_path / "alice48.wav", 48000)  # carol records at 48 kHz
    to_carol_match = _heard(alice48, carol.wav)
    packets = cap.packets
    rtp = [p for p in packets if p.rtp() is not None]
    verdicts = [capture.looks_like_plain_audio(packets, sent, "PCMU") for sent in (carol8, alice8)]
    print(
        f"SRTP inside leg ({mode}): to alice {to_alice.windowed:.3f}, to carol {to_carol_match.windowed:.3f}; captured "
        f"{len(rtp)} RTP packets; decoded as PCMU vs carol {verdicts[0].correlation:.3f}, vs alice "
        f"{verdicts[1].correlation:.3f}; inside dropped {call['inside_dropped']}"
    )
    dropped = call["inside_dropped"]
    assert dropped.get("srtp-replay", 0) >= REPLAYED and dropped.get("srtp-auth", 0) >= FORGED, dropped
    assert to_alice.windowed >= MIN_CORRELATION, to_alice
    assert to_carol_match.windowed >= MIN_CORRELATION, to_carol_match
    assert len(rtp) > 100, len(rtp)
    for verdict in verdicts:
        assert verdict.streams, "no RTP stream on the inside leg"
        assert verdict.correlation < MAX_EAVESDROP_CORRELATION, verdict


def test_hold_and_resume_from_an_srtp_phone_keep_the_leg_srtp(tmp_path: Path) -> None:
    """The phone's hold and resume re-INVITEs (over TLS) are answered with our a=crypto line and RTP/SAVP: the leg
    stays SRTP with the same keys (no packet fails authentication), and media flows again after the resume."""
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    phone_cert, phone_key = pki.phone
    gw_cert, gw_key = pki.kamailio
    phone_pem = tmp_path / "alice.pem"
    phone_pem.write_bytes(phone_cert.read_bytes() + phone_key.read_bytes())
    carol48 = speech.make_variant(tmp_path / "carol48.wav", 48000, seconds=8.0)
    alice8 = speech.make_variant(tmp_path / "alice8.wav", 8000)
    block = reserve_block(2)
    try:
        with Baresip(
            tmp_path,
            user="alice",
            play=alice8,
            codecs=("PCMU",),
            extra_config=f"module                  srtp.so\nsip_certificate         {phone_pem}\n"
            f"sip_cafile              {pki.ca}\n",
            extra_account_params=";mediaenc=srtp-mand",
        ) as alice:
            gw, snap = start_srtp_gateway(
                tmp_path,
                "gw",
                block,
                port=block[0],
                users=[
                    {
                        "name": "alice",
                        "contact": f"sip:alice@127.0.0.1:{alice.sip_port + 1};transport=tls",
                        "outside_aor": "alice@127.0.0.1",
                    }
                ],
                inside_srtp="required",
                tls={"ca": pki.ca, "cert": gw_cert, "key": gw_key, "port": block[1]},
                media_timeout_s=10.0,
            )
            try:
                carol = start_caller(
                    tmp_path, "carol", f"sip:alice@127.0.0.1:{gw.sip_port}", "--play", str(carol48), tap=False
                )
                alice.wait_event("CALL_ESTABLISHED", timeout=20.0)
                time.sleep(1.0)
                alice.hold()
                time.sleep(1.0)
                alice.resume()
                time.sleep(1.0)
                lo, hi = alice.rtp_range
                with capture.RawCapture(lo, hi) as after:
                    time.sleep(1.0)
                assert carol.wait(PROC_TIMEOUT) == 0, carol.log()
                closed = alice.wait_event("CALL_CLOSED", timeout=20.0)
            finally:
                gw.stop()
            snapshot = json.loads(snap.read_text())
    finally:
        block.release()
    (call,) = snapshot["finished"]
    assert call["hold"]["reinvites"] == 2, call
    assert call["inside_srtp"] is True and "srtp-auth" not in call["inside_dropped"], call
    assert "srtp" not in call["reason"].lower() and closed.param == "end of file", (call["reason"], closed)
    # After the resume the phone sends SRTP to the gateway again, and the gateway to the phone.
    assert sum(1 for p in after.packets if lo <= p.src_port <= hi) > 20, len(after.packets)
    assert sum(1 for p in after.packets if lo <= p.dst_port <= hi) > 20, len(after.packets)


def test_under_required_a_phone_without_srtp_or_without_tls_is_refused_488_with_the_reason(tmp_path: Path) -> None:
    """dave offers plain RTP; erin offers SDES-SRTP, but over UDP (its key crossed the network in the clear)."""
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    gw_cert, gw_key = pki.kamailio
    clip = speech.make_variant(tmp_path / "clip8.wav", 8000, seconds=2.0)
    block = reserve_block(2)
    try:
        with (
            Baresip(tmp_path, user="dave", play=clip, codecs=("PCMU",)) as dave,
            Baresip(
                tmp_path,
                user="erin",
                play=clip,
                codecs=("PCMU",),
                extra_config="module                  srtp.so\n",
                extra_account_params=";mediaenc=srtp-mand",
            ) as erin,
        ):
            gw, snap = start_srtp_gateway(
                tmp_path,
                "gw",
                block,
                port=block[0],
                users=[
                    {"name": p.user, "contact": p.contact_uri, "outside_aor": f"{p.user}@127.0.0.1"}
                    for p in (dave, erin)
                ],
                routes={"bob": "sip:bob@127.0.0.1:9"},  # never reached: the offer is refused first
                inside_srtp="required",
                tls={"ca": pki.ca, "cert": gw_cert, "key": gw_key, "port": block[1]},
            )
            try:
                with capture.RawCapture(block[0], block[0]) as sip:
                    closed = []
                    for phone in (dave, erin):
                        phone.dial(f"sip:bob@127.0.0.1:{gw.sip_port}")
                        closed.append(phone.wait_event("CALL_CLOSED", timeout=10.0))
            finally:
                gw.stop()
            snapshot = json.loads(snap.read_text())
    finally:
        block.release()
    assert [c.param for c in closed] == ["488 Not Acceptable Here"] * 2, closed
    responses = [p.payload.decode() for p in sip.packets if p.payload.startswith(b"SIP/2.0 488 ")]
    assert any("inside.srtp = required: the phone's offer has no a=crypto line\"" in r for r in responses), responses
    assert any("the phone must use SIP over TLS" in r for r in responses), responses
    assert len(snapshot["finished"]) == 2 and snapshot["refused_invites"] == {"488": 2}, snapshot
    for call in snapshot["finished"]:
        assert call["state"] == "failed" and call["reason"].startswith("488 ") and call["inside_frames_out"] == 0
