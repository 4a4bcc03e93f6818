"""The gateway's call-flow decisions, in process and fast: which policy a call gets, the tones it plays, the DTMF
payload type it bridges, and how a hold/resume re-INVITE on one leg is answered and passed to the other."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from voipgw.call import CallRecord
from voipgw.config import Policy
from voipgw.gateway import B2buaSettings, Bridge, Gateway, InsideUser
from voipgw.gateway.tones import NOT_SECURE_CUE, RINGBACK_HZ, SECURE_CUE, tone_frames
from voipgw.leg import ActiveCall
from voipgw.media import MediaStream
from voipgw.negotiate import telephone_event_pt
from voipgw.ops.config import DestinationRule
from voipgw.sdp import PCMU, Codec, build_sdp, opus_codec, parse_sdp, telephone_event_codec

ALICE = InsideUser("alice", "sip:alice@127.0.0.1:5062", "alice@example.org")
BOB = InsideUser("bob", "sip:bob@127.0.0.1:5064", "bob@example.org", policy=Policy.OPPORTUNISTIC)
PCMU_CODEC = Codec(PCMU, 0, 8000)


def _config(**kw: object) -> B2buaSettings:
    return B2buaSettings(home=Path("/nonexistent"), users=(ALICE, BOB), **kw)  # type: ignore[arg-type]


def test_policy_is_the_first_matching_rule_then_the_user_then_the_default() -> None:
    rules = (
        DestinationRule("*@legacy.example.org", Policy.OPPORTUNISTIC, frozenset({"alice"})),
        DestinationRule("boss@*", Policy.REQUIRE),
    )
    cfg = _config(destinations=rules)
    assert cfg.policy_for("alice", "carol@example.org") is Policy.REQUIRE  # the default
    assert cfg.policy_for("alice", "sip:Dave@LEGACY.example.org") is Policy.OPPORTUNISTIC  # case, sip: prefix
    assert cfg.policy_for("bob", "dave@legacy.example.org") is Policy.OPPORTUNISTIC  # rule is alice's: bob's own
    assert cfg.policy_for("bob", "boss@example.org") is Policy.REQUIRE  # a rule beats the user's policy
    assert cfg.policy_for("bob", "carol@example.org") is Policy.OPPORTUNISTIC
    assert _config(policy=Policy.OPPORTUNISTIC).policy_for("alice", "x@y") is Policy.OPPORTUNISTIC


def _dominant_hz(frames: list[np.ndarray]) -> float:
    pcm = np.concatenate(frames).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm))
    return float(np.fft.rfftfreq(len(pcm), 1 / 48000)[int(np.argmax(spectrum))])


def test_the_cues_and_the_ringback_are_the_tones_they_claim() -> None:
    secure = tone_frames(SECURE_CUE)
    assert all(f.shape == (960,) and f.dtype == np.int16 for f in secure)
    assert len(secure) == 20  # 0.4 s: short enough to cost the caller nothing
    assert abs(_dominant_hz(secure[:6]) - 660) < 10 and abs(_dominant_hz(secure[9:15]) - 880) < 10
    assert abs(_dominant_hz(tone_frames(NOT_SECURE_CUE)) - 350) < 10
    ring = tone_frames(((RINGBACK_HZ, 1.0),))
    assert len(ring) == 50 and abs(_dominant_hz(ring) - RINGBACK_HZ) < 5


def test_dtmf_is_bridged_at_the_phones_own_telephone_event_payload_type() -> None:
    offer = parse_sdp(build_sdp("127.0.0.1", 4000, [PCMU_CODEC], telephone_event_pt=98))
    assert telephone_event_pt(offer, PCMU_CODEC) == 98
    assert telephone_event_pt(parse_sdp(build_sdp("127.0.0.1", 4000, [PCMU_CODEC])), PCMU_CODEC) is None
    clash = parse_sdp(build_sdp("127.0.0.1", 4000, [Codec("opus", 98, 48000), telephone_event_codec(98)]))
    assert telephone_event_pt(clash, Codec("opus", 98, 48000)) is None


def test_a_hold_re_invite_is_answered_and_passed_to_the_other_leg_without_a_new_handshake() -> None:
    async def scenario() -> None:
        inside, outside = await MediaStream.bind(), await MediaStream.bind()
        try:
            gw = Gateway(_config(), {"alice": object(), "bob": object()})  # type: ignore[dict-item]
            rec = CallRecord(codec="opus")
            bridge = Bridge(ALICE, "outbound", "bob@example.org", inside_media=inside)
            bridge.inside_payload = PCMU_CODEC
            bridge.outside = ActiveCall(rec, media=outside)  # no SIP dialog: the re-offer to it is skipped

            hold = build_sdp("127.0.0.1", 4000, [PCMU_CODEC], direction="sendonly")
            answer = gw._on_reoffer(bridge, "inside", hold)
            assert answer is not None and parse_sdp(answer).direction == "recvonly"
            assert parse_sdp(answer).port == inside.local[1] and parse_sdp(answer).handshake is None
            assert bridge.inside_hold and not bridge.outside_hold and bridge.holds == 1
            assert "o=voipgw" in answer and f" {bridge.inside_sdp[1]} IN IP4" in answer  # version bumped

            # The far end holds too, on the outside leg: its answer keeps our own side's hold (inactive).
            far_hold = build_sdp("127.0.0.1", 4002, [opus_codec()], direction="sendonly")
            out_answer = gw._on_reoffer(bridge, "outside", far_hold)
            assert out_answer is not None and parse_sdp(out_answer).direction == "inactive"
            assert bridge.outside_hold and bridge.holds == 2

            resume = build_sdp("127.0.0.1", 4000, [PCMU_CODEC])
            again = gw._on_reoffer(bridge, "inside", resume)
            # alice listens again, but the far end still holds: she hears it (sendonly), her audio need not cross.
            assert again is not None and parse_sdp(again).direction == "sendonly"
            assert not bridge.inside_hold and bridge.holds == 3

            # A re-offer that drops the call's codec, or is not SDP at all, gets 488 (None); nothing changes.
            assert gw._on_reoffer(bridge, "inside", build_sdp("127.0.0.1", 4000, [Codec("pcma", 8, 8000)])) is None
            assert gw._on_reoffer(bridge, "outside", "v=0\r\n") is None
            assert bridge.holds == 3
        finally:
            await inside.stop()
            await outside.stop()

    asyncio.run(scenario())
