"""Microphone and speaker through sounddevice (PortAudio), as an AudioSource and an AudioSink.

A machine without a sound card is a normal case: it raises NoAudioDevice with advice, never a traceback.
Never blocks the event loop: PortAudio's callback thread exchanges frames through bounded deques.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import numpy as np

from voipgw.audio.opus import FRAME_SAMPLES, SAMPLE_RATE
from voipgw.audio.pcm import Pcm

MAX_QUEUED_FRAMES = 10
"""Frames buffered between PortAudio and the media loop (200 ms); older frames are dropped beyond that."""

ADVICE = "use --play FILE.wav and/or --record FILE.wav to run without a sound card"


class AudioDeviceError(RuntimeError):
    """A sound device could not be used. ``str()`` is a one-line, user-facing message."""


class NoAudioDevice(AudioDeviceError):
    """There is no usable input or output device (or PortAudio itself is missing)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        self.kind = kind
        self.detail = detail
        why = f" ({detail})" if detail else ""
        super().__init__(f"no audio {kind} device found{why}; {ADVICE}")


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        # sounddevice raises OSError when libportaudio2 is absent.
        raise NoAudioDevice("input/output", f"PortAudio unavailable: {exc}") from None
    return sounddevice


def find_device(kind: str, device: int | str | None = None) -> int:
    """Index of ``device`` (default: the system default) for ``input`` or ``output``; NoAudioDevice if none."""
    if kind not in ("input", "output"):
        raise ValueError(kind)
    sd = _sounddevice()
    try:
        info = sd.query_devices(kind=kind) if device is None else sd.query_devices(device, kind=kind)
    except Exception as exc:  # PortAudioError or ValueError, depending on what PortAudio found
        raise NoAudioDevice(kind, str(exc) or type(exc).__name__) from None
    channels = info.get("max_input_channels" if kind == "input" else "max_output_channels", 0)
    if not channels:
        raise NoAudioDevice(kind, f"device {info.get('name', '?')!r} has no {kind} channels")
    return int(info["index"])


def _open_stream(factory: Any, kind: str, index: int, callback: Any) -> Any:
    """Open and start a 48 kHz mono int16 PortAudio stream of 20 ms blocks; failure is NoAudioDevice."""
    try:
        stream = factory(
            samplerate=SAMPLE_RATE, channels=1, dtype="int16", blocksize=FRAME_SAMPLES, device=index, callback=callback
        )
        stream.start()
    except Exception as exc:
        raise NoAudioDevice(kind, str(exc)) from None
    return stream


class Microphone:
    """Default input device, 48 kHz mono; ``read_frame`` returns silence when PortAudio has nothing yet."""

    def __init__(self, device: int | str | None = None) -> None:
        sd = _sounddevice()
        index = find_device("input", device)
        self._frames: collections.deque[Pcm] = collections.deque(maxlen=MAX_QUEUED_FRAMES)
        self._lock = threading.Lock()
        self._stream = _open_stream(sd.RawInputStream, "input", index, self._callback)
        self.overruns = 0

    def _callback(self, indata: Any, frames: int, _time: Any, status: Any) -> None:
        pcm = np.frombuffer(bytes(indata), dtype=np.int16).copy()
        if len(pcm) != FRAME_SAMPLES:
            pcm = np.resize(pcm, FRAME_SAMPLES)
        with self._lock:
            if len(self._frames) == self._frames.maxlen:
                self.overruns += 1
            self._frames.append(pcm)

    def read_frame(self) -> Pcm | None:
        with self._lock:
            if self._frames:
                return self._frames.popleft()
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


class Speaker:
    """Default output device, 48 kHz mono; plays silence when the media loop has not delivered a frame."""

    def __init__(self, device: int | str | None = None) -> None:
        sd = _sounddevice()
        index = find_device("output", device)
        self._frames: collections.deque[bytes] = collections.deque(maxlen=MAX_QUEUED_FRAMES)
        self._lock = threading.Lock()
        self._silence = bytes(2 * FRAME_SAMPLES)
        self._stream = _open_stream(sd.RawOutputStream, "output", index, self._callback)
        self.underruns = 0

    def _callback(self, outdata: Any, frames: int, _time: Any, status: Any) -> None:
        with self._lock:
            data = self._frames.popleft() if self._frames else None
        if data is None:
            self.underruns += 1
            data = self._silence
        outdata[:] = data[: len(outdata)].ljust(len(outdata), b"\0")

    def write_frame(self, pcm: Pcm) -> None:
        with self._lock:
            self._frames.append(np.ascontiguousarray(pcm, dtype=np.int16).tobytes())

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


def check_audio_devices(need_input: bool, need_output: bool, device: int | str | None = None) -> None:
    """Raise NoAudioDevice before a call starts if a needed device is missing (the CLI's friendly path)."""
    if need_input:
        find_device("input", device)
    if need_output:
        find_device("output", device)
