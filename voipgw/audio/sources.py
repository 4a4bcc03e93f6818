"""Audio sources and sinks for a media stream, one 20 ms frame (960 int16 samples at 48 kHz) at a time.

Sources: a WAV/array player, a tone generator, silence. Sinks: memory and a WAV recorder.
Devices (``device.py``) follow the same protocols. Never blocks the loop (no file I/O per frame).
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np

from voipgw.audio.opus import FRAME_SAMPLES, SAMPLE_RATE
from voipgw.audio.pcm import Pcm
from voipgw.audio.wav import read_wav, write_wav


def speech_sample() -> Path:
    """The speech clip shipped with voipgw (``voipgw/data/speech.wav``): the demo's and the benchmarks' audio."""
    with resources.as_file(resources.files("voipgw") / "data" / "speech.wav") as path:
        return Path(path)


class AudioSource(Protocol):
    def read_frame(self) -> Pcm | None:
        """The next 960-sample frame, or None when the source is exhausted."""
        ...

    def close(self) -> None: ...


class AudioSink(Protocol):
    def write_frame(self, pcm: Pcm) -> None:
        """Accept one 960-sample frame (called once per tick, silence included)."""
        ...

    def close(self) -> None: ...


class ArrayPlayer:
    """Plays a 48 kHz mono int16 array frame by frame; the last frame is zero-padded."""

    def __init__(self, pcm: Pcm, *, loop: bool = False, lead_silence: float = 0.0) -> None:
        lead = np.zeros(int(lead_silence * SAMPLE_RATE), dtype=np.int16)
        self.pcm = np.concatenate([lead, np.asarray(pcm, dtype=np.int16)])
        self.loop = loop
        self._pos = 0

    def read_frame(self) -> Pcm | None:
        if self._pos >= len(self.pcm):
            if not self.loop or len(self.pcm) == 0:
                return None
            self._pos = 0
        chunk = self.pcm[self._pos : self._pos + FRAME_SAMPLES]
        self._pos += FRAME_SAMPLES
        if len(chunk) < FRAME_SAMPLES:
            chunk = np.concatenate([chunk, np.zeros(FRAME_SAMPLES - len(chunk), dtype=np.int16)])
        return chunk

    def close(self) -> None:
        self._pos = len(self.pcm)


class WavPlayer(ArrayPlayer):
    """Plays a WAV file (any common rate/width/channels, resampled to 48 kHz mono once at open)."""

    def __init__(self, path: str | Path, *, loop: bool = False, lead_silence: float = 0.0) -> None:
        self.path = Path(path)
        super().__init__(read_wav(self.path), loop=loop, lead_silence=lead_silence)


class ToneSource:
    """A sine tone, optionally for a bounded duration."""

    def __init__(self, freq: float = 440.0, amplitude: float = 0.3, seconds: float | None = None) -> None:
        self.freq = freq
        self.amplitude = amplitude
        self._frames_left = None if seconds is None else math.ceil(seconds * SAMPLE_RATE / FRAME_SAMPLES)
        self._n = 0

    def read_frame(self) -> Pcm | None:
        if self._frames_left is not None:
            if self._frames_left <= 0:
                return None
            self._frames_left -= 1
        t = (np.arange(FRAME_SAMPLES) + self._n) / SAMPLE_RATE
        self._n += FRAME_SAMPLES
        return np.round(self.amplitude * 32767 * np.sin(2 * np.pi * self.freq * t)).astype(np.int16)

    def close(self) -> None:
        self._frames_left = 0


class SilenceSource:
    """Endless silence (a receive-only stream still sends frames so the peer's counters and latching work)."""

    def read_frame(self) -> Pcm | None:
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def close(self) -> None:
        return None


class MemorySink:
    """Keeps every frame written; ``pcm`` is the whole recording."""

    def __init__(self) -> None:
        self._frames: list[Pcm] = []

    def write_frame(self, pcm: Pcm) -> None:
        self._frames.append(pcm)

    @property
    def frames(self) -> int:
        return len(self._frames)

    @property
    def pcm(self) -> Pcm:
        if not self._frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._frames)

    def close(self) -> None:
        return None


class WavRecorder(MemorySink):
    """Records to memory and writes a 48 kHz mono 16-bit WAV on close (no file I/O in the media tick)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._written = False

    def close(self) -> None:
        if not self._written:
            self._written = True
            write_wav(self.path, self.pcm)
