"""voipgw.negotiate's decisions as tables, without sockets or clocks: the callee's answer or refusal (code and
Warning), the caller's verdict on an answer, and what a trust verdict makes of a call."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ratchet.handshake import NonceCache, Offerer, answer_offer, encode_attribute
from ratchet.identity import IdentityKey
from voipgw.call import Security
from voipgw.config import PhoneConfig, Policy
from voipgw.negotiate import (
    KEY_CHANGE_REFUSED,
    REJECT_PINNED_CONTACT,
    WARN_NO_COMMON_CODEC,
    WARN_NO_KEY_EXCHANGE,
    WARN_PINNED_CONTACT,
    Accepted,
    Answer,
    Refusal,
    Rejected,
    TrustRefusal,
    decide_answer,
    decide_offer,
    early_key_exchange,
    final_matches_early,
    forwarded,
    forwarded_security,
    telephone_event_pt,
    trust_outcome,
)
from voipgw.sdp import Codec, build_sdp, opus_codec, parse_sdp, telephone_event_codec
from voipgw.trust import TrustAction, TrustState, TrustVerdict

NOW = 1_800_000_000.0
ALICE, BOB = "alice@example.org", "bob@example.org"
CALL_ID = "c1@example.org"
PCMU = Codec("pcmu", 0, 8000)
G722 = Codec("g722", 9, 8000)
KEYS = {ALICE: IdentityKey.generate(), BOB: IdentityKey.generate()}
# The SDP-only decisions; the key exchange in the media path (on by default) is tested in test_negotiate_inband.py.
REQUIRE = PhoneConfig(aor=BOB, inband=False)
OPPORTUNISTIC = PhoneConfig(aor=BOB, policy=Policy.OPPORTUNISTIC, inband=False)


def _offerer(to: str = BOB, call_id: str = CALL_ID) -> Offerer:
    return Offerer(KEYS[ALICE], ALICE, to, call_id, PhoneConfig(aor=ALICE).offer_handshake, NOW)


def _sdp(codecs: list[Codec], handshake: bytes | None = None, te: int | None = 101) -> str:
    attr = encode_attribute(handshake) if handshake is not None else None
    return build_sdp("192.0.2.1", 4000, codecs, handshake=attr, telephone_event_pt=te)


def _offer(
    sdp: str, config: PhoneConfig = REQUIRE, nonces: NonceCache | None = None, pinned: bool = False, **kw: str
) -> Answer | Refusal:
    cache = nonces if nonces is not None else NonceCache(max_skew_s=60)
    call_id = kw.get("call_id", CALL_ID)
    return decide_offer(sdp, config, KEYS[BOB], BOB, kw.get("caller", ALICE), call_id, cache, NOW, pinned)


# --- the callee: offer -> answer or refusal ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "sdp", "warning"),
    [
        (REQUIRE, "not sdp", "voipgw: unusable offer: "),
        (REQUIRE, _sdp([PCMU]), WARN_NO_KEY_EXCHANGE),
        (REQUIRE, _sdp([G722]), WARN_NO_KEY_EXCHANGE),  # policy first, whatever the codecs
        (replace(REQUIRE, e2e=False), _sdp([opus_codec()], _offerer().offer_bytes), WARN_NO_KEY_EXCHANGE),
        (OPPORTUNISTIC, _sdp([G722]), WARN_NO_COMMON_CODEC),
        (REQUIRE, _sdp([PCMU], _offerer().offer_bytes), WARN_NO_COMMON_CODEC),  # sealed means opus
        (REQUIRE, _sdp([opus_codec()], _offerer(to="carol@example.org").offer_bytes), "voipgw: key exchange refused: "),
    ],
    ids=[
        "garbage",
        "plain-require",
        "plain-require-no-codec",
        "e2e-off",
        "no-plain-codec",
        "secure-no-opus",
        "other-callee",
    ],
)
def test_the_callee_refuses_with_488_and_todays_warning(config: PhoneConfig, sdp: str, warning: str) -> None:
    decision = _offer(sdp, config)
    assert isinstance(decision, Refusal), decision
    assert (decision.code, decision.phrase) == (488, "Not Acceptable Here")
    assert decision.warning.startswith(warning), decision.warning


def test_a_secure_offer_is_answered_with_keys_and_the_offer_telephone_event() -> None:
    decision = _offer(_sdp([opus_codec(), PCMU], _offerer().offer_bytes, te=98))
    assert isinstance(decision, Answer), decision
    assert decision.codec.name == "opus" and decision.keys is not None and decision.answer_attribute
    assert decision.telephone_event_pt == 98 and decision.keys.remote_aor == ALICE


def test_a_replayed_offer_and_a_call_id_mismatch_are_refused() -> None:
    nonces = NonceCache(max_skew_s=60)
    offer = _sdp([opus_codec()], _offerer().offer_bytes)
    assert isinstance(_offer(offer, nonces=nonces), Answer)
    replayed = _offer(offer, nonces=nonces)
    assert isinstance(replayed, Refusal) and "key exchange refused" in replayed.warning
    moved = _offer(_sdp([opus_codec()], _offerer().offer_bytes), call_id="rewritten@pbx")
    assert isinstance(moved, Refusal) and "key exchange refused" in moved.warning
    unbound = _offer(_sdp([opus_codec()], _offerer().offer_bytes), replace(REQUIRE, bind_call_id=False),
                     call_id="rewritten@pbx")  # fmt: skip
    assert isinstance(unbound, Answer)


def test_a_plain_offer_under_opportunistic_is_answered_in_the_clear() -> None:
    decision = _offer(_sdp([G722, PCMU], te=None), OPPORTUNISTIC)
    assert isinstance(decision, Answer) and decision.codec.name == "pcmu"
    assert decision.keys is None and decision.answer_attribute is None and decision.telephone_event_pt is None
    off = _offer(_sdp([opus_codec()], _offerer().offer_bytes), replace(OPPORTUNISTIC, e2e=False))
    assert isinstance(off, Answer) and off.keys is None  # e2e off: the key exchange is ignored


# --- the caller: answer -> accepted or hung up --------------------------------------------------------------


def _answer_to(offerer: Offerer, codecs: list[Codec]) -> str:
    decision = _offer(_sdp([opus_codec()], offerer.offer_bytes))
    assert isinstance(decision, Answer) and decision.answer_attribute is not None
    return build_sdp("192.0.2.2", 4002, codecs, handshake=decision.answer_attribute)


CALLER_REQUIRE = PhoneConfig(aor=ALICE, inband=False)
CALLER_OPPORTUNISTIC = PhoneConfig(aor=ALICE, policy=Policy.OPPORTUNISTIC, inband=False)


@pytest.mark.parametrize(
    ("config", "sdp", "secure", "reason"),
    [
        (CALLER_REQUIRE, "v=0", True, "unusable answer SDP: "),
        (CALLER_REQUIRE, _sdp([opus_codec()]), True, "the peer answered without the voipgw key exchange; hung up"),
        (CALLER_OPPORTUNISTIC, _sdp([G722]), False, "no common codec in the answer"),
        (CALLER_OPPORTUNISTIC, "answer-with-handshake", False, "the answer carries a voipgw key exchange we did not"),
        (CALLER_REQUIRE, "answer-pcmu", True, "no common codec in the answer (a secure call needs opus)"),
        (CALLER_REQUIRE, "answer-tampered", True, "key exchange failed: "),
    ],
    ids=["garbage", "plain-answer-require", "no-plain-codec", "unexpected-handshake", "secure-no-opus", "tampered"],
)
def test_the_caller_hangs_up_with_todays_reason(config: PhoneConfig, sdp: str, secure: bool, reason: str) -> None:
    offerer = _offerer()
    if sdp == "answer-with-handshake":
        sdp = _answer_to(_offerer(), [opus_codec()])
    elif sdp == "answer-pcmu":
        sdp = _answer_to(offerer, [PCMU])
    elif sdp == "answer-tampered":
        sdp = _answer_to(_offerer(), [opus_codec()])  # signed for another offer
    decision = decide_answer(sdp, config, offerer if secure else None, BOB, NOW)
    assert isinstance(decision, Rejected), decision
    assert decision.reason.startswith(reason), decision.reason


def test_the_caller_accepts_a_sealed_answer_and_a_plain_one_under_opportunistic() -> None:
    offerer = _offerer()
    sealed = decide_answer(_answer_to(offerer, [opus_codec()]), CALLER_REQUIRE, offerer, BOB, NOW)
    assert isinstance(sealed, Accepted) and sealed.keys is not None and sealed.codec.name == "opus"
    assert offerer.closed  # the settled exchange dropped its secrets
    plain = decide_answer(_sdp([PCMU]), CALLER_OPPORTUNISTIC, None, BOB, NOW)
    assert isinstance(plain, Accepted) and plain.keys is None and plain.codec.name == "pcmu"


# --- pinned contacts: a known voipgw contact must encrypt, whatever the policy -----------------------------


@pytest.mark.parametrize(
    ("config", "pinned", "sdp", "expected"),
    [
        (OPPORTUNISTIC, True, _sdp([PCMU]), WARN_PINNED_CONTACT),  # a=voipgw deleted from a known contact's offer
        (OPPORTUNISTIC, True, _sdp([G722]), WARN_PINNED_CONTACT),  # the pin first, whatever the codecs
        (OPPORTUNISTIC, False, _sdp([PCMU]), "plain"),  # a stranger: opportunistic as before
        (REQUIRE, True, _sdp([PCMU]), WARN_NO_KEY_EXCHANGE),  # require says it already
        (replace(OPPORTUNISTIC, e2e=False), True, _sdp([PCMU]), "plain"),  # no key exchange at all (baselines)
        (OPPORTUNISTIC, True, _sdp([opus_codec()], _offerer().offer_bytes), "sealed"),
    ],
    ids=["stripped", "stripped-no-codec", "stranger", "require", "e2e-off", "sealed"],
)
def test_a_known_contacts_plain_offer_is_refused_whatever_the_policy(
    config: PhoneConfig, pinned: bool, sdp: str, expected: str
) -> None:
    decision = _offer(sdp, config, pinned=pinned)
    if expected == "plain":
        assert isinstance(decision, Answer) and decision.keys is None, decision
    elif expected == "sealed":
        assert isinstance(decision, Answer) and decision.keys is not None, decision
    else:
        assert isinstance(decision, Refusal) and (decision.code, decision.warning) == (488, expected), decision


def test_the_pinned_warning_says_only_that_a_known_contact_must_encrypt() -> None:
    assert WARN_PINNED_CONTACT == "voipgw: a known voipgw contact must use end-to-end encryption"


@pytest.mark.parametrize(
    ("pinned", "secure", "expected"),
    [(True, True, REJECT_PINNED_CONTACT), (False, True, "plain"), (True, False, "plain")],
    ids=["known-contact-stripped", "stranger", "e2e-off"],
)
def test_a_known_contacts_plain_answer_is_hung_up(pinned: bool, secure: bool, expected: str) -> None:
    offerer = _offerer()
    config = CALLER_OPPORTUNISTIC if secure else replace(CALLER_OPPORTUNISTIC, e2e=False)
    decision = decide_answer(_sdp([PCMU]), config, offerer if secure else None, BOB, NOW, pinned)
    if expected == "plain":
        assert isinstance(decision, Accepted) and decision.keys is None, decision
    else:
        assert decision == Rejected(expected)


# --- reflection: an offer or answer signed with our own key ------------------------------------------------


def test_our_own_offer_reflected_at_us_is_refused_even_with_accept_any_callee() -> None:
    any_callee = replace(OPPORTUNISTIC, aor=ALICE, accept_any_callee=True)
    own = _sdp([opus_codec()], _offerer(to=BOB).offer_bytes)  # alice's offer to bob, sent back to alice as from alice
    decision = decide_offer(own, any_callee, KEYS[ALICE], ALICE, ALICE, CALL_ID, NonceCache(max_skew_s=60), NOW)
    assert isinstance(decision, Refusal), decision
    assert decision.warning == "voipgw: key exchange refused: reflected-offer"
    # the same offer from a stranger's key to alice is answered (accept_any_callee is what it says)
    other = Offerer(KEYS[BOB], BOB, "carol@example.org", CALL_ID, PhoneConfig(aor=BOB).offer_handshake, NOW)
    fine = decide_offer(_sdp([opus_codec()], other.offer_bytes), any_callee, KEYS[ALICE], ALICE, BOB, CALL_ID,
                        NonceCache(max_skew_s=60), NOW)  # fmt: skip
    assert isinstance(fine, Answer) and fine.keys is not None


@pytest.mark.parametrize("any_callee", [True, False])
def test_an_answer_signed_with_our_own_key_is_refused(any_callee: bool) -> None:
    """Alice's offer, answered by alice's own key (her listener, reflected): never a call with herself."""
    caller = replace(CALLER_OPPORTUNISTIC, accept_any_callee=any_callee)
    callee = ALICE if not any_callee else BOB
    offerer = Offerer(KEYS[ALICE], ALICE, callee, CALL_ID, caller.offer_handshake, NOW)
    answerer = replace(REQUIRE, aor=ALICE, accept_any_callee=True)
    # answer_offer itself allows a self-answer (the phone's warm-up does it): drive it without the negotiate check
    wire, keys = answer_offer(KEYS[ALICE], ALICE, offerer.offer_bytes, answerer.handshake, NOW, NonceCache(60))
    keys.wipe()
    sdp = build_sdp("192.0.2.2", 4002, [opus_codec()], handshake=encode_attribute(wire))
    decision = decide_answer(sdp, caller, offerer, callee, NOW)
    assert isinstance(decision, Rejected), decision
    assert decision.reason.startswith("key exchange failed: reflected-answer"), decision.reason


# --- trust verdicts and DTMF ---------------------------------------------------------------------------


def _verdict(state: TrustState, *, verified: bool = False, allow: bool = True) -> TrustVerdict:
    action = TrustAction.ALLOW if allow else TrustAction.BLOCK
    warning = "the key changed" if state is TrustState.KEY_CHANGED else None
    return TrustVerdict(BOB, state, verified, action, "0" * 60, None, None, "why", warning)


@pytest.mark.parametrize(
    ("verdict", "outcome"),
    [
        (None, Security.SECURE_UNVERIFIED),
        (_verdict(TrustState.FIRST_CONTACT), Security.SECURE_UNVERIFIED),
        (_verdict(TrustState.KNOWN), Security.SECURE_UNVERIFIED),
        (_verdict(TrustState.KNOWN, verified=True), Security.SECURE_VERIFIED),
        (_verdict(TrustState.KEY_CHANGED), Security.KEY_CHANGED),
        (_verdict(TrustState.KEY_CHANGED, allow=False), TrustRefusal("why", "the key changed")),
    ],
)
def test_trust_outcome(verdict: TrustVerdict | None, outcome: Security | TrustRefusal) -> None:
    assert trust_outcome(verdict) == outcome


def test_a_blocked_key_change_tells_the_far_end_only_that() -> None:
    """The refusal's public text (488 Warning, BYE Reason) names neither the old key's age nor its verification."""
    verdict = replace(
        _verdict(TrustState.KEY_CHANGED, allow=False),
        reason="identity key of bob@example.org changed (old key first seen 2026-01-02 03:04 UTC, verified); ...",
    )
    outcome = trust_outcome(verdict)
    assert isinstance(outcome, TrustRefusal)
    assert outcome.public == KEY_CHANGE_REFUSED == "call refused for a key change"
    assert "first seen" in outcome.reason  # the detail stays local


@pytest.mark.parametrize(
    ("te", "codec", "expected"),
    [(101, PCMU, 101), (None, PCMU, None), (98, Codec("opus", 98, 48000), None), (13, PCMU, None)],
)
def test_telephone_event_pt_is_the_peers_when_usable(te: int | None, codec: Codec, expected: int | None) -> None:
    codecs = [codec] + ([telephone_event_codec(te)] if te is not None else [])
    assert telephone_event_pt(parse_sdp(build_sdp("192.0.2.1", 4000, codecs)), codec) == expected


# --- the caller: a 183's key exchange, and the 200 OK that must repeat it ---------------------------------

EARLY = _sdp([opus_codec()], b"early-answer")
OTHER = _sdp([opus_codec()], b"another-answer")


@pytest.mark.parametrize(
    ("provisional", "acts"),
    [
        (None, False),  # 180 Ringing
        ("", False),
        (_sdp([PCMU]), False),  # clear early media (a PBX announcement): never played, never an answer
        ("v=0\r\nnot sdp", False),
        (EARLY, True),
    ],
)
def test_only_a_183_carrying_the_key_exchange_is_acted_on(provisional: str | None, acts: bool) -> None:
    found = early_key_exchange(provisional)
    assert (found is not None) is acts
    if acts:
        assert found == parse_sdp(EARLY).handshake


@pytest.mark.parametrize(
    ("final", "refused"),
    [
        (EARLY, None),  # repeated unchanged, as the callee sends it
        ("", None),  # a 200 without a body: the keys were agreed in the 183
        (OTHER, "the 200 OK's key exchange differs from the one its 183 carried"),
        (_sdp([opus_codec()]), "the 200 OK's key exchange differs from the one its 183 carried"),  # stripped
        ("v=0\r\nm=audio x", "unusable answer SDP"),
    ],
)
def test_the_200_must_repeat_the_183s_key_exchange(final: str, refused: str | None) -> None:
    early = parse_sdp(EARLY).handshake
    assert early is not None
    verdict = final_matches_early(early, final)
    if refused is None:
        assert verdict is None
    else:
        assert isinstance(verdict, Rejected) and verdict.reason.startswith(refused)


@pytest.mark.parametrize(
    ("expected", "signed", "result"),
    [
        ("bob@example.org", "bob@example.org", False),
        ("sip:bob@example.org", "bob@example.org", False),  # one AOR in two spellings (ratchet.aor)
        ("bob@example.org", "mallory@example.org", True),
        ("bob@example.org", "bob@example.net", True),
        ("not an aor", "bob@example.org", True),  # unreadable: never taken as the same party
    ],
)
def test_forwarded_compares_aors_in_normal_form(expected: str, signed: str, result: bool) -> None:
    assert forwarded(expected, signed) is result


@pytest.mark.parametrize(
    ("security", "result"),
    [
        (Security.SECURE_VERIFIED, Security.SECURE_UNVERIFIED),
        (Security.SECURE_UNVERIFIED, Security.SECURE_UNVERIFIED),
        (Security.KEY_CHANGED, Security.KEY_CHANGED),
    ],
)
def test_a_forwarded_call_is_never_verified_for_the_party_meant(security: Security, result: Security) -> None:
    assert forwarded_security(security) is result
