"""Audio fixtures: the bundled speech sample (espeak-ng + sox), per-test rate variants, tones, silence.

Writes only to the paths it is given (and `voipgw/data/speech.wav` when run as a script); never plays audio.
Regenerate the committed sample with `.venv/bin/python -m tests.testbed.speech`.
Pitfall: espeak-ng writes 22050 Hz with leading and trailing silence; it is trimmed so windows hold speech.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.requires import need

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_SPEECH = REPO_ROOT / "voipgw" / "data" / "speech.wav"
BUNDLED_RATE = 16000
SPEECH_TEXT = (
    "This is a test of the secure call gateway. Alice is calling Bob over an untrusted network, "
    "and only the two of them can hear these words."
)
TOOL_TIMEOUT = 30.0


def _run(argv: list[str]) -> None:
    need(argv[0])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed rc={proc.returncode}: {proc.stderr.strip()}")


def generate_speech(out: Path, rate: int = BUNDLED_RATE, text: str = SPEECH_TEXT) -> Path:
    """Synthesize `text` to a mono 16-bit WAV at `rate`, silence-trimmed and normalized to -3 dBFS."""
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_name(out.stem + ".espeak.wav")
    try:
        _run(["espeak-ng", "-s", "165", "-w", str(raw), text])
        # silence 1 ... trims the lead-in; reverse/silence/reverse trims the tail.
        _run(
            [
                "sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out),
                "silence", "1", "0.02", "1%", "reverse", "silence", "1", "0.02", "1%", "reverse",
                "gain", "-n", "-3",
            ]
        )  # fmt: skip
    finally:
        raw.unlink(missing_ok=True)
    return out


def speech_path() -> Path:
    """The committed speech sample (16 kHz mono 16-bit)."""
    if not BUNDLED_SPEECH.exists():
        raise FileNotFoundError(f"{BUNDLED_SPEECH} missing: run python -m tests.testbed.speech")
    return BUNDLED_SPEECH


def make_variant(
    out: Path, rate: int, *, src: Path | None = None, seconds: float | None = None, channels: int = 1
) -> Path:
    """Resample `src` (default: the bundled speech) to `rate`/`channels`, optionally cut to `seconds`."""
    argv = ["sox", str(src or speech_path()), "-r", str(rate), "-c", str(channels), "-b", "16", str(out)]
    if seconds is not None:
        argv += ["trim", "0", f"{seconds:.3f}"]
    _run(argv)
    return out


def make_tone(out: Path, rate: int = 8000, seconds: float = 5.0, freq: float = 440.0) -> Path:
    """A sine tone (the negative control: speech vs tone correlates near 0)."""
    _run(["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(out), "synth", f"{seconds:.3f}",
          "sine", f"{freq:g}", "vol", "0.3"])  # fmt: skip
    return out


def make_silence(out: Path, rate: int = 8000, seconds: float = 5.0) -> Path:
    _run(["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(out), "trim", "0", f"{seconds:.3f}"])
    return out


def tools_available() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


if __name__ == "__main__":
    path = generate_speech(BUNDLED_SPEECH)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
