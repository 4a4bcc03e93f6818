"""An inbound gateway call (outside -> inside phone). The outside INVITE is verified and its key exchange settled
in a 183 (the early dialog: sealed media both ways, nothing answered); the gateway waits for the caller's SAS
reveal, then rings the inside phone with the label first (``From: "[NEW 4xj9] alice"``, the same in
P-Asserted-Identity / Remote-Party-ID; ``voipgw.gateway.labels``) while the caller hears a sealed ringback. The
phone's first 18x is the ring point: our SAS contribution goes out (docs/PROTOCOL.md §A.6) and the caller gets a
180. The outside leg is answered (200 OK) only when the inside phone answers; a busy, declining or silent phone
reaches the caller as its own status (486, 603, 480...). A reveal that does not come in time rings ``[NO SAS]``
(logged, counted); a far end that refused our key exchange is recorded as refused."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ratchet.aor import normalize_aor
from voipgw.call import CallEvent, CallRecord, Security
from voipgw.gateway.announce import inbound_announces, start_announcement
from voipgw.gateway.contact_names import contact_name
from voipgw.gateway.inside_media import InsideSrtpRefused, offer_crypto, offer_profile, settle_answer
from voipgw.gateway.labels import LabelKind, identity_headers, shown_for, trust_state_of
from voipgw.gateway.legs import (
    INSIDE_EVENT_PT,
    INSIDE_OFFER,
    Switchboard,
    bind_inside,
    end_bridge,
    pick_inside_codec,
    start_inside_media,
)
from voipgw.gateway.model import Bridge, InsideUser
from voipgw.gateway.statuses import SIP_PHRASES, code_of
from voipgw.gateway.tones import play_ringback
from voipgw.leg import Leg
from voipgw.logutil import RateLimitedLog
from voipgw.probes import RevealPoint
from voipgw.sdp import SdpError, build_sdp, parse_sdp
from voipgw.sip import Answered, Ended, Failed, IncomingCall, OutgoingCall, Ringing, Zone

log = logging.getLogger("voipgw.gateway.b2bua")  # the gateway's log lines keep the name operators filter on
_unverifiable = RateLimitedLog(log)
"""A withheld SAS reveal is an attack a far end or the PBX can repeat per call: one line per interval."""
PEER_REFUSED_CODE = 488
"""How a call whose key exchange the far end refused after our answer is counted (its BYE's Reason cause)."""


async def inbound_setup(board: Switchboard, bridge: Bridge, user: InsideUser, incoming: IncomingCall) -> None:
    """Settle the key exchange in the outside early dialog (183), wait for the caller's SAS, ring the inside phone
    showing it, and answer the outside call only when the inside phone answers; every final status of the inside
    phone reaches the caller as itself. The bridge is then up, or failed."""
    assert board.stack is not None
    policy = board.config.policy_for(user.name, normalize_aor(incoming.from_aor))
    bridge.policy = policy.value
    leg = board.outside_leg(bridge, user, policy)
    # The outside caller hears a ringback we make (sealed like any audio) while the inside phone rings.
    out = await leg.progress(incoming, source=bridge.to_outside, sink=bridge.to_inside)
    bridge.outside = out
    rec = out.record
    if rec.finished:
        bridge.fail(f"outside leg: {rec.reason}")
        if rec.security is Security.REFUSED:  # the leg refused the INVITE (and logged it, rate-limited)
            bridge.refused = True
            board.count_refused(code_of(rec.reason))
        return
    t_early = time.monotonic()
    secure = rec.security is not Security.NOT_SECURE
    if secure:
        await leg.wait_sas(board.config.sas_wait_s)
    bridge.sas_wait_ms = (time.monotonic() - t_early) * 1e3
    sas_on_display = rec.sas
    bridge.sas_told = sas_on_display is not None  # the ringing display shows it
    if rec.finished:
        bridge.fail(f"outside leg: {rec.reason}")
        if rec.security is Security.REFUSED:  # the caller refused our answer (tampered, or a key it blocks)
            bridge.refused = True
            board.count_refused(PEER_REFUSED_CODE)
        return
    # Never the From display name: the caller chose it, the PBX may rewrite it, and nothing signs it.
    name = await contact_name(leg.context.trust, rec)  # the user's own name for the signed AOR, if any
    shown = shown_for(rec.security, trust_state_of(rec.trust_state), rec.sas, rec.remote_aor, name)
    bridge.display, bridge.label = shown.text, shown.kind.value
    if shown.kind is LabelKind.UNVERIFIABLE:
        _unverifiable("no-sas", logging.WARNING,
                      "gateway call %s: no SAS reveal from %s within %g s: ringing %s as unverifiable %r",
                      rec.call_id, rec.remote_aor, board.config.sas_wait_s, user.name, shown.text)  # fmt: skip
    # Its payload type is the inside phone's pick among those we offer: unknown until the answer, and the phone
    # sends its first packet as it answers (before we have read the 200 OK). Held until then, not refused.
    try:
        ours = offer_crypto(board.config.inside_srtp, user.contact)
    except InsideSrtpRefused as exc:
        bridge.fail(f"inside phone: {exc.why}")
        leg.decline(500, "Server Internal Error", warning=f"voipgw gateway: {exc.why}")
        return
    stream = await bind_inside(board.config.zones, board.config.listen_host, payload_type=None)
    bridge.inside_media = stream
    port = stream.local[1]
    sid = bridge.inside_sdp[0]
    ringing = asyncio.Event()
    ringback = asyncio.ensure_future(play_ringback(bridge, ringing)) if secure else None
    inside_rec = bridge.inside
    inside_rec.local_aor, inside_rec.remote_aor = rec.remote_aor, user.contact
    reveal_at = leg.reveal_point()

    def offer(call_id: str) -> str:
        inside_rec.call_id = call_id
        return build_sdp(
            stream.local[0],
            port,
            INSIDE_OFFER,
            session_id=sid,
            telephone_event_pt=INSIDE_EVENT_PT,
            crypto=ours.render() if ours is not None else None,
            savp=offer_profile(board.config.inside_srtp),
            cbr_opus=True,  # pass-through seals the phone's packets as they are: equal frames need CBR
        )

    inside_rec.apply(CallEvent.SEND_INVITE)
    try:
        inside = await board.stack.place_call(
            user.contact,
            f"sip:{rec.remote_aor}",
            offer,
            zone=Zone.INSIDE,
            display_name=bridge.display,
            timeout_s=board.config.no_answer_timeout_s,
            headers=identity_headers(bridge.display, rec.remote_aor, "calling"),
        )
        bridge.inside_sip = inside
        log.log(
            logging.WARNING if not secure else logging.INFO,
            "gateway call %s: %s -> %s shown as %r", rec.call_id, rec.remote_aor, user.name, bridge.display,
        )  # fmt: skip
        answered = asyncio.ensure_future(_ring_inside(inside, inside_rec, leg, incoming, reveal_at))
        outside_gone = asyncio.ensure_future(out.done.wait())
        await asyncio.wait({answered, outside_gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ringing.set()
        if ringback is not None:
            await ringback
        bridge.to_outside.frames.clear()
        bridge.to_inside.frames.clear()  # the caller's early audio was for nobody: the phone had not answered
    if not answered.done():
        bridge.fail(f"outside: {rec.reason or 'caller hung up'} while the inside phone rang")
        inside.hangup()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(answered, 2.0)
        outside_gone.cancel()
        return
    outside_gone.cancel()
    ev = answered.result()
    if not isinstance(ev, Answered):
        code, phrase, cause = _final_status(ev)
        bridge.fail(f"inside phone: {ev.code} {ev.reason}" if isinstance(ev, Failed) else f"inside phone: {ev.reason}")
        leg.decline(code, phrase, cause=cause)
        return
    try:
        remote = parse_sdp(ev.remote_sdp)
    except SdpError as exc:
        remote = None
        why = f"unusable answer from the inside phone: {exc.reason}"
    codec = pick_inside_codec(remote.codecs) if remote is not None else None
    if remote is None or codec is None:
        bridge.fail(why if remote is None else "no common codec with the inside phone")
        leg.decline(500, "Server Internal Error", warning=f"voipgw gateway: {bridge.reason}")
        end_bridge(bridge, bridge.reason)
        return
    if out.record.finished:
        bridge.fail()
        end_bridge(bridge, "outside: caller hung up as the inside phone answered")
        return
    try:
        crypto = settle_answer(board.config.inside_srtp, ours, remote)
    except InsideSrtpRefused as exc:
        bridge.fail(f"inside phone: {exc.why}")
        leg.decline(500, "Server Internal Error", warning=f"voipgw gateway: {exc.why}")
        end_bridge(bridge, bridge.reason)
        return
    await start_inside_media(bridge, stream, remote, codec, crypto, board.registered_source(user.name))
    # Only now, as the inside phone has answered, does the PBX see a 200 OK.
    await leg.accept()
    leg.reveal()  # a no-op when it rang already; else (a suspected prober, or no 180) it reveals now
    if inbound_announces(rec.security, sas_on_display):  # the reveal came after the phone rang: say it now
        board.spawn(start_announcement(bridge, board.config.speak_sas))


async def _ring_inside(
    inside: OutgoingCall, record: CallRecord, leg: Leg, outside: IncomingCall, reveal_at: RevealPoint
) -> Answered | Ended | Failed:
    """Follow the inside leg to its final answer. Its first 18x is the callee's ring point: the phone shows the
    SAS, so our SAS contribution goes out now (unless this caller is a suspected prober: then at the answer), and
    the caller is told it rings (a 180 in the outside early dialog)."""
    rang = False
    while True:
        ev = await inside.next_event()
        if isinstance(ev, Answered):
            record.apply(CallEvent.ANSWERED, security=Security.NOT_SECURE)
            return ev
        if isinstance(ev, Failed):
            record.apply(CallEvent.REFUSED)
            return ev
        if isinstance(ev, Ended):
            record.apply(CallEvent.HUNG_UP)
            return ev
        if isinstance(ev, Ringing) and not rang:
            rang = True
            record.apply(CallEvent.RINGING)
            if reveal_at is RevealPoint.RING:
                leg.reveal()
            outside.ring()


def _phrase(text: str) -> str | None:
    """The phone's own reason phrase, passed on when it is a plain one (printable ASCII, short)."""
    ok = text and len(text) <= 64 and text.isascii() and text.isprintable()
    return text if ok else None


def _final_status(ev: Failed | Ended) -> tuple[int, str, tuple[int, str] | None]:
    """What the outside caller is told when the inside phone did not answer: its own final status (486, 603,
    404...), 480 when our ring timer gave up or the phone's leg ended without one; its reason as RFC 3326 cause."""
    if isinstance(ev, Failed) and 400 <= ev.code <= 699 and ev.code != 408:
        phrase = _phrase(ev.reason) or SIP_PHRASES.get(ev.code, "Declined")
        return ev.code, phrase, (ev.code, ev.cause or phrase)
    return 480, SIP_PHRASES[480], (480, "the phone did not answer")
