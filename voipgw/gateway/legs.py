"""What the gateway's two call flows share: the inside leg's codecs and offer, its media start and the DTMF
bridge, waiting on a leg's SIP events, hanging a bridge up, and the ``Switchboard``: the little the flows need from
the B2BUA that runs them (owned here, by its consumers). No routing and no bookkeeping of bridges."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from voipgw.audio.codecs import OPUS as OPUS_CODEC
from voipgw.audio.codecs import get_codec
from voipgw.config import Policy
from voipgw.gateway.inside_media import InsideCrypto, InsideSrtpRefused, reoffer
from voipgw.gateway.model import B2buaSettings, Bridge, InsideUser
from voipgw.gateway.pipes import switch_codec, transcode_directly
from voipgw.gateway.zones import Zones, bind_inside_media
from voipgw.leg import Leg
from voipgw.media import MediaError, MediaStream, PlainProtector
from voipgw.negotiate import telephone_event_pt
from voipgw.rtp.dtmf import DtmfError
from voipgw.rtp.endpoint import DEFAULT_PAYLOAD_TYPE
from voipgw.rtp.source import expected_source
from voipgw.rtp.srtp import SrtpContext
from voipgw.sdp import PCMA, PCMU, SAVP, AudioDescription, Codec, opus_codec
from voipgw.sip import Ended, Failed, IncomingCall, SipCall, SipStack

log = logging.getLogger("voipgw.gateway.b2bua")  # the gateway's log lines keep the name operators filter on

G722 = "g722"
INSIDE_CODECS = (PCMU, PCMA, G722, "opus")
"""Codecs the inside leg accepts; the inside phone's own order decides among them."""
INSIDE_OFFER = [opus_codec(), Codec(G722, 9, 8000), Codec(PCMU, 0, 8000), Codec(PCMA, 8, 8000)]
"""What the gateway offers an inside phone it rings: Opus first (passed through untouched), then the best
transcoded one."""
INSIDE_EVENT_PT = 101
"""The telephone-event payload type the gateway offers an inside phone it rings (DTMF is bridged both ways)."""


class Switchboard(Protocol):
    """What a call flow needs from the B2BUA running it (``voipgw.gateway.b2bua.Gateway``)."""

    config: B2buaSettings
    stack: SipStack | None

    def outside_leg(self, bridge: Bridge, user: InsideUser, policy: Policy) -> Leg:
        """A new outside leg for ``bridge``, as ``user`` under ``policy``."""
        ...

    def refuse(
        self, bridge: Bridge, incoming: IncomingCall, code: int, warning: str, cause: tuple[int, str] | None = None
    ) -> None:
        """Refuse the inside phone's INVITE (counted, logged rate-limited)."""
        ...

    def count_refused(self, code: int) -> None:
        """An INVITE refused elsewhere (by the outside leg's key exchange or policy)."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background, awaited (bounded) when the gateway stops."""
        ...

    def registered_source(self, user: str) -> tuple[str, int] | None:
        """Where ``user``'s current registration came from (None: a static phone, or not registered)."""
        ...


async def bind_inside(zones: Zones | None, host: str, payload_type: int | None = DEFAULT_PAYLOAD_TYPE) -> MediaStream:
    """The inside leg's media socket, in the inside zone's RTP range: it never latches, and holds what arrives
    until ``start_inside_media`` knows the phone's address and SRTP key (then only that address, and only
    authentic SRTP when keyed, gets through)."""
    stream = await bind_inside_media(zones, host, payload_type=payload_type, latch=False)
    stream.endpoint.hold = True
    return stream


async def start_inside_media(
    bridge: Bridge,
    stream: MediaStream,
    remote: AudioDescription,
    codec: Codec,
    crypto: InsideCrypto,
    registered: tuple[str, int] | None,
) -> None:
    """Start the inside leg's media toward ``remote`` with ``codec`` (SRTP with ``crypto``'s keys, else plain),
    accepting RTP only from the phone's SDP address (or its ``registered`` source behind NAT), then open the pipes
    between the legs."""
    bridge.inside_crypto = crypto
    bridge.inside_savp = remote.profile == SAVP
    # An Opus inside phone: frames cross untouched in both directions (no transcoding, no added codec delay),
    # when the outside leg is a sealed Opus call (a NOT SECURE one may speak G.711: it is transcoded).
    sealed = bridge.outside is not None and bridge.outside.session is not None
    bridge.passthrough.on = codec.name == OPUS_CODEC.name and sealed
    info = switch_codec(bridge.relay_out, bridge.relay_in, bridge.passthrough) if bridge.passthrough.on else None
    # The frames themselves are clear codec frames on the inside leg (SRTP, when on, wraps whole packets in the
    # endpoint); only the outside leg seals frames end to end.
    await stream.start(
        PlainProtector(),
        remote.rtp_address,
        source=bridge.to_inside,
        sink=bridge.to_outside,
        allow_insecure=True,
        clock=time.monotonic,
        codec=info or get_codec(codec.name),
        payload_type=codec.payload_type,
        telephone_event_pt=telephone_event_pt(remote, codec),
    )
    # Right after start() (no await between: nothing was sent yet, so nothing leaves unprotected): the rule and
    # keys are set, then what arrived meanwhile is processed under them.
    stream.endpoint.secure(
        expected_source(remote.rtp_address, registered), SrtpContext(crypto.keys) if crypto.keys else None
    )
    bridge.inside_codec = codec.name
    bridge.inside_payload = codec
    _bridge_dtmf(bridge, stream)
    bridge.to_inside.open = bridge.to_outside.open = True
    outside = bridge.outside.media if bridge.outside is not None else None
    if not bridge.passthrough.on and outside is not None:
        transcode_directly(stream, outside, bridge.to_outside, bridge.to_inside)


