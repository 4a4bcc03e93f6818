"""The identity QR payload round trip: ``id show`` prints it, ``contacts add PAYLOAD --verified`` takes it before any
call, and the first real call with that contact is already *secure, verified*; a damaged payload or another key for
a stored AOR is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.phone_calls import wait_for_call
from tests.support.phones import SPEECH, start_caller, start_listener
from voipgw.cli.main import main

CALL_TIMEOUT_S = 60.0


def _payload(home: Path, aor: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["--home", str(home), "id", "show", "--aor", aor, "--json"]) == 0
    return str(json.loads(capsys.readouterr().out)["qr_payload"])


def _contacts(home: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["--home", str(home), "contacts", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    return list(out["contacts"] if isinstance(out, dict) else out)


def test_payload_is_checked_and_never_replaces_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = _payload(tmp_path / "alice", "alice@example.org", capsys)
    other = _payload(tmp_path / "mallory", "alice@example.org", capsys)  # same AOR, another key
    bob = tmp_path / "bob"
    damaged = payload[:-1] + ("0" if payload[-1] != "0" else "1")
    assert main(["--home", str(bob), "contacts", "add", damaged]) == 1
    assert "do not match the key" in capsys.readouterr().err
    assert main(["--home", str(bob), "contacts", "add", "voipgw-sn:1:123"]) == 1
    assert "not a voipgw identity payload" in capsys.readouterr().err
    assert main(["--home", str(bob), "contacts", "add", payload]) == 0
    assert "added; unverified" in capsys.readouterr().out
    assert main(["--home", str(bob), "contacts", "add", other, "--verified"]) == 1
    assert "already stored with a different key" in capsys.readouterr().err
    (row,) = _contacts(bob, capsys)
    assert row["aor"] == "alice@example.org" and not row["verified"]
    assert main(["--home", str(bob), "verify", "alice@example.org", "--qr-payload", other]) == 1
    assert "NOT the one stored" in capsys.readouterr().err
    assert not _contacts(bob, capsys)[0]["verified"]
    assert main(["--home", str(bob), "verify", "alice@example.org", "--qr-payload", payload]) == 0
    assert "now VERIFIED (qr)" in capsys.readouterr().out
    assert _contacts(bob, capsys)[0]["verified"]


@pytest.mark.integration
def test_a_contact_added_from_its_payload_is_verified_on_the_first_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = _payload(tmp_path / "alice-home", "alice@127.0.0.1", capsys)
    assert main(["--home", str(tmp_path / "bob-home"), "contacts", "add", payload, "--verified"]) == 0
    assert "VERIFIED (qr)" in capsys.readouterr().out
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), record=False, tap=False)
    alice = start_caller(tmp_path, "alice", f"sip:bob@127.0.0.1:{bob.sip_port}", "--play", str(SPEECH), tap=False)
    wait_for_call(alice, bob, CALL_TIMEOUT_S, CALL_TIMEOUT_S)
    a, b = alice.summary(), bob.summary()
    assert b["security"] == "secure, verified" and b["verified"], b  # no call had happened before
    assert a["security"] == "secure, unverified", a  # alice did not add bob: a first contact for her
    assert a["sas"] == b["sas"] is not None
