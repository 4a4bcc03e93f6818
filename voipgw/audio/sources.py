"""Audio sources and sinks for a media stream, one 20 ms frame (960 int16 samples at 48 kHz) at a time.

Sources: a WAV/array player, a tone generator, silence. Sinks: memory and a WAV recorder.
Devices (``device.py``) follow the same protocols. Never blocks the loop: the recorder writes to its file about
once a second (one append to the page cache), never once per frame.
"""

from __future__ import annotations

import math
import os
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np

from voipgw.audio.opus import FRAME_SAMPLES, SAMPLE_RATE
from voipgw.audio.pcm import Pcm
from voipgw.audio.wav import read_wav, wav_header


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
    """Plays a 48 kHz mono int16 array frame by frame; the last frame is zero-padded. At the end it stops (None),
    or with ``then_silence`` goes on with silence frames and sets ``finished`` (a call stays up and keeps sending
    media, so the peer's no-media watchdog does not hang up)."""

    def __init__(self, pcm: Pcm, *, loop: bool = False, lead_silence: float = 0.0, then_silence: bool = False) -> None:
        lead = np.zeros(int(lead_silence * SAMPLE_RATE), dtype=np.int16)
        self.pcm = np.concatenate([lead, np.asarray(pcm, dtype=np.int16)])
        self.loop = loop
        self.then_silence = then_silence
        self.finished = False
        """True once the whole array was played (never with ``loop``)."""
        self._pos = 0

    def read_frame(self) -> Pcm | None:
        if self._pos >= len(self.pcm):
            if not self.loop or len(self.pcm) == 0:
                self.finished = True
                return np.zeros(FRAME_SAMPLES, dtype=np.int16) if self.then_silence else None
            self._pos = 0
        chunk = self.pcm[self._pos : self._pos + FRAME_SAMPLES]
        self._pos += FRAME_SAMPLES
        if len(chunk) < FRAME_SAMPLES:
            chunk = np.concatenate([chunk, np.zeros(FRAME_SAMPLES - len(chunk), dtype=np.int16)])
        return chunk

    def close(self) -> None:
        self._pos = len(self.pcm)
        self.then_silence = False  # a closed player sends nothing more


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


RECORD_FILE_MODE = 0o600
"""Recordings are private: what the other side said is as sensitive as the key files (mode 0600 as well)."""
RECORD_FLUSH_FRAMES = 50
"""Frames (1 s) gathered in memory between two appends to the file; a crash loses at most this much."""


class WavRecorder:
    """Streams a 48 kHz mono 16-bit WAV to ``path`` (created or truncated at once, mode 0600): the frames go out
    about once a second and the header's sizes are updated each time, so the file is a valid WAV of everything up
    to the last flush even if the process is killed. Opening raises OSError (the caller checks before a call).
    Closed without any frame, the file is removed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), RECORD_FILE_MODE)
        try:
            os.fchmod(fd, RECORD_FILE_MODE)  # an existing file keeps its old mode through O_TRUNC otherwise
            self._fh = os.fdopen(fd, "r+b", buffering=0)
        except BaseException:
            os.close(fd)
            raise
        self._fh.write(wav_header(0))
        self._pending: list[bytes] = []
        self._data_bytes = 0
        self.frames = 0
        self.error: OSError | None = None
        """The first write failure (disk full...): recording stops there, the call goes on."""

    def write_frame(self, pcm: Pcm) -> None:
        self._pending.append(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
        self.frames += 1
        if len(self._pending) >= RECORD_FLUSH_FRAMES:
            self._flush()

    def _flush(self) -> None:
        if not self._pending or self._fh.closed or self.error is not None:
            self._pending.clear()
            return
        body = b"".join(self._pending)
        self._pending.clear()
        try:
            self._fh.seek(0, os.SEEK_END)
            self._fh.write(body)
            self._data_bytes += len(body)
            self._fh.seek(0)
            self._fh.write(wav_header(self._data_bytes))
        except OSError as exc:
            self.error = exc

    def close(self) -> None:
        """Write what is left; a recording that never got a frame (a call refused or failed before any media) is
        removed rather than left as an empty file."""
        if self._fh.closed:
            return
        self._flush()
        self._fh.close()
        if self.frames == 0:
            self.path.unlink(missing_ok=True)
