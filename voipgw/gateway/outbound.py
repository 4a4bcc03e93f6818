"""An outbound gateway call (inside phone -> outside): 180 to the phone at once (it plays its own ringback), the
outside INVITE, whose key exchange settles in the far end's 183 (sealed early media, never relayed in the clear),
and the phone's 200 OK only after the outside 200 OK, i.e. after the far phone answered (sealed, or NOT SECURE under
``opportunistic``), followed by an audible cue of the call's state and the SAS; desk phones also see the label
(``voipgw.gateway.labels``) in the 200 OK's P-Asserted-Identity / Remote-Party-ID. An outside failure becomes the
phone's final response as itself (486, 603, 480...) with its RFC 3326 Reason; a far end without voipgw is named
as such."""

from __future__ import annotations

import asyncio
import logging

from ratchet.aor import normalize_aor
from voipgw.call import CallEvent, CallState, Security
from voipgw.gateway.announce import start_announcement
from voipgw.gateway.contact_names import contact_name
from voipgw.gateway.inside_media import InsideSrtpRefused, answer_offer
from voipgw.gateway.labels import identity_headers, shown_for, trust_state_of
from voipgw.gateway.legs import (
    Switchboard,
    bind_inside,
    end_bridge,
    pick_inside_codec,
    start_inside_media,
    wait_terminal,
)
from voipgw.gateway.model import Bridge, InsideUser
from voipgw.gateway.routing import Refuse
from voipgw.gateway.statuses import code_of, outside_failure_warning
from voipgw.negotiate import telephone_event_pt
from voipgw.sdp import SAVP, SdpError, build_sdp, parse_sdp
from voipgw.sip import IncomingCall

log = logging.getLogger("voipgw.gateway.b2bua")  # the gateway's log lines keep the name operators filter on


async def outbound_setup(
    board: Switchboard, bridge: Bridge, user: InsideUser, incoming: IncomingCall, target: str | Refuse
) -> None:
    """Answer the inside phone once the outside call to ``target`` is up (and sealed, under ``require``), or
    refuse its INVITE with the outside leg's reason; the bridge is then up, or failed."""
    try:
        remote = parse_sdp(incoming.remote_sdp or "")
    except SdpError as exc:
        return board.refuse(bridge, incoming, 488, f"voipgw gateway: unusable offer: {exc.reason}")
    codec = pick_inside_codec(remote.codecs)
    if codec is None:
        return board.refuse(bridge, incoming, 488, "voipgw gateway: no common codec (PCMU, PCMA, G.722, opus)")
    try:
        crypto = answer_offer(board.config.inside_srtp, remote, incoming.transport == "tls")
    except InsideSrtpRefused as exc:
        return board.refuse(bridge, incoming, 488, f"voipgw gateway: {exc.why}")
    if isinstance(target, Refuse):
        return board.refuse(bridge, incoming, target.code, f"voipgw gateway: {target.why}")
    policy = board.config.policy_for(user.name, normalize_aor(target))
    bridge.policy = policy.value
    stream = await bind_inside(board.config.zones, board.config.listen_host)
    bridge.inside_media = stream
    # 180 without SDP: the inside phone plays its own ringback. Early media from the outside (a 183's audio)
    # is never relayed: it would be clear audio from a party nobody has verified yet.
    incoming.ring()
    bridge.inside.apply(CallEvent.RINGING)
    leg = board.outside_leg(bridge, user, policy)
    placing = asyncio.ensure_future(leg.place(target, source=bridge.to_outside, sink=bridge.to_inside))
    cancelled = asyncio.ensure_future(wait_terminal(incoming))
    await asyncio.wait({placing, cancelled}, return_when=asyncio.FIRST_COMPLETED)
    if cancelled.done() and not placing.done():
        bridge.reason = "cancelled by the inside phone"
        # place_call may still be sending the INVITE: retry the CANCEL until its call is pending.
        while not placing.done():
            if leg.cancel():
                break
            await asyncio.sleep(0.02)
    out = await placing
    inside_gone = cancelled.done()
    cancelled.cancel()
    bridge.outside = out
    rec = out.record
    if inside_gone:
        bridge.inside.apply(CallEvent.HUNG_UP)
    if rec.state is not CallState.ESTABLISHED:
        bridge.fail()
        if inside_gone:
            bridge.reason = bridge.reason or "cancelled by the inside phone"
            return
        code = code_of(rec.reason)
        cause = out.final_cause if out.final_cause is not None and out.final_cause[0] == code else None
        return board.refuse(bridge, incoming, code, outside_failure_warning(rec.reason), cause=cause)
    if inside_gone:
        # The inside phone gave up just as the outside answered.
        bridge.fail()
        end_bridge(bridge, "cancelled by the inside phone")
        return
    if rec.security is not Security.NOT_SECURE and rec.sas is None:
        # An auto-answering far end reveals its SAS contribution just after its 200 OK (one media round trip):
        # wait for it (bounded), so the phone's 200 OK shows the SAS in its label.
        await leg.wait_sas(board.config.sas_wait_s)
    log.log(
        logging.WARNING if rec.security is Security.NOT_SECURE else logging.INFO,
        "gateway call %s: %s -> %s %s%s, outside %s%s codec %s SAS %s",
        rec.call_id, user.name, rec.remote_aor, rec.security.value,
        " [NOT SECURE] (policy opportunistic: the far end has no voipgw gateway)"
        if rec.security is Security.NOT_SECURE else "",
        rec.suite, f" ({rec.key_exchange_note})" if rec.key_exchange_note else "", rec.codec, rec.sas,
    )  # fmt: skip
    await start_inside_media(bridge, stream, remote, codec, crypto, board.registered_source(user.name))
    # The caller's phone cannot show the state (it keeps the display it dialled): it hears it, and the SAS.
    board.spawn(start_announcement(bridge, board.config.speak_sas))
    # Phones that show the answering party (P-Asserted-Identity / Remote-Party-ID) see the label too.
    name = await contact_name(leg.context.trust, rec)  # the user's own name for the signed AOR, if any
    shown = shown_for(rec.security, trust_state_of(rec.trust_state), rec.sas, rec.remote_aor, name)
    bridge.display, bridge.label = shown.text, shown.kind.value
    incoming.answer(
        build_sdp(
            stream.local[0],
            stream.local[1],
            [codec],
            session_id=bridge.inside_sdp[0],
            telephone_event_pt=telephone_event_pt(remote, codec),
            crypto=crypto.attribute,
            savp=remote.profile == SAVP,
            cbr_opus=True,  # pass-through seals the phone's packets as they are: equal frames need CBR
        ),
        identity_headers(shown.text, rec.remote_aor, "called"),
    )
    bridge.inside.apply(CallEvent.ANSWERED, security=Security.NOT_SECURE)
