"""The tones the gateway makes itself: the cue an inside caller hears at the answer (secure or NOT SECURE) and the
ringback an inbound outside caller hears (sealed) while the inside phone rings. Generates PCM into a bridge's pipes;
never reads or sends a packet."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from voipgw.audio.opus import FRAME_SAMPLES, SAMPLE_RATE
from voipgw.audio.pcm import Pcm
from voipgw.gateway.model import Bridge
from voipgw.gateway.pipes import PcmPipe

SECURE_CUE = ((660.0, 0.12), (0.0, 0.06), (880.0, 0.12), (0.0, 0.1))
"""What an inside caller hears at the answer of a sealed call: two short rising beeps (tone Hz, seconds)."""
NOT_SECURE_CUE = ((350.0, 0.15), (0.0, 0.1), (350.0, 0.15), (0.0, 0.1), (350.0, 0.15), (0.0, 0.1))
"""...and of a NOT SECURE (opportunistic) one: three low beeps, unlike any ringback or busy tone."""
RINGBACK_HZ = 425.0
RINGBACK_ON_S, RINGBACK_OFF_S = 1.0, 4.0
"""The ringback (ETSI style) an inbound outside caller hears, sealed, while the inside phone rings."""
TONE_LEVEL = 8000
TONE_QUEUE = 3
"""Frames a generated tone keeps queued ahead of the pacing loop that reads them (60 ms)."""


def tone_frames(pattern: tuple[tuple[float, float], ...]) -> list[Pcm]:
    """20 ms frames of ``(Hz, seconds)`` tones (0 Hz = a pause), the last one padded with silence."""
    parts = []
    for hz, seconds in pattern:
        t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        parts.append(TONE_LEVEL * np.sin(2 * np.pi * hz * t) if hz else np.zeros(len(t)))
    pcm = np.concatenate(parts)
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % FRAME_SAMPLES)]).astype(np.int16)
    return list(pcm.reshape(-1, FRAME_SAMPLES))


async def feed(pipe: PcmPipe, frame: Pcm) -> bool:
    """Queue one generated frame once the reading stream has room (False if it stopped reading)."""
    deadline = time.monotonic() + 1.0
    while len(pipe.frames) >= TONE_QUEUE:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    pipe.frames.append(frame)
    return True


async def play_cue(pipe: PcmPipe, pattern: tuple[tuple[float, float], ...]) -> None:
    """Play a short cue into a closed pipe (the other leg's audio is dropped meanwhile), then open it."""
    try:
        for frame in tone_frames(pattern):
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
