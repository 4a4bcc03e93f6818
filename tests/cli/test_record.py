"""``--record``: an unwritable path is refused up front (exit 2, nothing dialled or announced), and a listener
gives each call its own 0600 file (``bob.wav``, ``bob-2.wav``) instead of overwriting the first."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.phones import SPEECH, start_caller, start_listener, voipgw_argv
from voipgw.audio.wav import read_wav_raw

RUN_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 60.0


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        voipgw_argv(home, *args), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL
    )


@pytest.mark.parametrize("command", ["call", "listen"])
@pytest.mark.parametrize(
    ("where", "expect"),
    [("missing-dir/x.wav", "does not exist"), (".", "is a directory"), ("a-file/x.wav", "does not exist")],
)
def test_unwritable_record_path_is_refused_before_anything_starts(
    tmp_path: Path, command: str, where: str, expect: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    target = ["sip:bob@127.0.0.1:9"] if command == "call" else []
    out = _run(tmp_path / "home", command, *target, "--listen", "127.0.0.1:0", "--record", str(tmp_path / where))
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "listening as" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("voipgw: --record ") and expect in last, out.stderr
    assert "call outgoing" not in out.stderr  # no summary: nothing was dialled
    assert not (tmp_path / "missing-dir").exists()


@pytest.mark.integration
def test_listener_keeps_every_call_in_its_own_private_file(tmp_path: Path) -> None:
    bob = start_listener(tmp_path, "bob", once=False, tap=False)
    try:
        for n in (1, 2):
            alice = start_caller(
                tmp_path, f"alice{n}", f"sip:bob@127.0.0.1:{bob.sip_port}", "--play", str(SPEECH), tap=False
            )
            try:
                assert alice.wait(CALL_TIMEOUT_S) == 0, alice.log()
            finally:
                alice.stop()
    finally:
        bob.stop()
    files = sorted(p.name for p in tmp_path.glob("bob*.wav"))
    assert files == ["bob-2.wav", "bob.wav"], (files, bob.log())
    for name in files:
        path = tmp_path / name
        assert path.stat().st_mode & 0o777 == 0o600
        samples, _ = read_wav_raw(path)
        assert len(samples) > 48000, name  # more than a second of each call
