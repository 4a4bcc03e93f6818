"""The call's decisions, sans I/O: the callee's answer to an offer, the caller's verdict on an answer, and what a
trust verdict means for the call. Pure functions of SDP text, configuration, identity, replay cache and ``now``:
no asyncio, no sockets, no clock of their own. ``voipgw.leg`` carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass

from ratchet.aor import normalize_aor
from ratchet.errors import HandshakeError, MalformedAor
from ratchet.handshake import NonceCache, Offerer, answer_offer, decode_attribute, encode_attribute
from ratchet.identity import IdentityKey
from ratchet.messages import OfferMessage
from ratchet.params import SessionKeys
from voipgw.call import Security
from voipgw.config import PhoneConfig, Policy
from voipgw.sdp import PLAIN_CODECS, SECURE_CODECS, AudioDescription, Codec, SdpError, choose_codec, parse_sdp
from voipgw.trust import TrustState, TrustVerdict

WARN_NO_KEY_EXCHANGE = (
    "voipgw: end-to-end encryption is required here and the offer carries no voipgw key exchange (a=voipgw)"
)
WARN_NO_COMMON_CODEC = "voipgw: no common codec (a secure call needs opus; a plain one opus, PCMU or PCMA)"
WARN_PINNED_CONTACT = "voipgw: a known voipgw contact must use end-to-end encryption"
"""The 488 Warning for a plain offer from a contact whose key we hold (whatever the policy): nothing else, so the
PBX learns no more than that the caller is known here."""
KEY_CHANGE_REFUSED = "call refused for a key change"
"""All that leaves this host about a blocked key change (488 Warning, BYE Reason): when the old key was first seen
and whether it was verified stay in the local log and call record."""
REJECT_PINNED_CONTACT = (  # no comma: the BYE's Reason text ends at the first one
    "a known voipgw contact answered without the voipgw key exchange (a=voipgw stripped on the way?); hung up: "
    "a contact whose key is on record must encrypt ('voipgw forget AOR' to call it in the clear)"
)
NOT_ACCEPTABLE = (488, "Not Acceptable Here")


def no_inband_offer(wait_s: float, opus: bool = True) -> str:
    """The 488 Warning when no key exchange came, in the SDP or the media path (docs/PROTOCOL.md §C.6)."""
    if not opus:
        return (
            "voipgw: no key exchange: the offer had no a=voipgw and no opus (the PBX transcodes or rebuilds the "
            "SDP: a secure call needs opus relayed untouched)"
        )
    return (
        f"voipgw: no key exchange: the offer had no a=voipgw and none came in the media path within {wait_s:g} s "
        "(a PBX that transcodes the audio destroys it)"
    )


def no_inband_answer(wait_s: float) -> str:
    """The caller's hang-up reason when neither the answer's SDP nor the media path brought the key exchange."""
    return (
        f"no key exchange: the answer had no a=voipgw and none came in the media path within {wait_s:g} s "
        "(a plain phone, or a PBX that transcodes)"
    )


@dataclass(frozen=True)
class Answer:
    """The callee answers: media with ``codec``, sealed with ``keys`` (None: a plain call)."""

    remote: AudioDescription
    """The offer, parsed (its RTP address and telephone-event)."""
    codec: Codec
    keys: SessionKeys | None
    answer_attribute: str | None
    """Our ``a=voipgw`` value for the answer SDP (None for a plain call)."""
    telephone_event_pt: int | None
    """The offer's telephone-event payload type echoed in the answer (RFC 3264), or None: no DTMF."""
    called_as: str | None = None
    """The callee AOR the caller signed, when it is not ours (``accept_any_callee``: the call was forwarded to us;
    the caller believes it is talking to that AOR)."""


@dataclass(frozen=True)
class AwaitInband:
    """The offer has no ``a=voipgw`` but opus: the callee answers the SDP (a 183, so the media path exists) and
    waits, ringing nothing and sending no audio, for the signed offer in the media path (§C.6)."""

    remote: AudioDescription
    codec: Codec
    telephone_event_pt: int | None


@dataclass(frozen=True)
class InbandNeeded:
    """The answer has no ``a=voipgw`` but opus: the caller sends its offer in the media path and waits (§C.6)."""

    remote: AudioDescription
    codec: Codec


@dataclass(frozen=True)
class Refusal:
    """The callee refuses the INVITE with this final response and Warning text."""

    code: int
    phrase: str
    warning: str


@dataclass(frozen=True)
class Accepted:
    """The caller accepts the answer: media with ``codec``, sealed with ``keys`` (None: NOT SECURE, plain)."""

    remote: AudioDescription
    codec: Codec
    keys: SessionKeys | None


