"""Regenerate the gateway's spoken prompts (voipgw/gateway/prompts/*.wav) with espeak-ng.

Run once by a developer after changing a word or the SAS alphabet, then commit the WAVs:

    PYTHONPATH=. .venv/bin/python scripts/make_prompts.py

espeak-ng is needed here only: the gateway plays the committed files (package data) and never synthesizes speech
at run time, and neither tests nor CI run this script. Each prompt is mono int16 at ``PROMPT_RATE`` (8 kHz,
as desk phones speak; the gateway resamples to its pipes' rate when it loads them), trimmed of leading and
trailing silence and normalized to one level: the whole set is about 300 KB.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from voipgw.audio.wav import float_to_int16, read_wav_raw, resample, write_wav
from voipgw.gateway.prompts import PROMPT_RATE, SPOKEN, prompt_file

OUT = Path(__file__).resolve().parent.parent / "voipgw" / "gateway" / "prompts"
VOICE = "en-us"
SPEED_WPM = 175
PEAK = 0.5
"""Peak level of every prompt (-6 dBFS): as loud as the gateway's tones, never clipping through a codec."""
TRIM_LEVEL = 0.01
"""Samples quieter than this fraction of full scale at either end are silence and trimmed."""


def synthesize(text: str) -> np.ndarray:
    """``text`` spoken by espeak-ng, as float samples at PROMPT_RATE, trimmed and normalized."""
    wav = subprocess.run(
        ["espeak-ng", "-v", VOICE, "-s", str(SPEED_WPM), "--stdout", text], capture_output=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "espeak.wav"
        path.write_bytes(wav)
        samples, rate = read_wav_raw(path)
    mono = resample(samples[:, 0], rate, PROMPT_RATE)
    loud = np.flatnonzero(np.abs(mono) > TRIM_LEVEL)
    if len(loud) == 0:
        raise SystemExit(f"espeak-ng produced silence for {text!r}")
    mono = mono[loud[0] : loud[-1] + 1]
    return np.asarray(mono * (PEAK / float(np.max(np.abs(mono)))))


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    if shutil.which("espeak-ng") is None:
        print("espeak-ng is not installed (apt-get install espeak-ng)", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    total = 0
    for key, text in SPOKEN.items():
        path = OUT / prompt_file(key)
        write_wav(path, float_to_int16(synthesize(text)), PROMPT_RATE)
        total += path.stat().st_size
        print(f"{path.name:24} {text!r}")
    print(f"{len(SPOKEN)} prompts, {total / 1024:.0f} KiB in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
