"""The --record sink streams to disk: a valid WAV of everything flushed so far while the call runs (a crash loses at
most a second), mode 0600 even over an existing world-readable file, and every frame after close."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voipgw.audio.opus import FRAME_SAMPLES
from voipgw.audio.sources import RECORD_FLUSH_FRAMES, WavRecorder
from voipgw.audio.wav import read_wav_raw


def _frame(i: int) -> np.ndarray:
    return np.full(FRAME_SAMPLES, i - 100, dtype=np.int16)


def test_recording_is_on_disk_during_the_call_and_complete_after_close(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    rec = WavRecorder(path)
    for i in range(RECORD_FLUSH_FRAMES + 7):
        rec.write_frame(_frame(i))
    samples, rate = read_wav_raw(path)  # read while "the call" still runs
    assert rate == 48000 and samples.shape == (RECORD_FLUSH_FRAMES * FRAME_SAMPLES, 1)
    rec.write_frame(_frame(999))
    rec.close()
    rec.close()  # idempotent
    samples, _ = read_wav_raw(path)
    got = np.round(samples[:, 0] * 32768).astype(np.int16).reshape(-1, FRAME_SAMPLES)
    assert len(got) == RECORD_FLUSH_FRAMES + 8 and rec.frames == len(got)
    assert [int(row[0]) for row in got] == [i - 100 for i in range(RECORD_FLUSH_FRAMES + 7)] + [899]
    assert rec.error is None


def test_recording_is_private_even_over_an_existing_public_file(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    path.write_bytes(b"old recording" * 1000)
    path.chmod(0o644)
    rec = WavRecorder(path)
    assert path.stat().st_mode & 0o777 == 0o600  # at once, before any audio is written
    rec.write_frame(_frame(0))
    rec.close()
    assert path.stat().st_mode & 0o777 == 0o600
    samples, _ = read_wav_raw(path)
    assert samples.shape == (FRAME_SAMPLES, 1)  # truncated: nothing of the old file is left behind the new one


def test_a_recording_without_any_frame_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "refused.wav"
    rec = WavRecorder(path)
    assert path.exists()
    rec.close()
    assert not path.exists()
