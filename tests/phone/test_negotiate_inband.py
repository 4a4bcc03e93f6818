"""voipgw.negotiate's decisions for the key exchange in the media path (docs/PROTOCOL.md §C.6, §C.7), as tables:
when each side turns to it, what it checks (everything but the Call-ID and the SIP From), and what a missing
exchange means under each policy."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ratchet.handshake import NonceCache, Offerer, answer_offer
from ratchet.identity import IdentityKey
from voipgw.config import PhoneConfig, Policy
from voipgw.inband_flow import plain_peer
from voipgw.media import MediaStats
from voipgw.negotiate import (
    INBAND_EARLY,
    REJECT_PINNED_CONTACT,
    WARN_PINNED_CONTACT,
    Accepted,
    Answer,
    AwaitInband,
    InbandNeeded,
    Refusal,
    Rejected,
    decide_answer,
    decide_inband_answer,
    decide_inband_offer,
    decide_offer,
    final_matches_early,
    inband_answer_missing,
    inband_early,
    inband_offer_missing,
)
from voipgw.sdp import Codec, build_sdp, opus_codec, parse_sdp

NOW = 1_800_000_000.0
ALICE, BOB, MALLORY = "alice@example.org", "bob@example.org", "mallory@example.org"
CALL_ID = "c1@example.org"
PCMU = Codec("pcmu", 0, 8000)
KEYS = {ALICE: IdentityKey.generate(), BOB: IdentityKey.generate(), MALLORY: IdentityKey.generate()}
CALLEE = PhoneConfig(aor=BOB)
CALLEE_OPP = PhoneConfig(aor=BOB, policy=Policy.OPPORTUNISTIC)
CALLER = PhoneConfig(aor=ALICE)
CALLER_OPP = PhoneConfig(aor=ALICE, policy=Policy.OPPORTUNISTIC)
PLAIN_OPUS = build_sdp("192.0.2.1", 4000, [opus_codec(), PCMU], telephone_event_pt=101)
PLAIN_PCMU = build_sdp("192.0.2.1", 4000, [PCMU], telephone_event_pt=101)


def _offerer(frm: str = ALICE, to: str = BOB, call_id: str = CALL_ID) -> Offerer:
    return Offerer(KEYS[frm], frm, to, call_id, PhoneConfig(aor=frm).offer_handshake, NOW)


def _offer(sdp: str, config: PhoneConfig = CALLEE, pinned: bool = False) -> object:
    return decide_offer(sdp, config, KEYS[BOB], BOB, ALICE, CALL_ID, NonceCache(max_skew_s=60), NOW, pinned)


def _waiting() -> AwaitInband:
    decision = _offer(PLAIN_OPUS)
    assert isinstance(decision, AwaitInband)
    return decision


# --- the callee -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [CALLEE, CALLEE_OPP], ids=["require", "opportunistic"])
def test_an_opus_offer_without_the_attribute_waits_for_the_media_path(config: PhoneConfig) -> None:
    decision = _offer(PLAIN_OPUS, config)
    assert isinstance(decision, AwaitInband)
    assert decision.codec.name == "opus" and decision.telephone_event_pt == 101
    assert decision.remote.rtp_address == ("192.0.2.1", 4000)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (CALLEE, "voipgw: no key exchange: the offer had no a=voipgw and no opus"),  # strips and transcodes
        (replace(CALLEE, inband=False), "voipgw: end-to-end encryption is required here"),  # the SDP-only refusal
    ],
    ids=["inband", "sdp-only"],
)
def test_without_opus_there_is_nothing_to_wait_for_under_require(config: PhoneConfig, expected: str) -> None:
    decision = _offer(PLAIN_PCMU, config)
    assert isinstance(decision, Refusal) and decision.code == 488
    assert decision.warning.startswith(expected), decision.warning


def test_without_opus_opportunistic_answers_in_the_clear() -> None:
    decision = _offer(PLAIN_PCMU, CALLEE_OPP)
    assert isinstance(decision, Answer) and decision.keys is None and decision.codec.name == "pcmu"


def test_e2e_off_never_waits() -> None:
    decision = _offer(PLAIN_OPUS, replace(CALLEE_OPP, e2e=False))
    assert isinstance(decision, Answer) and decision.keys is None


def test_an_in_band_offer_is_answered_without_binding_the_call_id_or_the_from() -> None:
    # The B2BUA gave this leg its own Call-ID: the offer, signed for the caller's leg, is still answered.
    offerer = _offerer(call_id="the-callers-leg@pbx")
    result = decide_inband_offer(
        offerer.offer_bytes, _waiting(), CALLEE, KEYS[BOB], BOB, NonceCache(max_skew_s=60), NOW
    )
    assert not isinstance(result, Refusal)
    answer, answer_bytes = result
    assert answer.keys is not None and answer.keys.remote_aor == ALICE and answer.answer_attribute is None
    keys = offerer.accept_answer(answer_bytes, NOW)
    assert keys.transcript_hash == answer.keys.transcript_hash and keys.remote_identity == answer.keys.local_identity


@pytest.mark.parametrize(
    ("offer_for", "reason"),
    [
        ("carol@example.org", "voipgw: key exchange refused: "),  # signed for another callee
    ],
)
def test_an_in_band_offer_for_someone_else_is_refused(offer_for: str, reason: str) -> None:
    offerer = _offerer(to=offer_for)
    result = decide_inband_offer(
        offerer.offer_bytes, _waiting(), CALLEE, KEYS[BOB], BOB, NonceCache(max_skew_s=60), NOW
    )
    assert isinstance(result, Refusal) and result.warning.startswith(reason)


def test_a_replayed_in_band_offer_is_refused() -> None:
    offerer, cache = _offerer(), NonceCache(max_skew_s=60)
    first = decide_inband_offer(offerer.offer_bytes, _waiting(), CALLEE, KEYS[BOB], BOB, cache, NOW)
    again = decide_inband_offer(offerer.offer_bytes, _waiting(), CALLEE, KEYS[BOB], BOB, cache, NOW + 1)
    assert not isinstance(first, Refusal)
    assert isinstance(again, Refusal) and "replayed" in again.warning


def test_garbage_in_band_offer_is_refused() -> None:
    result = decide_inband_offer(b"\x00" * 300, _waiting(), CALLEE, KEYS[BOB], BOB, NonceCache(max_skew_s=60), NOW)
    assert isinstance(result, Refusal) and result.warning.startswith("voipgw: key exchange refused: ")


@pytest.mark.parametrize(
    ("config", "pinned", "expected"),
    [
        (CALLEE, False, "voipgw: no key exchange: the offer had no a=voipgw and none came in the media path"),
        (CALLEE_OPP, True, WARN_PINNED_CONTACT),
        (CALLEE_OPP, False, None),  # a plain call, NOT SECURE
    ],
)
def test_no_in_band_offer_in_time(config: PhoneConfig, pinned: bool, expected: str | None) -> None:
    refusal = inband_offer_missing(config, pinned)
    if expected is None:
        assert refusal is None
    else:
        assert refusal is not None and refusal.code == 488 and refusal.warning.startswith(expected)


# --- the caller -------------------------------------------------------------------------------------------


def test_an_opus_answer_without_the_attribute_turns_to_the_media_path() -> None:
    decision = decide_answer(PLAIN_OPUS, CALLER, _offerer(), BOB, NOW)
    assert isinstance(decision, InbandNeeded) and decision.codec.name == "opus"
    # Not without an offer of ours, nor with in-band off, nor without opus:
    assert isinstance(decide_answer(PLAIN_OPUS, CALLER_OPP, None, BOB, NOW), Accepted)
    assert isinstance(decide_answer(PLAIN_OPUS, replace(CALLER, inband=False), _offerer(), BOB, NOW), Rejected)
    assert isinstance(decide_answer(PLAIN_PCMU, CALLER, _offerer(), BOB, NOW), Rejected)


def test_an_in_band_answer_gets_every_check_of_an_sdp_answer() -> None:
    offerer = _offerer()
    needed = InbandNeeded(parse_sdp(PLAIN_OPUS), opus_codec())
    answer, _ = answer_offer(KEYS[BOB], BOB, offerer.offer_bytes, CALLEE.handshake, NOW, NonceCache(max_skew_s=60))
    # An answer bound to another offer (a man in the middle's own exchange with the callee) is refused ...
    other = _offerer()
    foreign, _ = answer_offer(KEYS[BOB], BOB, other.offer_bytes, CALLEE.handshake, NOW, NonceCache(max_skew_s=60))
    refused = decide_inband_answer(foreign, needed, CALLER, offerer, BOB, NOW)
    assert isinstance(refused, Rejected) and "offer-hash" in refused.reason
    # ... and so is one signed by someone else than the callee dialled; the genuine one still works after both.
    mallory, _ = answer_offer(
        KEYS[MALLORY], MALLORY, offerer.offer_bytes, replace(CALLEE, accept_any_callee=True).handshake, NOW,
        NonceCache(max_skew_s=60),
    )  # fmt: skip
    assert isinstance(decide_inband_answer(mallory, needed, CALLER, offerer, BOB, NOW), Rejected)
    accepted = decide_inband_answer(answer, needed, CALLER, offerer, BOB, NOW)
    assert isinstance(accepted, Accepted) and accepted.keys is not None and accepted.keys.remote_aor == BOB


@pytest.mark.parametrize(
    ("config", "pinned", "expected"),
    [
        (CALLER, False, "no key exchange: the answer had no a=voipgw and none came in the media path"),
        (CALLER_OPP, True, REJECT_PINNED_CONTACT),
        (CALLER_OPP, False, None),
    ],
)
def test_no_in_band_answer_in_time(config: PhoneConfig, pinned: bool, expected: str | None) -> None:
    verdict = inband_answer_missing(config, InbandNeeded(parse_sdp(PLAIN_OPUS), opus_codec()), pinned)
    if expected is None:
        assert isinstance(verdict, Accepted) and verdict.keys is None and verdict.codec.name == "opus"
    else:
        assert isinstance(verdict, Rejected) and verdict.reason.startswith(expected), verdict


@pytest.mark.parametrize(
    ("provisional", "config", "keys"),
    [
        (PLAIN_OPUS, CALLER, True),
        (PLAIN_PCMU, CALLER, False),  # clear early media from a PBX announcement: never keyed, never played
        (None, CALLER, False),
        ("not sdp", CALLER, False),
        (PLAIN_OPUS, replace(CALLER, inband=False), False),
    ],
)
def test_which_183_the_caller_keys_in_the_media_path(provisional: str | None, config: PhoneConfig, keys: bool) -> None:
    assert inband_early(provisional, config) is keys


def test_the_200_of_an_early_dialog_keyed_in_the_media_path_must_not_bring_an_attribute() -> None:
    assert final_matches_early(INBAND_EARLY, PLAIN_OPUS) is None
    assert final_matches_early(INBAND_EARLY, "") is None
    attr_sdp = build_sdp("192.0.2.1", 4000, [opus_codec()], handshake="AAAA")
    verdict = final_matches_early(INBAND_EARLY, attr_sdp)
    assert isinstance(verdict, Rejected) and "key exchange its 183 did not" in verdict.reason


@pytest.mark.parametrize(
    ("policy", "ordinary", "inband", "plain"),
    [
        (Policy.OPPORTUNISTIC, 10, 0, True),  # 200 ms of audio and no key exchange: a plain phone
        (Policy.OPPORTUNISTIC, 9, 0, False),
        (Policy.OPPORTUNISTIC, 50, 1, False),  # it sent one in-band packet: a voipgw peer, wait for the rest
        (Policy.REQUIRE, 500, 0, False),  # never shortened under require (injected packets must not end it)
    ],
)
def test_when_the_wait_ends_early_for_a_plain_phone(policy: Policy, ordinary: int, inband: int, plain: bool) -> None:
    stats = MediaStats(frames_received=ordinary, inband_received=inband)
    assert plain_peer(stats, policy) is plain
