"""What the inside phone hears when a gateway call is answered: a cue chosen from the outside leg's trust verdict
(``choose_cue``, pure, table-tested), then the SAS spoken in band from the shipped prompts, so an unmodified phone
learns what the far end's screen shows. Also the short confirmation after ``*1``.

It decides and renders; queuing the frames into the bridge's pipe is ``tones.play_frames``'s job. It never
sends a packet and never writes the contact store.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from voipgw.audio.codecs import PCM_RATE
from voipgw.audio.opus import OpusEncoder
from voipgw.audio.pcm import Pcm
from voipgw.call import CallRecord, Security
from voipgw.gateway.model import Bridge
from voipgw.gateway.pipes import OpusRelay
from voipgw.gateway.prompts import PromptMissing, load_prompt, silence, symbol_key
from voipgw.gateway.tones import (
    CONFIRMED_CUE,
    FIRST_CONTACT_CUE,
    KEY_CHANGED_CUE,
    NOT_SECURE_CUE,
    SECURE_CUE,
    UNVERIFIABLE_CUE,
    VERIFIED_CUE,
    Pattern,
    frames_of,
    play_frames,
    tone_samples,
)
from voipgw.trust import TrustState

log = logging.getLogger("voipgw.gateway.b2bua")  # the gateway's log lines keep the name operators filter on

REVEAL_WAIT_S = 3.0
"""How long the announcement waits for a SAS not known at the answer (an inbound caller's late reveal) before it
says "no code" instead. The inside phone hears nothing of the far end meanwhile."""
FRAME_S = 0.02
GAP_S = 0.12
"""Silence between two spoken words."""
AFTER_CUE_S = 0.25
"""Silence between the tone cue and the first word."""


class Cue(enum.Enum):
    """What the inside phone is told about the far end at the answer (the value is the snapshot's ``cue``)."""

    VERIFIED = "verified"
    """Sealed, and this very key was verified by a person (SAS confirmed, safety number, admin)."""
    KNOWN = "known"
    """Sealed, a key we have seen before, never verified: the plain "sealed" cue."""
    FIRST_CONTACT = "first contact"
    """Sealed, the first call with this key (trusted on first use)."""
    KEY_CHANGED = "key changed"
    """Sealed with a key that is not the one we knew (allowed by policy): never the "sealed" cue."""
    UNVERIFIABLE = "unverifiable"
    """Sealed, but the SAS never arrived: nothing to compare (a withheld reveal)."""
    NOT_SECURE = "not secure"
    """Clear audio (policy ``opportunistic``, the far end has no voipgw)."""


@dataclass(frozen=True)
class Tone:
    pattern: Pattern


@dataclass(frozen=True)
class Say:
    key: str
    """A prompt key (``voipgw.gateway.prompts.SPOKEN``)."""


Part = Tone | Say

_T = TrustState
CUES: dict[tuple[Security, TrustState | None], Cue] = {
    (Security.SECURE_VERIFIED, _T.KNOWN): Cue.VERIFIED,
    (Security.SECURE_VERIFIED, None): Cue.VERIFIED,
    (Security.SECURE_UNVERIFIED, _T.KNOWN): Cue.KNOWN,
    (Security.SECURE_UNVERIFIED, None): Cue.KNOWN,
    (Security.SECURE_UNVERIFIED, _T.FIRST_CONTACT): Cue.FIRST_CONTACT,
    (Security.KEY_CHANGED, _T.KEY_CHANGED): Cue.KEY_CHANGED,
    (Security.KEY_CHANGED, None): Cue.KEY_CHANGED,
    (Security.KEY_CHANGED, _T.KNOWN): Cue.KEY_CHANGED,
    (Security.SECURE_UNVERIFIED, _T.KEY_CHANGED): Cue.KEY_CHANGED,
    (Security.SECURE_VERIFIED, _T.KEY_CHANGED): Cue.KEY_CHANGED,
}
"""(the leg's security, the contact store's trust state) -> cue. Any key change wins over everything else; a leg
without a contact store (None) is "known" unless verified."""
NEEDS_SAS = frozenset({Cue.KNOWN, Cue.FIRST_CONTACT})
"""Cues that become UNVERIFIABLE without a SAS. A verified key needs no SAS (a man in the middle cannot hold
it), and a key change stays the louder KEY_CHANGED."""

CUE_TONES: dict[Cue, Pattern] = {
    Cue.VERIFIED: VERIFIED_CUE,
    Cue.KNOWN: SECURE_CUE,
    Cue.FIRST_CONTACT: FIRST_CONTACT_CUE,
    Cue.KEY_CHANGED: KEY_CHANGED_CUE,
    Cue.UNVERIFIABLE: UNVERIFIABLE_CUE,
    Cue.NOT_SECURE: NOT_SECURE_CUE,
}
CUE_WORDS: dict[Cue, tuple[str, ...]] = {
    Cue.VERIFIED: ("verified",),
    Cue.KNOWN: (),
    Cue.FIRST_CONTACT: ("new-contact",),
    Cue.KEY_CHANGED: ("key-changed",),
    Cue.UNVERIFIABLE: ("no-code",),
    Cue.NOT_SECURE: ("not-secure",),
}


def choose_cue(security: Security, trust_state: str | None, sas: str | None) -> Cue:
    """The cue for an answered outside leg (``CallRecord.security``, ``.trust_state``, ``.sas``)."""
    if security is Security.NOT_SECURE:
        return Cue.NOT_SECURE
    state = TrustState(trust_state) if trust_state is not None else None
    cue = CUES.get((security, state))
    if cue is None:
        raise ValueError(f"no cue for an answered leg in {security.value!r} / {trust_state!r}")
    return Cue.UNVERIFIABLE if cue in NEEDS_SAS and not sas else cue


def announcement(cue: Cue, sas: str | None, speak: bool = True) -> tuple[Part, ...]:
    """The cue's tone; with ``speak`` (``B2buaSettings.speak_sas``) its words, then (on a sealed call with a SAS)
    "code" and one word per SAS symbol."""
    parts: list[Part] = [Tone(CUE_TONES[cue])]
    if not speak:
        return tuple(parts)
    parts += [Say(w) for w in CUE_WORDS[cue]]
    if cue not in (Cue.NOT_SECURE, Cue.UNVERIFIABLE) and sas:
        parts += [Say("code"), *(Say(symbol_key(c)) for c in sas.lower())]
    return tuple(parts)


def confirmation(speak: bool = True) -> tuple[Part, ...]:
    """What the inside phone hears after ``*1`` was taken."""
    return (Tone(CONFIRMED_CUE), Say("confirmed")) if speak else (Tone(CONFIRMED_CUE),)


def inbound_announces(security: Security, sas_on_display: str | None) -> bool:
    """Whether an inbound call's callee is told at the answer: only when its ringing display could not show the
    SAS (the reveal came late); a display that showed label and SAS said it all, and a NOT SECURE one too."""
    return security is not Security.NOT_SECURE and sas_on_display is None


def render(parts: tuple[Part, ...]) -> list[Pcm]:
    """20 ms frames at the pipes' rate. Reads prompt files the first time (call it in a thread); a missing
    prompt is skipped with one log line (the tone cue alone still tells the call's state)."""
    gap = silence(GAP_S)
    pieces: list[Pcm] = []
    for part in parts:
        if isinstance(part, Tone):
            # The far end is heard as soon as the cue ends when no words follow: no pause after it then.
            pieces += [tone_samples(part.pattern), silence(AFTER_CUE_S if len(parts) > 1 else 0.0)]
            continue
        try:
            pieces += [load_prompt(part.key, PCM_RATE), gap]
        except (PromptMissing, KeyError) as exc:
            log.error("gateway: cannot speak %r: %s (a broken install?)", part, exc)
    frames = frames_of(np.concatenate(pieces) if pieces else silence(0.02))
    for frame in frames:
        if not frame.any():
            # An all-zero frame reads as "nothing of our own to play" to a pass-through leg, which then stops
            # pacing for good (pipes._SwitchEncoder): a pause inside the announcement must not end it. One
            # sample of 1 LSB (-90 dBFS) is inaudible.
            frame[0] = 1
    return frames


def start_announcement(bridge: Bridge, speak: bool) -> Coroutine[Any, Any, None]:
    """Close the pipe to the inside phone at once (what the far end says meanwhile is dropped: the pipe must be
    closed before the inside leg's next tick, or a pass-through leg stops pacing our frames), and return the
    coroutine that waits for a late SAS, chooses the cue, plays it (and with ``speak`` the words and the SAS), and
    reopens the pipe (run it in the background)."""
    assert bridge.outside is not None
    bridge.to_inside.open = False
    return _announce(bridge, bridge.outside.record, speak)


async def _announce(bridge: Bridge, rec: CallRecord, speak: bool) -> None:
    try:
        if rec.security is not Security.NOT_SECURE:
            deadline = time.monotonic() + REVEAL_WAIT_S
            while rec.sas is None and not rec.finished and time.monotonic() < deadline:
                await asyncio.sleep(0.02)  # the outside leg polls its session events (voipgw.leg)
        cue = choose_cue(rec.security, rec.trust_state, rec.sas)
        bridge.cue = cue.value
        if cue is Cue.UNVERIFIABLE:
            log.warning("gateway call %s: no SAS from %s within %g s of the answer: told the inside phone "
                        "\"no code\"", rec.call_id, rec.remote_aor, REVEAL_WAIT_S)  # fmt: skip
        parts = announcement(cue, rec.sas, speak)
        frames = await asyncio.to_thread(render, parts)
    except BaseException:
        bridge.to_inside.open = True
        raise
    await play_frames(bridge.to_inside, frames)
    bridge.sas_told = bridge.sas_told or Say("code") in parts  # *1 is taken from now on


async def play_confirmation(bridge: Bridge, speak: bool) -> None:
    """``*1`` was taken: the short confirmation, into the pipe to the inside phone (closed while it plays), or,
    once an Opus pass-through bridge relays frames directly (the inside leg no longer paces), encoded here and
    sent straight to the phone."""
    relay = bridge.relay_in
    if bridge.passthrough.on and relay.flowing:
        await _send_direct(relay, await asyncio.to_thread(render, confirmation(speak)))
        return
    bridge.to_inside.open = False
    try:
        frames = await asyncio.to_thread(render, confirmation(speak))
    except BaseException:
        bridge.to_inside.open = True
        raise
    await play_frames(bridge.to_inside, frames)


async def _send_direct(relay: OpusRelay, frames: list[Pcm]) -> None:
    """Encode and send ``frames`` every 20 ms on the relay's sending leg; the far end's frames are dropped
    meanwhile (as a closed pipe drops them), then flow again."""
    sender, receiver = relay.sender, relay.receiver
    if sender is None or receiver is None:
        return
    forward = receiver.relay
    receiver.relay = _drop
    encoder = OpusEncoder()
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        for i, frame in enumerate(frames):
            sender.send_payload(encoder.encode(frame))
            await asyncio.sleep(max(0.0, start + (i + 1) * FRAME_S - loop.time()))  # paced, without drift
    finally:
        receiver.relay = forward


def _drop(payload: bytes) -> None:
    return None