@dataclass(frozen=True)
class Rejected:
    """The caller refuses the answer (the dialog exists: it hangs up at once, with ``reason``)."""

    reason: str


@dataclass(frozen=True)
class TrustRefusal:
    """The contact store blocks the peer's key."""

    reason: str
    """The local detail (when the old key was first seen, whether it was verified): log and call record only."""
    warning: str | None
    """The loud key-change text, if any (logged and kept on the call record)."""
    public: str = KEY_CHANGE_REFUSED
    """The only text that leaves this host (the 488 Warning, the BYE Reason)."""


class ReflectedOffer(HandshakeError):
    """The offer is signed with our own identity key: our own offer, reflected back at us."""

    reason = "reflected-offer"


class ReflectedAnswer(HandshakeError):
    """The answer is signed with our own identity key: we would be talking to ourselves (our answer, reflected)."""

    reason = "reflected-answer"


def _not_reflected(keys: SessionKeys, error: type[HandshakeError]) -> SessionKeys:
    """``keys`` unless the peer's identity key is our own (wiped, then ``error``). The handshake core allows it
    (``voipgw.phone`` warms up by answering itself); a call never does: with ``accept_any_callee`` nothing else
    stops a reflected offer or answer."""
    if keys.remote_identity == keys.local_identity:
        keys.wipe()
        raise error("signed with our own identity key")
    return keys


def telephone_event_pt(remote: AudioDescription, codec: Codec) -> int | None:
    """The peer's telephone-event payload type if it is usable beside ``codec`` (dynamic, not the audio's)."""
    te = remote.telephone_event
    if te is None or not 96 <= te.payload_type <= 127 or te.payload_type == codec.payload_type:
        return None
    return te.payload_type


def decide_offer(
    offer_sdp: str,
    config: PhoneConfig,
    identity: IdentityKey,
    local_aor: str,
    remote_aor: str,
    call_id: str,
    nonces: NonceCache,
    now: float,
    pinned: bool = False,
) -> Answer | AwaitInband | Refusal:
    """Policy, then codec, then the key exchange (verify the offer, make the answer). The trust verdict on the
    resulting keys comes after (:func:`trust_outcome`): it may need the contact store.

    ``pinned``: the contact store holds a key for ``remote_aor``. Such a caller must encrypt whatever the policy
    (no silent downgrade by deleting ``a=voipgw``); ``e2e = false`` (no key exchange at all) is exempt."""
    try:
        remote = parse_sdp(offer_sdp)
    except SdpError as exc:
        return Refusal(*NOT_ACCEPTABLE, f"voipgw: unusable offer: {exc.reason}")
    secure = remote.handshake is not None and config.e2e
    if not secure and config.e2e and config.inband:
        opus = choose_codec(remote.codecs, SECURE_CODECS)
        if opus is not None:
            # A PBX may have rebuilt the SDP: the key exchange may still come in the media path (§C.6).
            return AwaitInband(remote, opus, telephone_event_pt(remote, opus))
        if config.policy is Policy.REQUIRE:
            return Refusal(*NOT_ACCEPTABLE, no_inband_offer(config.inband_wait_s, opus=False))
    # The policy verdict comes first: a plain offer under require is refused for its missing key exchange,
    # whatever codecs it lists.
    if not secure and config.policy is Policy.REQUIRE:
        return Refusal(*NOT_ACCEPTABLE, WARN_NO_KEY_EXCHANGE)
    if not secure and pinned and config.e2e:
        return Refusal(*NOT_ACCEPTABLE, WARN_PINNED_CONTACT)
    codec = choose_codec(remote.codecs, SECURE_CODECS if secure else PLAIN_CODECS)
    if codec is None:
        return Refusal(*NOT_ACCEPTABLE, WARN_NO_COMMON_CODEC)
    keys: SessionKeys | None = None
    attribute: str | None = None
    if secure:
        assert remote.handshake is not None
        try:
            answer_bytes, reflected = answer_offer(
                identity,
                local_aor,
                decode_attribute(remote.handshake),
                config.handshake,
                now,
                nonces,
                expected_remote_aor=remote_aor,
                call_id=call_id if config.bind_call_id else None,
            )
            keys = _not_reflected(reflected, ReflectedOffer)
        except HandshakeError as exc:
            return Refusal(*NOT_ACCEPTABLE, f"voipgw: key exchange refused: {exc.reason}")
        attribute = encode_attribute(answer_bytes)
    called_as = _forwarded_from(_signed_callee(remote.handshake), local_aor) if secure else None
    return Answer(remote, codec, keys, attribute, telephone_event_pt(remote, codec), called_as)