def reoffer_inside(bridge: Bridge, remote: AudioDescription) -> bool:
    """Take the inside phone's re-offer's SRTP key (it may re-key); False when it drops SRTP (answered 488)."""
    try:
        crypto = reoffer(bridge.inside_crypto, remote)
    except InsideSrtpRefused as exc:
        log.warning("gateway call %s: inside re-offer refused: %s", bridge.call_id, exc.why)
        return False
    media = bridge.inside_media
    srtp = media.endpoint.srtp if media is not None else None
    if crypto.keys is not None and srtp is not None and crypto.keys != bridge.inside_crypto.keys:
        srtp.set_remote(crypto.keys.remote)
    bridge.inside_crypto = crypto
    return True


def _bridge_dtmf(bridge: Bridge, inside: MediaStream) -> None:
    """Each RFC 4733 digit one leg receives is sent on the other (sealed like audio on the outside leg)."""
    outside = bridge.outside.media if bridge.outside is not None else None
    if outside is None:
        return
    noted = outside.on_dtmf

    def to_inside(digit: str) -> None:
        if noted is not None:
            noted(digit)
        if _send_dtmf(bridge, inside, digit, "inside"):
            bridge.dtmf_to_inside += 1

    def to_outside(digit: str) -> None:
        if _send_dtmf(bridge, outside, digit, "outside"):
            bridge.dtmf_to_outside += 1

    outside.on_dtmf = to_inside
    inside.on_dtmf = to_outside


def unhook(bridge: Bridge) -> None:
    """Take the bridge's callbacks off its legs' SIP dialogs and media streams once it is over: the SIP stack may
    keep a dialog a while longer (retransmissions), and it must not keep the whole call (media, ratchet state,
    sockets) alive through them (issue 17: a finished call is a snapshot only)."""
    for sip in (bridge.inside_sip, bridge.outside.sip if bridge.outside is not None else None):
        if sip is not None:
            sip.reoffer_handler = None
    for media in (bridge.inside_media, bridge.outside.media if bridge.outside is not None else None):
        if media is not None:
            media.on_dtmf = None


def _send_dtmf(bridge: Bridge, stream: MediaStream, digit: str, leg: str) -> bool:
    try:
        stream.send_dtmf(digit)
    except (MediaError, DtmfError) as exc:
        # Counted, never logged digit by digit (digits may be PINs); the first failure says why.
        if not bridge.dtmf_dropped:
            log.warning("gateway call %s: DTMF cannot cross to the %s leg: %s", bridge.call_id, leg, exc)
        bridge.dtmf_dropped += 1
        return False
    return True


def end_bridge(bridge: Bridge, why: str) -> None:
    """Hang up both legs (BYE, or CANCEL/487 while ringing)."""
    bridge.reason = bridge.reason or why
    text = None if why == "gateway shutdown" else f"voipgw gateway: {why}"
    if bridge.outside is not None:
        bridge.outside.hangup(text)
    if bridge.inside_sip is not None:
        with contextlib.suppress(Exception):
            bridge.inside_sip.hangup(text)  # the inside phone learns why too (BYE Reason)


async def wait_terminal(sip: SipCall) -> Ended | Failed | None:
    """The leg's terminal event (its other events are of no interest while we wait)."""
    while True:
        ev = await sip.next_event()
        if isinstance(ev, Ended | Failed):
            return ev


def pick_inside_codec(offered: tuple[Codec, ...]) -> Codec | None:
    """The inside phone's first codec that we transcode (its order, not ours: it knows its network)."""
    return next((c for c in offered if c.name in INSIDE_CODECS), None)
