"""The tones the gateway makes itself: the cue an inside phone hears at the answer (one per ``Cue``, before the
spoken SAS: ``voipgw.gateway.announce``) and the ringback an inbound outside caller hears (sealed) while the inside
phone rings. Generates PCM into a bridge's pipes; never reads or sends a packet."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from voipgw.audio.opus import FRAME_SAMPLES, SAMPLE_RATE
from voipgw.audio.pcm import Pcm
from voipgw.gateway.model import Bridge
from voipgw.gateway.pipes import PcmPipe

Pattern = tuple[tuple[float, float], ...]
"""A tone cue: ``(Hz, seconds)`` steps, 0 Hz being a pause."""

SECURE_CUE: Pattern = ((660.0, 0.12), (0.0, 0.06), (880.0, 0.12), (0.0, 0.1))
"""The "sealed" cue: two short rising beeps. Played for a known (unverified) contact, and as the start of the
verified and first-contact cues; never for a changed key."""
VERIFIED_CUE: Pattern = (*SECURE_CUE[:-1], (0.0, 0.04), (1320.0, 0.12), (0.0, 0.04))
"""Sealed, and the key is one a person verified: the two rising beeps and a third, higher one."""
FIRST_CONTACT_CUE: Pattern = (*SECURE_CUE[:-1], (0.0, 0.04), (523.0, 0.12), (0.0, 0.04))
"""Sealed, first call with this key (trusted on first use): the two rising beeps, then a low one. Each cue is
short (0.5 s): the far end is not heard while it plays."""
KEY_CHANGED_CUE: Pattern = ((1000.0, 0.1), (0.0, 0.03), (500.0, 0.1), (0.0, 0.03)) * 3 + ((0.0, 0.06),)
"""The far end's identity key is not the one we knew: a falling two-tone alarm, three times. It shares no
frequency with the sealed cue (660 and 880 Hz), so the two can never be confused, by ear or by a test."""
UNVERIFIABLE_CUE: Pattern = ((440.0, 0.25), (0.0, 0.08), (440.0, 0.25), (0.0, 0.06))
"""Sealed, but the SAS never arrived (a withheld reveal): two long flat beeps, then "no code"."""
NOT_SECURE_CUE: Pattern = ((350.0, 0.15), (0.0, 0.1), (350.0, 0.15), (0.0, 0.1), (350.0, 0.15), (0.0, 0.1))
"""A NOT SECURE (opportunistic) call: three low beeps, unlike any ringback or busy tone."""
CONFIRMED_CUE: Pattern = ((880.0, 0.08), (0.0, 0.04), (1320.0, 0.15), (0.0, 0.1))
"""``*1`` was taken (the contact is now verified): a short high chirp, then "confirmed"."""
RINGBACK_HZ = 425.0
RINGBACK_ON_S, RINGBACK_OFF_S = 1.0, 4.0
"""The ringback (ETSI style) an inbound outside caller hears, sealed, while the inside phone rings."""
TONE_LEVEL = 8000
TONE_QUEUE = 3
"""Frames a generated tone keeps queued ahead of the pacing loop that reads them (60 ms)."""


def tone_samples(pattern: Pattern) -> Pcm:
    """The samples of ``(Hz, seconds)`` tones (0 Hz = a pause) at the pipes' rate."""
    parts = []
    for hz, seconds in pattern:
        t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        parts.append(TONE_LEVEL * np.sin(2 * np.pi * hz * t) if hz else np.zeros(len(t)))
    return np.concatenate(parts).astype(np.int16)


def frames_of(pcm: Pcm) -> list[Pcm]:
    """20 ms frames of ``pcm``, the last one padded with silence."""
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % FRAME_SAMPLES, dtype=np.int16)])
    return list(pcm.reshape(-1, FRAME_SAMPLES))


def tone_frames(pattern: Pattern) -> list[Pcm]:
    """20 ms frames of a tone pattern, the last one padded with silence."""
    return frames_of(tone_samples(pattern))


async def feed(pipe: PcmPipe, frame: Pcm) -> bool:
    """Queue one generated frame once the reading stream has room (False if it stopped reading)."""
    deadline = time.monotonic() + 1.0
    while len(pipe.frames) >= TONE_QUEUE:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    pipe.frames.append(frame)
    return True


async def play_frames(pipe: PcmPipe, frames: list[Pcm]) -> None:
    """Play frames of our own (a cue, the spoken SAS) into a closed pipe (the other leg's audio is dropped
    meanwhile), then open it."""
    try:
        for frame in frames:
            if not await feed(pipe, frame):
                return
    finally:
        pipe.open = True


async def play_ringback(bridge: Bridge, stop: asyncio.Event) -> None:
    """Ringback cadence into the (still closed) pipe to the outside leg until ``stop`` is set."""
    cycle = tone_frames(((RINGBACK_HZ, RINGBACK_ON_S), (0.0, RINGBACK_OFF_S)))
    while not stop.is_set():
        for frame in cycle:
            if stop.is_set() or not await feed(bridge.to_outside, frame):
                return
            bridge.ringback_frames += 1
