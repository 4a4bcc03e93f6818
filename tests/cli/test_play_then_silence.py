"""``--play`` with a longer ``--duration`` (or on the listening side): after the file, silence frames keep flowing,
so the peer's no-media watchdog (here media_timeout_s = 2) never hangs up; the caller hangs up at --duration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.phone_calls import wait_for_call
from tests.support.phones import start_caller, start_listener
from voipgw.audio.wav import write_wav

pytestmark = pytest.mark.integration

CALL_TIMEOUT_S = 60.0
DURATION_S = 6
MEDIA_TIMEOUT_S = 2


def test_play_then_silence_keeps_the_call_up_until_duration(tmp_path: Path) -> None:
    clip = tmp_path / "short.wav"
    write_wav(clip, (3000 * np.sin(np.arange(24000) / 10)).astype(np.int16))  # 0.5 s
    config = tmp_path / "phone.toml"
    config.write_text(f"[phone]\nmedia_timeout_s = {MEDIA_TIMEOUT_S}\n")
    bob = start_listener(tmp_path, "bob", "--play", str(clip), "--config", str(config), record=False, tap=False)
    alice = start_caller(
        tmp_path, "alice", f"sip:bob@127.0.0.1:{bob.sip_port}", "--play", str(clip), "--duration",
        str(DURATION_S), "--config", str(config), record=False, tap=False,
    )  # fmt: skip
    wait_for_call(alice, bob, CALL_TIMEOUT_S, CALL_TIMEOUT_S)
    a, b = alice.summary(), bob.summary()
    for side in (a, b):
        assert side["state"] == "ended" and "no media" not in (side["reason"] or ""), side
    assert a["reason"] == "local hangup", a  # alice hung up at --duration, nobody for lack of media
    # 0.5 s of file is 25 frames; the rest of the call was silence, sent at 50 frames/s by both sides
    assert a["frames_sent"] > 25 * (MEDIA_TIMEOUT_S + 2) and b["frames_sent"] > 25 * (MEDIA_TIMEOUT_S + 2), (a, b)
    assert a["duration_s"] >= MEDIA_TIMEOUT_S + 1
