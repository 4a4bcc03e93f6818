"""``listen`` without --play/--record checks the sound card at start, as ``call`` does: with no device it exits 3
with the advice before announcing itself (it used to start, then exit on the first incoming call)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.support.phones import voipgw_argv
from tests.testbed.ports import reserve_block
from tests.testbed.proc import stop_group
from voipgw.audio.device import NoAudioDevice, check_audio_devices

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 30.0


def _has_devices() -> bool:
    try:
        check_audio_devices(need_input=True, need_output=True)
    except NoAudioDevice:
        return False
    return True


@pytest.mark.parametrize("command", ["listen", "call"])
def test_no_sound_card_fails_at_start_with_exit_3(tmp_path: Path, command: str) -> None:
    block = reserve_block(2)
    target = [] if command == "listen" else [f"sip:bob@127.0.0.1:{block[1]}"]
    argv = voipgw_argv(tmp_path / "home", command, *target, "--listen", f"127.0.0.1:{block[0]}", "--aor", "b@127.0.0.1")
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        if _has_devices():  # a machine with a sound card: the listener must come up (and is stopped here)
            if command == "call":
                return
            assert proc.stderr is not None
            deadline = time.monotonic() + START_TIMEOUT_S
            line = ""
            while "listening as" not in line and time.monotonic() < deadline and proc.poll() is None:
                line = proc.stderr.readline()
            assert "listening as" in line
            return
        _out, err = proc.communicate(timeout=START_TIMEOUT_S)
    finally:
        stop_group(proc, grace=5.0)
        block.release()
    assert proc.returncode == 3, err
    assert "listening as" not in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("voipgw: no audio input device found")
    assert "--play FILE.wav and/or --record FILE.wav" in err
