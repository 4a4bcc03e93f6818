"""A bridged gateway call, both legs up: hold and resume re-INVITEs are answered per leg and passed to the other
(no new handshake outside), the inside phone's SAS keys (``*1`` verified, ``*0`` mismatch: ``sas_keys.py``) are
taken out of its digits, a leg whose media died ends the call, and when either leg ends the other is hung up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from voipgw.audio.codecs import OPUS as OPUS_CODEC
from voipgw.gateway.announce import play_confirmation
from voipgw.gateway.legs import end_bridge, reoffer_inside, wait_terminal
from voipgw.gateway.model import B2buaSettings, Bridge
from voipgw.gateway.sas_keys import EXPIRE, HOLD_S, KeyState, SasAction, SasKeys
from voipgw.logutil import RateLimitedLog
from voipgw.sdp import (
    INACTIVE,
    PCMA,
    PCMU,
    RECVONLY,
    SENDONLY,
    SENDRECV,
    Codec,
    SdpError,
    build_sdp,
    hold_direction,
    opus_codec,
    parse_sdp,
)
from voipgw.store.contacts import VerifyMethod
from voipgw.store.errors import ContactStoreError
from voipgw.trust import TrustStore

log = logging.getLogger("voipgw.gateway.b2bua")  # the gateway's log lines keep the name operators filter on

MEDIA_POLL_S = 1.0
_keys_log = RateLimitedLog(log)
"""*1 presses that cannot be taken (a phone may repeat them) are logged through this, one line per kind and
interval."""


async def follow(bridge: Bridge, settings: B2buaSettings, trust: TrustStore | None = None) -> None:
    """Both legs are up: pass hold/resume re-INVITEs across, take the SAS keys out of the inside phone's digits
    (``trust``: the fronted user's contact store), end a call whose media died, and wait until either leg ends,
    then end the other."""
    assert bridge.inside_sip is not None and bridge.outside is not None
    _bridge_reoffers(bridge, settings.listen_host)
    stop_keys = watch_sas_keys(bridge, trust, settings.speak_sas)
    inside_gone = asyncio.ensure_future(wait_terminal(bridge.inside_sip))
    outside_gone = asyncio.ensure_future(bridge.outside.done.wait())
    media_dead = _watch_media(bridge, settings.media_timeout_s)
    try:
        waited: set[asyncio.Future[Any]] = {inside_gone, outside_gone, media_dead}
        await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        # A reason set already is ours (e.g. the shutdown): the legs then end because we hung them up.
        if bridge.reason:
            pass
        elif media_dead.done() and not (inside_gone.done() or outside_gone.done()):
            bridge.reason = media_dead.result()
            log.warning("gateway call %s (%s): %s", bridge.call_id, bridge.user.name, bridge.reason)
        elif inside_gone.done():
            ev = inside_gone.result()
            bridge.reason = f"inside: {ev.reason}" if ev is not None else "inside: ended"
        else:
            bridge.reason = f"outside: {bridge.outside.record.reason or 'ended'}"
        end_bridge(bridge, bridge.reason)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(bridge.outside.done.wait(), 5.0)
    finally:
        stop_keys()
        inside_gone.cancel()
        outside_gone.cancel()
        media_dead.cancel()


def _watch_media(bridge: Bridge, timeout_s: float) -> asyncio.Future[str]:
    """A future that resolves (with the reason) once a leg has received no RTP for ``timeout_s`` while nobody
    holds: a call whose media path is gone must end with a reason, never stay up silent. Checked every
    MEDIA_POLL_S by a timer, not a task (~2 KB a call less, issue 17); cancelling the future stops the timer."""
    loop = asyncio.get_running_loop()
    dead: asyncio.Future[str] = loop.create_future()
    legs = {"inside": bridge.inside_media, "outside": bridge.outside.media if bridge.outside else None}
    last = {name: -1 for name in legs}
    quiet_since = {name: time.monotonic() for name in legs}

    def check() -> None:
        if dead.done():
            return
        now = time.monotonic()
        for name, media in legs.items():
            got = media.stats.frames_received if media is not None else 0
            if got != last[name] or bridge.inside_hold or bridge.outside_hold:
                last[name], quiet_since[name] = got, now
            elif now - quiet_since[name] >= timeout_s:
                dead.set_result(f"no media from the {name} leg for {timeout_s:g} s")
                return
        timer[0] = loop.call_later(MEDIA_POLL_S, check)

    timer = [loop.call_later(MEDIA_POLL_S, check)]
    dead.add_done_callback(lambda _f: timer[0].cancel())
    return dead


# --- the SAS keys ----------------------------------------------------------------------------------------


def watch_sas_keys(bridge: Bridge, trust: TrustStore | None, speak: bool = True) -> Callable[[], None]:
    """On a sealed call, pass the inside phone's digits through the SAS-key machine before they are relayed
    (``legs._bridge_dtmf`` set the relay): ``*1`` and ``*0`` are acted on here and never reach the far end.
    Returns what to call when the call is over (a held ``*`` is then dropped, not relayed)."""
    inside, out = bridge.inside_media, bridge.outside
    if inside is None or out is None or out.session is None:
        return lambda: None  # NOT SECURE: no SAS, so every digit is the far end's
    relay = inside.on_dtmf  # None when the outside leg negotiated no telephone-event: the keys still work
    keys = SasKeys()
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None

    def feed(digit: str) -> None:
        nonlocal timer
        if timer is not None:
            timer.cancel()
            timer = None
        row = keys.feed(digit)
        if relay is not None:
            for d in row.relay:
                relay(d)
        if keys.state is KeyState.STAR:
            timer = loop.call_later(HOLD_S, feed, EXPIRE)
        if row.action is SasAction.CONFIRM:
            bridge.background.spawn(_confirm(bridge, trust, speak))
        elif row.action is SasAction.MISMATCH:
            _mismatch(bridge, trust)

    def stop() -> None:
        if timer is not None:
            timer.cancel()

    inside.on_dtmf = feed
    return stop


async def _confirm(bridge: Bridge, trust: TrustStore | None, speak: bool) -> None:
    """``*1``: the inside user heard the SAS and it matched the far end's: this key becomes verified."""
    assert bridge.outside is not None
    rec = bridge.outside.record
    if not bridge.sas_told or rec.sas is None or rec.remote_identity is None or trust is None:
        # No SAS was given to compare (no reveal, speak_sas off, or pressed before it was spoken), or no store to
        # write: verifying would be a lie.
        why = "no contact store" if trust is None else "the phone was not given the SAS (yet)"
        _keys_log("ignored", logging.WARNING, "gateway call %s: *1 from %s ignored: %s", bridge.call_id,
                  bridge.user.name, why)  # fmt: skip
        return
    if bridge.sas_check is SasAction.CONFIRM:  # pressed again: already written, just say so again
        if bridge.to_inside.open:
            await play_confirmation(bridge, speak)
        return
    try:
        await asyncio.to_thread(
            trust.mark_verified, rec.remote_aor, rec.remote_identity, VerifyMethod.SAS, now=time.time()
        )
    except ContactStoreError as exc:
        _keys_log("store", logging.ERROR, "gateway call %s: *1: cannot mark %s verified for %s: %s",
                  bridge.call_id, rec.remote_aor, bridge.user.name, exc)  # fmt: skip
        return
    bridge.sas_check = SasAction.CONFIRM
    log.info("gateway call %s: %s confirmed the SAS with %s (*1): contact verified", bridge.call_id,
             bridge.user.name, rec.remote_aor)  # fmt: skip
    if bridge.to_inside.open:  # not while the announcement still plays (both would share the pipe)
        await play_confirmation(bridge, speak)


def _mismatch(bridge: Bridge, trust: TrustStore | None) -> None:
    """``*0``: the SAS differs from the far end's: someone may be in the middle. Both legs are hung up at once,
    then the warning is stored with the contact (``voipgw fingerprint`` shows it; any verified flag is lost)."""
    assert bridge.outside is not None
    rec = bridge.outside.record
    bridge.sas_check = SasAction.MISMATCH
    log.warning("gateway call %s: %s reports a SAS MISMATCH with %s (*0): possible man in the middle; "
                "hanging up both legs", bridge.call_id, bridge.user.name, rec.remote_aor)  # fmt: skip
    end_bridge(bridge, "SAS mismatch reported by the inside phone (*0)")
    if trust is not None and rec.remote_identity is not None:
        key = rec.remote_identity
        detail = f"reported by {bridge.user.name}'s phone (*0) in call {bridge.call_id}, SAS {rec.sas}"

        async def record() -> None:
            try:
                await asyncio.to_thread(trust.record_sas_mismatch, rec.remote_aor, key, now=time.time(), detail=detail)
            except ContactStoreError as exc:
                log.error("gateway call %s: cannot record the SAS mismatch: %s", bridge.call_id, exc)

        bridge.background.spawn(record())


# --- hold and resume ------------------------------------------------------------------------------------


def _bridge_reoffers(bridge: Bridge, host: str) -> None:
    """Answer each leg's re-INVITE ourselves and pass its hold state to the other leg as our own re-INVITE.
    The outside leg's re-offers carry no handshake: the sealed session and its keys stay as they are."""
    assert bridge.inside_sip is not None and bridge.outside is not None and bridge.outside.sip is not None
    inside_sip, outside_sip = bridge.inside_sip, bridge.outside.sip

    def on_inside(sdp: str) -> str | None:
        return on_reoffer(bridge, "inside", sdp, host)

    def on_outside(sdp: str) -> str | None:
        return on_reoffer(bridge, "outside", sdp, host)

    inside_sip.reoffer_handler = on_inside
    outside_sip.reoffer_handler = on_outside


def on_reoffer(bridge: Bridge, leg: str, sdp: str, host: str) -> str | None:
    """Our answer to ``leg``'s re-offer (None: 488), passing a hold or resume to the other leg."""
    try:
        remote = parse_sdp(sdp)
    except SdpError as exc:
        log.warning("gateway call %s: unusable %s re-offer (%s): 488", bridge.call_id, leg, exc.reason)
        return None
    codec = _leg_codec(bridge, leg)
    if codec is None or not any(c.name == codec.name for c in remote.codecs):
        log.warning("gateway call %s: the %s re-offer drops our codec: 488", bridge.call_id, leg)
        return None
    codec = next(c for c in remote.codecs if c.name == codec.name)
    if leg == "inside" and not reoffer_inside(bridge, remote):  # an SRTP leg stays SRTP (voipgw.gateway.legs)
        return None
    holds = remote.direction in (SENDONLY, INACTIVE)
    other_holds = bridge.outside_hold if leg == "inside" else bridge.inside_hold
    if holds != (bridge.inside_hold if leg == "inside" else bridge.outside_hold):
        if leg == "inside":
            bridge.inside_hold = holds
        else:
            bridge.outside_hold = holds
        bridge.holds += 1
        other = "outside" if leg == "inside" else "inside"
        log.info(
            "gateway call %s: the %s side %s; passing it to the %s leg",
            bridge.call_id, leg, "holds" if holds else "resumes", other,
        )  # fmt: skip
        _reoffer(bridge, other, hold_direction(local_hold=holds, remote_hold=other_holds), host)
    # We send what the other side says whenever this peer listens; we listen to this peer only while the other
    # side does (a held party hears nobody, so its media need not cross).
    send = remote.direction in (SENDRECV, RECVONLY)
    recv = remote.direction in (SENDRECV, SENDONLY) and not other_holds
    direction = {(True, True): SENDRECV, (True, False): SENDONLY, (False, True): RECVONLY}.get((send, recv), INACTIVE)
    return _leg_sdp(bridge, leg, codec, direction, host)


def _leg_codec(bridge: Bridge, leg: str) -> Codec | None:
    if leg == "inside":
        return bridge.inside_payload
    name = bridge.outside.record.codec if bridge.outside is not None else None
    return {OPUS_CODEC.name: opus_codec(), PCMU: Codec(PCMU, 0, 8000), PCMA: Codec(PCMA, 8, 8000)}.get(name or "")


def _leg_sdp(bridge: Bridge, leg: str, codec: Codec, direction: str, host: str) -> str:
    media = bridge.inside_media if leg == "inside" else bridge.outside.media if bridge.outside else None
    assert media is not None
    ids = bridge.inside_sdp if leg == "inside" else bridge.outside_sdp
    ids[1] += 1
    return build_sdp(
        media.local[0],  # the leg's own zone address (each zone binds its RTP on its own)
        media.local[1],
        [codec],
        direction=direction,
        session_id=ids[0],
        version=ids[1],
        telephone_event_pt=media.telephone_event_pt,
        crypto=bridge.inside_crypto.attribute if leg == "inside" else None,
        savp=bridge.inside_savp,
        cbr_opus=leg == "inside",
    )


def _reoffer(bridge: Bridge, leg: str, direction: str, host: str) -> None:
    codec = _leg_codec(bridge, leg)
    sip = bridge.inside_sip if leg == "inside" else bridge.outside.sip if bridge.outside else None
    if codec is None or sip is None:
        return
    sip.reoffer(_leg_sdp(bridge, leg, codec, direction, host))
