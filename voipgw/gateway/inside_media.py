"""How the inside leg (gateway <-> phone) is protected: SDES-SRTP by ``inside.srtp`` (what we offer, how we answer
a phone's offer, what its answer settles) and where its RTP may come from. Pure decisions, no I/O; the media is
started in ``voipgw.gateway.legs``. Keys travel in the SDP: SIP over TLS between phone and gateway keeps them
from the PBX side. No function here logs, and no value here prints a key."""

from __future__ import annotations

from dataclasses import dataclass, field

from voipgw.rtp.sdes import CryptoAttribute, SdesError, SrtpMode, choose_crypto, new_crypto, parse_crypto
from voipgw.rtp.srtp import SrtpKeys
from voipgw.sdp import SAVP, AudioDescription


class InsideSrtpRefused(Exception):
    """The phone's offer or answer does not meet ``inside.srtp``; ``why`` goes in the SIP Warning (no key)."""

    reason = "inside-srtp-refused"

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class InsideCrypto:
    """What the inside leg's media runs with: SRTP keys (None: plain RTP) and our ``a=crypto`` value for the SDP."""

    keys: SrtpKeys | None = field(default=None, repr=False)
    attribute: str | None = field(default=None, repr=False)

    @property
    def srtp(self) -> bool:
        return self.keys is not None


PLAIN = InsideCrypto()


def answer_offer(mode: SrtpMode, offer: AudioDescription, over_tls: bool) -> InsideCrypto:
    """Our answer to an inside phone's offer (outbound call) that arrived over TLS or not: SRTP when the mode wants
    it and the phone offers a usable line; raises InsideSrtpRefused when the call cannot go on (488 with the reason).
    Under ``required`` the offer must come over TLS: over UDP or TCP its key was readable on the way."""
    savp = offer.profile == SAVP
    if mode is SrtpMode.OFF:
        if savp:
            raise InsideSrtpRefused("the phone offers SRTP only (RTP/SAVP) and inside.srtp is off")
        return PLAIN
    try:
        theirs = choose_crypto(offer.crypto)
    except SdesError as exc:
        if mode is SrtpMode.REQUIRED or savp:
            what = "no a=crypto line" if not offer.crypto else f"no usable a=crypto line ({exc.reason})"
            raise InsideSrtpRefused(f"inside.srtp = {mode.value}: the phone's offer has {what}") from None
        return PLAIN
    if mode is SrtpMode.REQUIRED and not over_tls:
        raise InsideSrtpRefused(
            "inside.srtp = required: the phone must use SIP over TLS (its SDES key crossed the network in the clear)"
        )
    ours = new_crypto(theirs.tag)
    return InsideCrypto(SrtpKeys(local=ours.key_salt, remote=theirs.key_salt), ours.render())


def contact_is_tls(uri: str) -> bool:
    """Whether the gateway reaches this phone contact over TLS (``sips:`` or ``;transport=tls``)."""
    low = uri.lower()
    return low.startswith("sips:") or ";transport=tls" in low


def offer_crypto(mode: SrtpMode, contact: str) -> CryptoAttribute | None:
    """Our key for an offer to the inside phone at ``contact`` (inbound call); None: the offer is plain RTP/AVP.
    Under ``required`` a contact not reached over TLS is refused: our key would cross the network in the clear."""
    if mode is SrtpMode.REQUIRED and not contact_is_tls(contact):
        raise InsideSrtpRefused("inside.srtp = required: the inside phone's contact is not SIP over TLS")
    return None if mode is SrtpMode.OFF else new_crypto(1)


def offer_profile(mode: SrtpMode) -> bool:
    """Whether the offer says RTP/SAVP (required) rather than RTP/AVP with a crypto line (optional: a phone that
    does not do SRTP ignores the line and answers plain, RFC 4568 best effort)."""
    return mode is SrtpMode.REQUIRED


def settle_answer(mode: SrtpMode, ours: CryptoAttribute | None, answer: AudioDescription) -> InsideCrypto:
    """The inside leg's protection once the phone answered our offer; raises InsideSrtpRefused when the answer
    does not meet the mode (the call is then ended with the reason)."""
    if ours is None:
        return PLAIN
    if not answer.crypto:
        if mode is SrtpMode.REQUIRED:
            raise InsideSrtpRefused("inside.srtp = required: the phone answered without a=crypto")
        return PLAIN
    try:
        theirs = parse_crypto(answer.crypto[0])
    except SdesError as exc:
        raise InsideSrtpRefused(f"the phone's a=crypto answer is not usable ({exc.reason})") from None
    if theirs.tag != ours.tag:
        raise InsideSrtpRefused(f"the phone answered crypto tag {theirs.tag}, we offered {ours.tag}")
    return InsideCrypto(SrtpKeys(local=ours.key_salt, remote=theirs.key_salt), ours.render())


def reoffer(current: InsideCrypto, offer: AudioDescription) -> InsideCrypto:
    """The inside leg's protection after the phone's re-offer (hold, resume): a plain leg stays plain; an SRTP leg
    stays SRTP with our key and the phone's (possibly new) key, our line echoing the tag it chose. Raises
    InsideSrtpRefused (488) when the re-offer drops SRTP: the leg never falls back to plain mid-call."""
    if current.keys is None:
        return current
    try:
        theirs = choose_crypto(offer.crypto)
    except SdesError as exc:
        raise InsideSrtpRefused(f"the phone's re-offer drops SRTP ({exc.reason})") from None
    ours = CryptoAttribute(theirs.tag, current.keys.local)
    return InsideCrypto(SrtpKeys(local=current.keys.local, remote=theirs.key_salt), ours.render())
