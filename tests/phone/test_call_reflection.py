"""Reflection under ``accept_any_callee``: a relay sends alice's own INVITE (her offer to bob) back to alice's
listening phone, which holds the same identity key. Without the check the listener would answer her own offer and
the caller would take that answer, signed with her own key, as a secure call. The listener refuses it with the
typed reason ``reflected-offer`` (488, logged, on the call record), and no frame flows either way."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.phones import SPEECH, start_caller, start_listener
from tests.testbed.sip_mangler import SipMangler
from voipgw.ops.metrics import handshake_failure_reason
from voipgw.store.keyfile import IDENTITY_FILENAME

pytestmark = [pytest.mark.integration, pytest.mark.hardening]


def test_our_own_offer_reflected_to_our_listener_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "any-callee.toml"
    config.write_text('aor = "alice@127.0.0.1"\naccept_any_callee = true\n')
    listening, calling = tmp_path / "listening", tmp_path / "calling"
    listening.mkdir()
    calling.mkdir()
    me = start_listener(listening, "alice", "--config", str(config), "--play", str(SPEECH), record=False, tap=False)
    (calling / "alice-home").mkdir(mode=0o700)
    shutil.copy2(listening / "alice-home" / IDENTITY_FILENAME, calling / "alice-home" / IDENTITY_FILENAME)
    with SipMangler(("127.0.0.1", me.sip_port)) as relay:  # "bob" is a relay that reflects alice to herself
        caller = start_caller(
            calling, "alice", f"sip:bob@127.0.0.1:{relay.port}", "--config", str(config), "--play", str(SPEECH),
            "--duration", "1.5", record=False, tap=False,
        )  # fmt: skip
        try:
            assert caller.wait(30) == 1, caller.log()
            assert me.wait(10) == 1, me.log()
        finally:
            caller.stop()
            me.stop()
    a, b = caller.summary(), me.summary()
    print(f"reflected: caller {a['reason']!r}; listener {b['reason']!r}")
    assert a["state"] == b["state"] == "failed" and a["security"] == b["security"] == "refused", (a, b)
    assert "488" in b["reason"] and handshake_failure_reason(b["reason"]) == "reflected-offer", b["reason"]
    assert "488" in a["reason"] and handshake_failure_reason(a["reason"]) == "reflected-offer", a["reason"]
    assert "reflected-offer" in me.log()  # logged where it was refused
    assert a["frames_sent"] == b["frames_sent"] == 0 and a["frames_received"] == b["frames_received"] == 0