def decide_inband_offer(
    offer_bytes: bytes,
    waiting: AwaitInband,
    config: PhoneConfig,
    identity: IdentityKey,
    local_aor: str,
    nonces: NonceCache,
    now: float,
) -> tuple[Answer, bytes] | Refusal:
    """The callee's verdict on an offer that came in the media path: the same checks as in the SDP except the
    Call-ID and the SIP From, which a B2BUA rewrites (§C.7: the signed AORs, the offer hash, the nonce, the
    timestamp and the replay cache still bind it). Returns the answer and its wire bytes (sent in the media path)."""
    try:
        answer_bytes, reflected = answer_offer(
            identity, local_aor, offer_bytes, config.handshake, now, nonces, expected_remote_aor=None, call_id=None
        )
        keys = _not_reflected(reflected, ReflectedOffer)
    except HandshakeError as exc:
        return Refusal(*NOT_ACCEPTABLE, f"voipgw: key exchange refused: {exc.reason}")
    called_as = _forwarded_from(_callee_of(offer_bytes), local_aor)
    answer = Answer(waiting.remote, waiting.codec, keys, None, waiting.telephone_event_pt, called_as)
    return answer, answer_bytes


def inband_offer_missing(config: PhoneConfig, pinned: bool) -> Refusal | None:
    """No offer came in the media path in time: refused under ``require`` (and for a contact whose key we hold),
    else None: a plain call, NOT SECURE (``opportunistic``)."""
    if config.policy is Policy.REQUIRE:
        return Refusal(*NOT_ACCEPTABLE, no_inband_offer(config.inband_wait_s))
    if pinned:
        return Refusal(*NOT_ACCEPTABLE, WARN_PINNED_CONTACT)
    return None


def _signed_callee(attribute: str | None) -> str | None:
    """The callee AOR an offer attribute (already verified by ``answer_offer``) was signed for."""
    try:
        return _callee_of(decode_attribute(attribute or ""))
    except (HandshakeError, ValueError):
        return None


def _callee_of(offer_bytes: bytes) -> str | None:
    """The callee AOR a verified offer was signed for, however it travelled (SDP or media path)."""
    try:
        return OfferMessage.parse(offer_bytes).callee_aor
    except (HandshakeError, ValueError):
        return None


def _forwarded_from(signed_callee: str | None, local_aor: str) -> str | None:
    """``called_as`` of an answer: the signed callee AOR when it is not ours (the call was forwarded here)."""
    return signed_callee if signed_callee is not None and forwarded(signed_callee, local_aor) else None


def forwarded(expected: str, signed: str) -> bool:
    """Whether the party that signed (``signed``) is another AOR than the one the user meant (``expected``): the
    dialled AOR at the caller, our own at the callee. Compared in normal form (``ratchet.aor``)."""
    try:
        return normalize_aor(expected) != normalize_aor(signed)
    except MalformedAor:
        return True


def forwarded_security(security: Security) -> Security:
    """A forwarded call's security: "verified" belongs to the party that was verified, and the user meant someone
    else, so a verified key of the answering party counts as unverified until the user compares the SAS with it."""
    return Security.SECURE_UNVERIFIED if security is Security.SECURE_VERIFIED else security


def early_key_exchange(provisional_sdp: str | None) -> str | None:
    """The ``a=voipgw`` value of a provisional answer (a 183's SDP) the caller acts on, else None. A 183 without it
    is clear early media from a party nobody has verified: never played, the call waits for the final answer."""
    if not provisional_sdp:
        return None
    try:
        return parse_sdp(provisional_sdp).handshake
    except SdpError:
        return None


INBAND_EARLY = "media path"
"""``ActiveCall.early_attribute`` of an early dialog keyed in the media path (its 183 had no ``a=voipgw``)."""


def inband_early(provisional_sdp: str | None, config: PhoneConfig) -> bool:
    """Whether a caller keys a 183 without ``a=voipgw`` in the media path: it has opus and in-band is on."""
    if not provisional_sdp or not config.inband or not config.e2e:
        return False
    try:
        remote = parse_sdp(provisional_sdp)
    except SdpError:
        return False
    return remote.handshake is None and choose_codec(remote.codecs, SECURE_CODECS) is not None


