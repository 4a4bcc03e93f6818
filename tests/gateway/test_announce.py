"""The answer's cue and spoken SAS (voipgw.gateway.announce, prompts, tones): the cue is a pure function of the
outside leg's verdict (table below), a key change never plays the sealed cue, and the shipped prompts are complete,
small and loadable as package data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ratchet.sas import B32_ALPHABET
from voipgw.audio.codecs import PCM_RATE
from voipgw.call import Security
from voipgw.gateway import prompts
from voipgw.gateway.announce import (
    CUE_TONES,
    Cue,
    Say,
    Tone,
    announcement,
    choose_cue,
    confirmation,
    inbound_announces,
    render,
)
from voipgw.gateway.tones import SECURE_CUE
from voipgw.ops.config import ConfigError, gateway_config_from_mapping

S = Security
CUE_TABLE = [
    # security, trust state, SAS, cue
    (S.SECURE_VERIFIED, "known", "4xj9", Cue.VERIFIED),
    (S.SECURE_VERIFIED, None, "4xj9", Cue.VERIFIED),
    (S.SECURE_VERIFIED, "known", None, Cue.VERIFIED),  # a verified key needs no SAS
    (S.SECURE_UNVERIFIED, "known", "4xj9", Cue.KNOWN),
    (S.SECURE_UNVERIFIED, None, "4xj9", Cue.KNOWN),  # no contact store
    (S.SECURE_UNVERIFIED, "first-contact", "4xj9", Cue.FIRST_CONTACT),
    (S.SECURE_UNVERIFIED, "known", None, Cue.UNVERIFIABLE),  # the reveal never came
    (S.SECURE_UNVERIFIED, "first-contact", None, Cue.UNVERIFIABLE),
    (S.KEY_CHANGED, "key-changed", "4xj9", Cue.KEY_CHANGED),
    (S.KEY_CHANGED, "key-changed", None, Cue.KEY_CHANGED),  # louder than "no code"
    (S.KEY_CHANGED, None, "4xj9", Cue.KEY_CHANGED),
    (S.SECURE_UNVERIFIED, "key-changed", "4xj9", Cue.KEY_CHANGED),
    (S.NOT_SECURE, None, None, Cue.NOT_SECURE),
    (S.NOT_SECURE, "known", None, Cue.NOT_SECURE),
]


@pytest.mark.parametrize(("security", "trust", "sas", "cue"), CUE_TABLE)
def test_the_cue_is_chosen_from_the_verdict(security: Security, trust: str | None, sas: str | None, cue: Cue) -> None:
    assert choose_cue(security, trust, sas) is cue


@pytest.mark.parametrize("security", [S.PENDING, S.REFUSED])
def test_a_leg_that_was_not_answered_has_no_cue(security: Security) -> None:
    with pytest.raises(ValueError, match="no cue"):
        choose_cue(security, None, None)


def _hz(pattern: tuple[tuple[float, float], ...]) -> set[float]:
    return {hz for hz, _s in pattern if hz}


def test_the_cues_differ_and_a_key_change_never_sounds_sealed() -> None:
    tones = list(CUE_TONES.values())
    assert len(set(tones)) == len(tones)  # one distinct cue per state
    assert not _hz(CUE_TONES[Cue.KEY_CHANGED]) & _hz(SECURE_CUE)
    for cue in (Cue.VERIFIED, Cue.KNOWN, Cue.FIRST_CONTACT):
        assert CUE_TONES[cue][: len(SECURE_CUE) - 1] == SECURE_CUE[:-1]  # the sealed beeps start every trusted one


def test_the_announcement_speaks_the_sas_after_the_cue() -> None:
    parts = announcement(Cue.FIRST_CONTACT, "4xj9")
    assert parts == (
        Tone(CUE_TONES[Cue.FIRST_CONTACT]),
        Say("new-contact"),
        Say("code"),
        Say("sym-4"),
        Say("sym-x"),
        Say("sym-j"),
        Say("sym-9"),
    )
    assert announcement(Cue.KEY_CHANGED, "ybnd")[:3] == (
        Tone(CUE_TONES[Cue.KEY_CHANGED]),
        Say("key-changed"),
        Say("code"),
    )
    assert announcement(Cue.NOT_SECURE, None) == (Tone(CUE_TONES[Cue.NOT_SECURE]), Say("not-secure"))
    assert announcement(Cue.UNVERIFIABLE, None) == (Tone(CUE_TONES[Cue.UNVERIFIABLE]), Say("no-code"))
    assert announcement(Cue.KNOWN, "4xj9", speak=False) == (Tone(SECURE_CUE),)
    assert confirmation(speak=False) == (confirmation()[0],)


def test_only_a_late_reveal_is_announced_to_an_inbound_callee() -> None:
    assert inbound_announces(S.SECURE_UNVERIFIED, None)
    assert not inbound_announces(S.SECURE_UNVERIFIED, "4xj9")  # its display showed the SAS
    assert not inbound_announces(S.NOT_SECURE, None)  # its display showed [INSECURE]


def test_every_prompt_ships_small_and_loads_as_package_data() -> None:
    files = prompts.shipped()
    assert set(files) == {prompts.prompt_file(k) for k in prompts.SPOKEN}
    assert {prompts.symbol_key(s) for s in B32_ALPHABET} <= set(prompts.SPOKEN)
    total = sum(files.values())
    print(f"{len(files)} prompts, {total / 1024:.0f} KiB")
    assert total < 512 * 1024
    pcm = prompts.load_prompt("sym-x")
    assert pcm.dtype == np.int16 and 0.2 * PCM_RATE < len(pcm) < 1.0 * PCM_RATE
    assert float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > 1000  # speech, not silence
    with pytest.raises(prompts.PromptMissing):
        prompts.load_prompt("sym-?")


def test_a_rendered_announcement_is_whole_frames_of_cue_then_speech() -> None:
    frames = render(announcement(Cue.KNOWN, "4xj9"))
    pcm = np.concatenate(frames)
    assert all(len(f) == len(frames[0]) for f in frames)
    spoken = sum(len(prompts.load_prompt(k)) for k in ("code", "sym-4", "sym-x", "sym-j", "sym-9"))
    assert len(pcm) > spoken
    # The symbols appear in order: each prompt is found where it was placed (exact copies here).
    at = [_find(pcm, prompts.load_prompt(f"sym-{c}")) for c in "4xj9"]
    assert at == sorted(at), at


def _find(haystack: np.ndarray, needle: np.ndarray) -> int:
    h, n = haystack.astype(np.float64), needle.astype(np.float64)
    scores = np.correlate(h, n, mode="valid")
    return int(np.argmax(scores))


def test_speak_sas_is_on_by_default_and_reaches_the_b2bua(tmp_path: Path) -> None:
    from voipgw.gateway.runtime import b2bua_config

    users = {"a": {"outside_aor": "a@b", "inside_password": "pw"}}
    base: dict[str, Any] = {"outside": {"registrar": "127.0.0.1:5060"}, "users": users}
    assert b2bua_config(gateway_config_from_mapping(base), tmp_path).speak_sas is True
    off = gateway_config_from_mapping({**base, "gateway": {"speak_sas": False}})
    assert b2bua_config(off, tmp_path).speak_sas is False
    with pytest.raises(ConfigError, match=r"^gateway\.speak_sas: expected bool, got 'no'$"):
        gateway_config_from_mapping({**base, "gateway": {"speak_sas": "no"}})


def test_the_prompts_are_declared_package_data() -> None:
    """pyproject's package-data globs (relative to the voipgw package) cover every shipped prompt: a wheel has them."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["voipgw"]
    for name in prompts.shipped():
        path = f"gateway/prompts/{name}"
        assert any(fnmatch.fnmatch(path, g) for g in globs), (path, globs)
