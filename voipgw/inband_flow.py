"""The two waits of the key exchange in the media path (docs/PROTOCOL.md §C.6), for ``voipgw.leg``: the callee
waiting for the caller's offer, the caller sending its offer and waiting for the answer. Each is bounded by
``inband_wait_s``, stops early when the SIP dialog ends, and takes the first message that passes every check of
``voipgw.negotiate`` (a forged or replayed one is counted and the wait goes on, so an attacker's packet cannot end
a call the genuine exchange would complete). No audio flows while they run: the stream is not started.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ratchet.handshake import NonceCache, Offerer
from ratchet.identity import IdentityKey
from ratchet.inband import InbandKind
from voipgw.active_call import ActiveCall
from voipgw.call import KeyExchange
from voipgw.config import PhoneConfig, Policy
from voipgw.inband_link import InbandLink
from voipgw.logutil import RateLimitedLog
from voipgw.media import MediaStats
from voipgw.negotiate import (
    Accepted,
    Answer,
    AwaitInband,
    InbandNeeded,
    Refusal,
    Rejected,
    decide_inband_answer,
    decide_inband_offer,
    inband_answer_missing,
    inband_offer_missing,
)
from voipgw.sdp import build_sdp
from voipgw.sip import IncomingCall

log = logging.getLogger("voipgw.inband")
_refused = RateLimitedLog(log)

POLL_S = 0.1
"""How often a wait looks at the SIP dialog (the caller may give up meanwhile) and at what the peer sends."""
PLAIN_PEER_PACKETS = 10
"""Under ``opportunistic``, a peer that sent this many ordinary RTP packets (200 ms of audio) and not one in-band
packet is a plain phone: a voipgw peer sends nothing but its key exchange before the keys. The wait ends there
instead of costing the call its first seconds. Never under ``require`` (an injected packet must not shorten the
wait of a call that can only be sealed)."""


def plain_peer(stats: MediaStats, policy: Policy) -> bool:
    """Whether the peer already showed it is a plain phone (``opportunistic`` only; see PLAIN_PEER_PACKETS)."""
    return policy is Policy.OPPORTUNISTIC and stats.inband_received == 0 and stats.frames_received >= PLAIN_PEER_PACKETS


@dataclass(frozen=True)
class Keying:
    """What the callee's wait needs of its leg's context (``LegContext.keying``)."""

    rtp_host: str
    config: PhoneConfig
    identity: IdentityKey
    aor: str
    nonces: NonceCache


@dataclass(frozen=True)
class InbandOffer:
    """A verified in-band offer: the answer to send back (in the media path, once the session runs)."""

    answer: Answer
    answer_bytes: bytes
    offer_bytes: bytes


async def wait_offer(
    link: InbandLink,
    waiting: AwaitInband,
    config: PhoneConfig,
    identity: IdentityKey,
    local_aor: str,
    nonces: NonceCache,
    pinned: bool,
    gone: Callable[[], bool],
) -> InbandOffer | Refusal | None:
    """The callee's wait: a verified offer, a refusal (none came: ``require``, or a contact whose key we hold), or
    None (none came, ``opportunistic``: a plain call). ``gone()`` is true once the caller gave up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.inband_wait_s
    while (left := deadline - loop.time()) > 0 and not gone() and not plain_peer(link.stream.stats, config.policy):
        offer = await link.receive(InbandKind.OFFER, min(left, POLL_S))
        if offer is None:
            continue
        result = decide_inband_offer(offer, waiting, config, identity, local_aor, nonces, time.time())
        if isinstance(result, Refusal):
            link.stream.stats.refuse_inband("inband-offer-refused")
            _refused("inband-offer", logging.WARNING, "in-band offer refused: %s; still waiting", result.warning)
            continue
        answer, answer_bytes = result
        return InbandOffer(answer, answer_bytes, offer)
    return inband_offer_missing(config, pinned)


async def exchange(
    link: InbandLink,
    needed: InbandNeeded,
    config: PhoneConfig,
    offerer: Offerer,
    remote_aor: str,
    pinned: bool,
    gone: Callable[[], bool],
) -> Accepted | Rejected:
    """The caller's side: send our offer in the media path until an answer that passes every check comes back;
    Accepted with keys, or (none came) what ``inband_answer_missing`` says."""
    loop = asyncio.get_running_loop()
    link.send(InbandKind.OFFER, offerer.offer_bytes, config.inband_wait_s)
    deadline = loop.time() + config.inband_wait_s
    try:
        while (left := deadline - loop.time()) > 0 and not gone() and not plain_peer(link.stream.stats, config.policy):
            answer = await link.receive(InbandKind.ANSWER, min(left, POLL_S))
            if answer is None:
                continue
            decision = decide_inband_answer(answer, needed, config, offerer, remote_aor, time.time())
            if isinstance(decision, Rejected):
                link.stream.stats.refuse_inband("inband-answer-refused")
                _refused("inband-answer", logging.WARNING, "in-band answer refused: %s; still waiting", decision.reason)
                continue
            return decision
    finally:
        link.finish()
    return inband_answer_missing(config, needed, pinned)


async def callee_wait(
    call: ActiveCall, incoming: IncomingCall, waiting: AwaitInband, pinned: bool, keying: Keying
) -> InbandOffer | Refusal | None:
    """The offer came without ``a=voipgw`` (a PBX rebuilt the SDP): answer the SDP in a 183 so the media path
    exists, ring nothing, send nothing, and wait (bounded) for the signed offer in the media path. ``call.media``
    is the call's bound stream."""
    config = keying.config
    stream = call.media
    assert stream is not None
    call.inband = InbandLink(stream, waiting.remote.rtp_address, waiting.codec.payload_type)
    call.answer_sdp = build_sdp(
        keying.rtp_host, stream.local[1], [waiting.codec], telephone_event_pt=waiting.telephone_event_pt
    )
    incoming.progress(call.answer_sdp)
    log.info("call %s from %s: no a=voipgw in the offer; waiting up to %g s for the key exchange in the media path",
             call.record.call_id, call.record.remote_aor, config.inband_wait_s)  # fmt: skip
    return await wait_offer(
        call.inband, waiting, config, keying.identity, keying.aor, keying.nonces, pinned, lambda: incoming.finished
    )


async def caller_exchange(
    call: ActiveCall, offerer: Offerer, needed: InbandNeeded, config: PhoneConfig, pinned: bool, *, early: bool
) -> Accepted | Rejected | None:
    """The answer came without ``a=voipgw`` but with opus (a PBX rebuilt the SDP, or a plain phone): our offer
    goes in the media path, bounded; no audio meanwhile. In the early dialog (a 183) a missing answer is None: the
    183 may be the PBX's own progress (a ringback, an announcement), so the call waits for the real answer, which
    gets its own attempt."""
    rec, sip = call.record, call.sip
    assert call.media is not None and sip is not None
    call.inband = InbandLink(call.media, needed.remote.rtp_address, needed.codec.payload_type)
    log.info("call %s to %s: no a=voipgw in the %s; the key exchange goes in the media path",
             rec.call_id, rec.remote_aor, "183" if early else "answer")  # fmt: skip
    started = asyncio.get_running_loop().time()
    result = await exchange(call.inband, needed, config, offerer, rec.remote_aor, pinned, lambda: sip.finished)
    if isinstance(result, Accepted) and result.keys is not None:
        rec.key_exchange, rec.call_id_bound = KeyExchange.MEDIA, False
        rec.inband_ms = (asyncio.get_running_loop().time() - started) * 1e3
        return result
    return None if early else result