def final_matches_early(early_attribute: str, final_sdp: str) -> Rejected | None:
    """The 200 OK of a call whose key exchange settled in its 183 must repeat that answer unchanged (the callee
    sends the same SDP): anything else is a rewritten or spliced answer, refused. A 200 without a body changes
    nothing: the keys were agreed in the 183 (what a peer that had the 183 acknowledged by PRACK may send)."""
    if not final_sdp.strip():
        return None
    try:
        final = parse_sdp(final_sdp).handshake
    except SdpError as exc:
        return Rejected(f"unusable answer SDP: {exc.reason}")
    if early_attribute == INBAND_EARLY:
        if final is not None:
            return Rejected("the 200 OK carries a key exchange its 183 did not (keyed in the media path)")
        return None
    if final != early_attribute:
        return Rejected("the 200 OK's key exchange differs from the one its 183 carried")
    return None


def decide_answer(
    answer_sdp: str, config: PhoneConfig, offerer: Offerer | None, remote_aor: str, now: float, pinned: bool = False
) -> Accepted | InbandNeeded | Rejected:
    """The caller's verdict on a 200 OK's SDP; ``offerer`` is our key-exchange offer (None: a plain offer).
    The caller closes the offerer afterwards whatever the verdict (closing is idempotent). ``pinned``: the
    contact store holds a key for the dialled ``remote_aor``, so a plain answer is hung up whatever the policy."""
    try:
        remote = parse_sdp(answer_sdp)
    except SdpError as exc:
        return Rejected(f"unusable answer SDP: {exc.reason}")
    if remote.handshake is None and offerer is not None and config.inband:
        opus = choose_codec(remote.codecs, SECURE_CODECS)
        if opus is not None:
            return InbandNeeded(remote, opus)  # a PBX may have rebuilt the SDP (§C.6)
    if remote.handshake is None or offerer is None:
        if config.policy is Policy.REQUIRE:
            return Rejected("the peer answered without the voipgw key exchange; hung up (policy: require)")
        if pinned and offerer is not None:
            return Rejected(REJECT_PINNED_CONTACT)
        if remote.handshake is not None:
            return Rejected("the answer carries a voipgw key exchange we did not offer")
        codec = choose_codec(remote.codecs, PLAIN_CODECS)
        if codec is None:
            return Rejected("no common codec in the answer")
        return Accepted(remote, codec, None)
    codec = choose_codec(remote.codecs, SECURE_CODECS)
    if codec is None:
        return Rejected("no common codec in the answer (a secure call needs opus)")
    try:
        keys = offerer.accept_answer(
            decode_attribute(remote.handshake),
            now,
            expected_remote_aor=None if config.accept_any_callee else remote_aor,
        )
        _not_reflected(keys, ReflectedAnswer)
    except HandshakeError as exc:
        return Rejected(f"key exchange failed: {exc.reason}")
    return Accepted(remote, codec, keys)


def decide_inband_answer(
    answer_bytes: bytes, needed: InbandNeeded, config: PhoneConfig, offerer: Offerer, remote_aor: str, now: float
) -> Accepted | Rejected:
    """The caller's verdict on an answer that came in the media path: exactly the checks of an SDP answer (the
    answer is bound to our offer's hash, which named the callee AOR we dialled)."""
    try:
        keys = offerer.accept_answer(
            answer_bytes, now, expected_remote_aor=None if config.accept_any_callee else remote_aor
        )
        _not_reflected(keys, ReflectedAnswer)
    except HandshakeError as exc:
        return Rejected(f"key exchange failed: {exc.reason}")
    return Accepted(needed.remote, needed.codec, keys)


def inband_answer_missing(config: PhoneConfig, needed: InbandNeeded, pinned: bool) -> Accepted | Rejected:
    """No answer came in the media path in time: hung up under ``require`` (and for a contact whose key we hold),
    else the plain call the answer's SDP describes (``opportunistic``: NOT SECURE)."""
    if config.policy is Policy.REQUIRE:
        return Rejected(no_inband_answer(config.inband_wait_s) + "; hung up (policy: require)")
    if pinned:
        return Rejected(REJECT_PINNED_CONTACT)
    codec = choose_codec(needed.remote.codecs, PLAIN_CODECS)
    if codec is None:
        return Rejected("no common codec in the answer")
    return Accepted(needed.remote, codec, None)


def trust_outcome(verdict: TrustVerdict | None) -> Security | TrustRefusal:
    """The security a sealed call runs under, or the contact store's refusal (``verdict`` None: no store)."""
    if verdict is None:
        return Security.SECURE_UNVERIFIED
    if not verdict.allowed:
        return TrustRefusal(verdict.reason, verdict.warning)
    if verdict.state is TrustState.KEY_CHANGED:
        return Security.KEY_CHANGED
    return Security.SECURE_VERIFIED if verdict.verified else Security.SECURE_UNVERIFIED
