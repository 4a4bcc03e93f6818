"""``require_hybrid``: real phones on loopback. A side that requires the post-quantum hybrid refuses a peer that
speaks x25519 only, as caller or callee, with the reason ``hybrid-required`` at both ends and no audio; two hybrid
phones call as usual (the ~2.7 KB INVITE goes over TCP by itself, transport "auto")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.phones import SPEECH, PhoneProc, assert_secure_call, start_caller, start_listener
from voipgw.audio.wav import read_wav
from voipgw.config import ConfigError, load_phone_config

pytestmark = pytest.mark.integration

HYBRID = 'suites = ["x25519", "x25519-mlkem768"]\n'
CALL_TIMEOUT_S = 60.0
END_TIMEOUT_S = 20.0


def _config(tmp_path: Path, name: str, text: str) -> list[str]:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'aor = "{name}@127.0.0.1"\n' + text)
    return ["--config", str(path)]


def _call(tmp_path: Path, alice_cfg: str, bob_cfg: str, alice_rc: int, bob_rc: int) -> tuple[PhoneProc, PhoneProc]:
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), *_config(tmp_path, "bob", bob_cfg))
    alice = start_caller(
        tmp_path, "alice", f"sip:bob@127.0.0.1:{bob.sip_port}", "--play", str(SPEECH),
        *_config(tmp_path, "alice", alice_cfg),
    )  # fmt: skip
    try:
        assert alice.wait(CALL_TIMEOUT_S) == alice_rc, alice.log()
        assert bob.wait(END_TIMEOUT_S) == bob_rc, bob.log()
    finally:
        alice.stop()
        bob.stop()
    return alice, bob


def _refused(alice: PhoneProc, bob: PhoneProc) -> tuple[dict[str, object], dict[str, object]]:
    a, b = alice.summary(), bob.summary()
    assert a["frames_opened"] == b["frames_opened"] == 0, (a, b)
    for heard in (alice.wav, bob.wav):  # nothing, or silence: never audio
        assert not heard.exists() or not np.any(read_wav(heard)), heard.name
    return a, b


def test_a_callee_requiring_the_hybrid_refuses_a_classical_caller(tmp_path: Path) -> None:
    alice, bob = _call(tmp_path, "", HYBRID + "require_hybrid = true\n", alice_rc=1, bob_rc=1)
    a, b = _refused(alice, bob)
    assert a["state"] == b["state"] == "failed", (a, b)
    assert "hybrid-required" in str(b["reason"]) and "488" in str(b["reason"]), b
    assert "488" in str(a["reason"]) and "hybrid-required" in str(a["reason"]), a  # the Warning reached alice
    assert a["frames_sent"] == b["frames_sent"] == 0


def test_a_caller_requiring_the_hybrid_refuses_a_classical_answer(tmp_path: Path) -> None:
    alice, bob = _call(tmp_path, HYBRID + "require_hybrid = true\n", "", alice_rc=1, bob_rc=1)
    a, b = _refused(alice, bob)
    assert a["state"] == "failed" and "hybrid-required" in str(a["reason"]), a
    # Bob sent his answer in a 183 (he cannot know alice's policy); alice cancels with the reason, never audio,
    # and nothing was ever answered.
    assert b["state"] == "failed" and b["security"] == "refused" and "hybrid-required" in str(b["reason"]), b
    assert a["frames_sent"] == 0


def test_two_hybrid_phones_call_when_one_requires_it(tmp_path: Path) -> None:
    alice, bob = _call(tmp_path, HYBRID + "require_hybrid = true\n", HYBRID, alice_rc=0, bob_rc=0)
    assert_secure_call(alice, bob)
    assert alice.summary()["suite"] == bob.summary()["suite"] == "x25519-mlkem768"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("require_hybrid = true\n", 'add "x25519-mlkem768" to suites'),
        (HYBRID + 'require_hybrid = true\ntransport = "udp"\n', 'needs transport "auto"'),
        ('require_hybrid = "yes"\n', "require_hybrid: expected bool"),
    ],
)
def test_require_hybrid_config_mistakes_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "phone.toml"
    path.write_text('aor = "a@127.0.0.1"\n' + text)
    with pytest.raises(ConfigError, match=message.replace('"', ".")):
        load_phone_config(path, {})
