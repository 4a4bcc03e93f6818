"""The gateway's spoken prompts: one short WAV per SAS symbol (the NATO word for a letter, the number for a digit)
and a few words, shipped as package data in this folder and loaded through importlib.resources.

Loads and resamples them to the pipes' rate; never synthesizes speech (``scripts/make_prompts.py`` made the files
once with espeak-ng) and never decides what to say (``voipgw.gateway.announce`` does).
"""

from __future__ import annotations

import functools
import importlib.resources
import tempfile
from pathlib import Path

import numpy as np

from ratchet.sas import B32_ALPHABET
from voipgw.audio.codecs import PCM_RATE
from voipgw.audio.pcm import Pcm
from voipgw.audio.wav import WavError, float_to_int16, read_wav_raw, resample

PROMPT_RATE = 8000
"""Rate of the shipped files (narrowband, as most desk phones speak; half the size of wideband); resampled to
PCM_RATE (the pipes' rate) when loaded."""

SYMBOL_WORDS = {
    "y": "Yankee", "b": "Bravo", "n": "November", "d": "Delta", "r": "Romeo", "f": "Foxtrot", "g": "Golf",
    "8": "eight", "e": "Echo", "j": "Juliet", "k": "Kilo", "m": "Mike", "c": "Charlie", "p": "Papa",
    "q": "Quebec", "x": "X-ray", "o": "Oscar", "t": "Tango", "1": "one", "u": "Uniform", "w": "Whiskey",
    "i": "India", "s": "Sierra", "z": "Zulu", "a": "Alpha", "3": "three", "4": "four", "5": "five",
    "h": "Hotel", "7": "seven", "6": "six", "9": "nine",
}  # fmt: skip
"""How each symbol of the SAS alphabet (``ratchet.sas.B32_ALPHABET``) is spoken: a phonetic word, because single
letters (b, d, e, p) are confused over a phone line."""
WORDS = {
    "code": "code",
    "verified": "verified",
    "new-contact": "new contact",
    "key-changed": "warning: key changed",
    "not-secure": "not secure",
    "no-code": "no code",
    "confirmed": "confirmed",
}
"""The words spoken around the SAS (key -> text)."""
SPOKEN = {**{f"sym-{s}": SYMBOL_WORDS[s] for s in B32_ALPHABET}, **WORDS}
"""Every prompt: its key -> the text it speaks."""


class PromptMissing(LookupError):
    """A prompt file is missing or unreadable (a broken install); the caller plays its tone cue without words."""

    reason = "prompt-missing"


def prompt_file(key: str) -> str:
    """The file name of prompt ``key`` in this package (``sym-x`` -> ``sym_x.wav``)."""
    return key.replace("-", "_") + ".wav"


def symbol_key(symbol: str) -> str:
    """The prompt key of one SAS character (KeyError if it is not in the alphabet)."""
    if symbol not in SYMBOL_WORDS:
        raise KeyError(symbol)
    return f"sym-{symbol}"


@functools.cache
def load_prompt(key: str, rate: int = PCM_RATE) -> Pcm:
    """The samples of prompt ``key`` at ``rate`` (mono int16), read once. Raises PromptMissing."""
    if key not in SPOKEN:
        raise PromptMissing(f"no prompt {key!r}")
    resource = importlib.resources.files(__package__).joinpath(prompt_file(key))
    try:
        data = resource.read_bytes()
    except OSError as exc:
        raise PromptMissing(f"prompt {prompt_file(key)}: {exc.strerror or exc}") from None
    # read_wav_raw reads a path: a zipped install has none, so the bytes go through a temporary file.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prompt.wav"
        path.write_bytes(data)
        try:
            samples, rate_in = read_wav_raw(path)
        except WavError as exc:
            raise PromptMissing(f"prompt {prompt_file(key)}: {exc}") from None
    pcm = float_to_int16(resample(samples[:, 0], rate_in, rate))
    pcm.setflags(write=False)
    return pcm


def shipped() -> dict[str, int]:
    """Every shipped prompt file and its size in bytes (for a test that keeps the set small and complete)."""
    folder = importlib.resources.files(__package__)
    return {item.name: len(item.read_bytes()) for item in folder.iterdir() if item.name.endswith(".wav")}


def silence(seconds: float, rate: int = PCM_RATE) -> Pcm:
    return np.zeros(round(seconds * rate), dtype=np.int16)
