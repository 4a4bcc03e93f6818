"""Kamailio as a PBX that rewrites what voipgw relies on (tests/testbed/kamailio.py ``strip_voipgw``, ``topoh``,
``transcode``), proven with a raw SIP call: the callee gets another Call-ID, no ``a=voipgw`` either way (also in a
hold re-INVITE), and the media through rtpengine with every payload untouched; in transcode mode the callee is
offered no Opus at all. The default configuration is unchanged (no sdpops/topoh/textopsx loaded)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.support.raw_sip import (
    RawSipUa,
    hang_up,
    opus_sdp,
    pcmu_sdp,
    reinvite,
    sdp_codecs,
    sdp_media_addr,
    setup_call,
)
from tests.support.requires import requires
from tests.testbed.kamailio import Kamailio
from tests.testbed.rtpengine import Rtpengine

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "rtpengine")]

OFFER_EXTRA = "a=voipgw:" + "T0ZGRVI" * 150 + "\r\na=ptime:20\r\n"
ANSWER_EXTRA = "a=voipgw:" + "QU5TV0VS" * 100 + "\r\na=ptime:20\r\n"
PACKETS = 40


def test_default_config_loads_none_of_the_rewriting_modules(tmp_path: Path) -> None:
    with Rtpengine(tmp_path) as relay, Kamailio(tmp_path, rtpengine_ng=relay.ng_socket) as pbx:
        text = pbx.config_text()
    for module in ("sdpops", "topoh", "textopsx"):
        assert module not in text
    assert 'rtpengine_manage("replace-origin replace-session-connection");' in text
    assert "codec-mask" not in text


def test_strip_topoh_rtpengine_masks_the_call_id_strips_the_attribute_and_relays_payloads_untouched(
    tmp_path: Path,
) -> None:
    with (
        Rtpengine(tmp_path) as relay,
        Kamailio(tmp_path, rtpengine_ng=relay.ng_socket, strip_voipgw=True, topoh=True) as pbx,
        RawSipUa("alice") as alice,
        RawSipUa("bob") as bob,
    ):
        offer = opus_sdp(alice.rtp_port, OFFER_EXTRA)
        answer = opus_sdp(bob.rtp_port, ANSWER_EXTRA, session=77)
        call = setup_call(alice, bob, pbx.addr, f"sip:bob@127.0.0.1:{bob.sip_port}", offer, answer)
        invite = call.callee_invite

        # topoh: the callee's leg has another Call-ID; the caller gets its own back.
        assert invite.call_id != call.caller_call_id
        assert call.caller_call_id.split("@")[0] not in invite.raw
        assert call.caller_ok.call_id == call.caller_call_id
        # sdpops: no a=voipgw either way; the rest of the SDP (Opus, ptime) is still there.
        for body in (invite.body, call.caller_ok.body):
            assert "a=voipgw" not in body
            assert "a=ptime:20" in body
            assert sdp_codecs(body)[0] == "opus"
        # rtpengine: each end is told to send to a relay port, never to the other end.
        lo, hi = relay.rtp_range
        to_bob = sdp_media_addr(call.caller_ok.body)
        to_alice = sdp_media_addr(invite.body)
        assert lo <= to_bob[1] <= hi and lo <= to_alice[1] <= hi

        payloads_a = [b"\xfc" + secrets.token_bytes(60) for _ in range(PACKETS)]
        payloads_b = [b"\xfc" + secrets.token_bytes(60) for _ in range(PACKETS)]
        alice.send_rtp(to_bob, payloads_a, pt=96, ssrc=0xA11CE)
        got_b = bob.recv_rtp(PACKETS)
        bob.send_rtp(to_alice, payloads_b, pt=96, ssrc=0xB0B)
        got_a = alice.recv_rtp(PACKETS)
        # A hold re-INVITE is stripped both ways too, and rides the callee's masked Call-ID.
        hold = opus_sdp(alice.rtp_port, OFFER_EXTRA + "a=sendonly\r\n", session=4243)
        held = opus_sdp(bob.rtp_port, ANSWER_EXTRA + "a=recvonly\r\n", session=78)
        re_invite, re_ok = reinvite(call, alice, bob, pbx.addr, hold, held)
        bye = hang_up(call, alice, bob, pbx.addr, cseq_step=2)

    assert bye.call_id == re_invite.call_id == invite.call_id
    assert "a=voipgw" not in re_invite.body and "a=sendonly" in re_invite.body
    assert "a=voipgw" not in re_ok.body and "a=recvonly" in re_ok.body
    # Every payload crossed the relay untouched (same payload type and SSRC: no transcoding engine involved).
    assert [p for _, _, p in got_b] == payloads_a[: len(got_b)] and len(got_b) >= PACKETS - 2
    assert [p for _, _, p in got_a] == payloads_b[: len(got_a)] and len(got_a) >= PACKETS - 2
    assert {(pt, ssrc) for pt, ssrc, _ in got_b} == {(96, 0xA11CE)}


def test_transcode_offers_the_callee_no_opus_and_transcodes_its_audio(tmp_path: Path) -> None:
    with (
        Rtpengine(tmp_path) as relay,
        Kamailio(tmp_path, rtpengine_ng=relay.ng_socket, strip_voipgw=True, transcode=True) as pbx,
        RawSipUa("alice") as alice,
        RawSipUa("bob") as bob,
    ):
        offer = opus_sdp(alice.rtp_port, OFFER_EXTRA)
        call = setup_call(alice, bob, pbx.addr, f"sip:bob@127.0.0.1:{bob.sip_port}", offer, pcmu_sdp(bob.rtp_port))
        invite = call.callee_invite
        assert "opus" not in invite.body.lower()
        assert sdp_codecs(invite.body) == ["pcmu"]
        assert "a=voipgw" not in invite.body
        # The caller still sees Opus answered: rtpengine transcodes between the legs.
        assert sdp_codecs(call.caller_ok.body)[0] == "opus"

        # 20 ms of PCMU silence-ish frames from bob come out at alice as Opus (another payload type, other bytes).
        pcmu = [bytes([0xFF]) * 160 for _ in range(PACKETS)]
        bob.send_rtp(sdp_media_addr(invite.body), pcmu, pt=0, ssrc=0xB0B)
        got_a = alice.recv_rtp(PACKETS // 2)
        hang_up(call, alice, bob, pbx.addr)

    assert got_a, "no audio reached the caller through the transcoder"
    assert {pt for pt, _, _ in got_a} == {96}
    assert all(p != pcmu[0] for _, _, p in got_a)
