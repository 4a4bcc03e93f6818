"""Misbinding under ``accept_any_callee`` (issue 15): alice dials bob, and the call is answered by mallory, a
verified contact of alice's. The answer is signed by mallory, so the key exchange is sound, but without care the
status said "alice -> bob: secure, verified" (mallory's verification shown next to bob's name), and alice's store
filed mallory's key under bob. Now both ends name the party that signed, "verified" is never shown for a party
other than the one dialled, and the contact store keeps mallory's key under mallory only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.phones import SPEECH, run_cli, start_caller, start_listener

pytestmark = pytest.mark.integration


def call(work: Path, dialled: str, *extra: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """alice calls ``dialled`` at mallory's listener; the homes persist across calls."""
    mallory = start_listener(work, "mallory", *extra, "--play", str(SPEECH), record=False, tap=False)
    alice = start_caller(
        work, "alice", f"sip:{dialled}@127.0.0.1:{mallory.sip_port}", *extra, "--play", str(SPEECH),
        "--duration", "1.5", record=False, tap=False,
    )  # fmt: skip
    try:
        assert alice.wait(40) == 0, alice.log()
        assert mallory.wait(15) == 0, mallory.log()
    finally:
        alice.stop()
        mallory.stop()
    return alice.summary(), mallory.summary()


def test_a_forwarded_call_names_who_answered_and_is_never_verified_for_the_dialled_contact(tmp_path: Path) -> None:
    config = tmp_path / "any-callee.toml"
    config.write_text("accept_any_callee = true\n")
    # alice calls mallory once and verifies her out of band.
    a, m = call(tmp_path, "mallory")
    assert a["security"] == "secure, unverified" and a["forwarded"] is None and m["forwarded"] is None
    out = run_cli(
        tmp_path / "alice-home", "verify", "mallory@127.0.0.1", "--safety-number", m["safety_number"], "--yes"
    )
    assert out.returncode == 0, out.stderr

    # Now alice dials bob; mallory's phone (accept_any_callee) answers it, signing as mallory.
    a, m = call(tmp_path, "bob", "--config", str(config))
    print(f"caller: {a['security']!r} {a['forwarded']!r}; callee: {m['security']!r} {m['forwarded']!r}")
    assert a["state"] == "ended" and a["remote_aor"] == "bob@127.0.0.1"
    assert a["forwarded"] == "forwarded: bob@127.0.0.1 -> mallory@127.0.0.1"
    assert a["security"] == "secure, unverified", "mallory's verification must not show as bob's"
    assert m["forwarded"] == "forwarded: alice@127.0.0.1 called bob@127.0.0.1, answered here as mallory@127.0.0.1"
    assert a["sas"] == m["sas"] and a["safety_number"] == m["safety_number"]

    contacts = json.loads(run_cli(tmp_path / "alice-home", "contacts", "--json").stdout)
    aors = {c["aor"]: c for c in contacts} if isinstance(contacts, list) else contacts
    assert "bob@127.0.0.1" not in aors, "mallory's key filed under bob"
    assert "mallory@127.0.0.1" in aors
