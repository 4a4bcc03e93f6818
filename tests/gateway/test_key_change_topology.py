"""Key changes through the issue's topology (baresip alice - gateway A - Kamailio - gateway B - baresip bob), with
its own PBX and gateways: the test restarts gateway A with a new identity for alice, which would disturb the calls
of tests/gateway/test_topology.py that share theirs. What the phones and the gateways do is what
docs/OPERATIONS.md ("Identities, safety numbers and key changes", "What the phones show") says: under the default
key_change_policy an unverified changed key is shown on the callee's phone as ``[!KEY sas]``, and a
verified one blocks the call with the reason."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.phones import run_cli
from tests.support.requires import requires
from tests.support.topology import (
    CLIP_SECONDS,
    MIN_CORRELATION,
    Topology,
    event_types,
    heard,
    run_topology,
    sip_final,
    wait_closed,
)
from tests.testbed import capture, speech
from voipgw.negotiate import KEY_CHANGE_REFUSED

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "baresip", "sox")]

ALICE = "alice@127.0.0.1"
CLI_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def keys_topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """Kamailio without rtpengine and two gateways, for this module alone."""
    yield from run_topology(tmp_path_factory.mktemp("topo-keys"), with_rtpengine=False)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys-clips")
    return {
        "PCMU": speech.make_variant(d / "speech8k.wav", 8000, seconds=CLIP_SECONDS),
        "PCMU-long": speech.make_variant(d / "speech8k_long.wav", 8000),
    }


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The ordinary CLI on one fronted user's folder, as OPERATIONS.md tells the operator to run it."""
    return run_cli(home, *args, timeout=CLI_TIMEOUT_S)


@dataclass
class Outcome:
    out: dict[str, Any]
    """The calling gateway's record of the call."""
    inn: dict[str, Any]
    """The called gateway's record."""
    shown: str
    """The display name the callee's phone showed ("" if it never rang)."""
    closed: str
    """The caller's CALL_CLOSED parameter (its final status or why it ended)."""
    callee_saw: list[str]
    to_callee: float
    """Correlation of what the callee heard with what the caller sent (0.0 if the call never connected)."""
    to_caller_488: str
    """The caller's 488 as it came over the wire ("" if none)."""


def _call(topo: Topology, workdir: Path, clips: dict[str, Path], caller: str) -> Outcome:
    """One call from ``caller`` (alice or bob) to the other through both gateways; the caller's 3 s clip ends
    it, unless it is refused."""
    callee = "bob" if caller == "alice" else "alice"
    gw_out, gw_in = (topo.gw_a, topo.gw_b) if caller == "alice" else (topo.gw_b, topo.gw_a)
    n_out, n_in = gw_out.finished_count(), gw_in.finished_count()
    caller_sip = topo.phones[caller][0]
    workdir.mkdir(parents=True, exist_ok=True)
    with (
        topo.phone(workdir, callee, clips["PCMU-long"]) as answerer,
        topo.phone(workdir, caller, clips["PCMU"]) as dialler,
        capture.RawCapture(caller_sip, caller_sip) as wire,
    ):
        dialler.dial(f"sip:{callee}@127.0.0.1:{gw_out.port}")
        closed = wait_closed(dialler)  # its clip ended (it hangs up), or the call was refused
        out, inn = gw_out.finished_after(n_out), gw_in.finished_after(n_in)
        saw = event_types(answerer)
        established = [e for e in answerer.ctrl.history if e.type == "CALL_ESTABLISHED"]
        if established:
            wait_closed(answerer)
        to_callee = heard(clips["PCMU"], answerer.received_wav()).windowed if established else 0.0
    shown = str(established[0].raw.get("peerdisplayname", "")) if established else ""
    return Outcome(out, inn, shown, closed.param, saw, to_callee, sip_final(wire.packets, 488))


def test_a_rotated_identity_shows_key_changed_then_blocks_once_verified(
    keys_topo: Topology, tmp_path: Path, clips: dict[str, Path]
) -> None:
    """alice calls bob (bob's gateway pins her key). alice's identity is rotated (gateway A stopped, ``voipgw id
    new`` on her folder, restarted). Her next call rings bob as ``[!KEY sas] alice`` with audio, and bob's
    call back is marked key changed at B too. bob's admin verifies the new key: the display is ``[SAFE sas]``.
    alice's identity is rotated once more: now that the key was verified, B refuses the call, bob's phone never
    rings and alice's phone gets 488 saying why."""
    topo = keys_topo
    alice_dir = topo.workdir / "gw-a-home" / "users" / "alice"
    bob_dir = topo.workdir / "gw-b-home" / "users" / "bob"

    def rotate_alice() -> None:
        before = (alice_dir / "identity.pem").read_bytes()
        done = cli(alice_dir, "id", "new", "--force", "--yes")
        assert done.returncode == 0, done.stderr
        assert (alice_dir / "identity.pem").read_bytes() != before

    first = _call(topo, tmp_path / "first", clips, "alice")
    assert first.inn["security"] == "secure, unverified", first.inn
    assert first.shown == f"[NEW {first.inn['sas']}] alice", first.shown

    topo.restart_gateway("gw-a", meanwhile=rotate_alice)
    changed = _call(topo, tmp_path / "changed", clips, "alice")
    back = _call(topo, tmp_path / "back", clips, "bob")
    print(f"after the rotation: bob saw {changed.shown!r} (audio {changed.to_callee:.3f}); bob calling back: "
          f"B {back.out['security']!r}, cue {back.out['cue']!r}, alice saw {back.shown!r}")  # fmt: skip
    inn, out = changed.inn, changed.out
    assert inn["security"] == "key changed, unverified", inn
    assert inn["sas"] is not None and inn["sas"] == out["sas"], (inn, out)
    assert changed.shown == inn["display"] == f"[!KEY {inn['sas']}] alice", (changed.shown, inn)
    assert inn["safety_number"] and inn["safety_number"] != first.inn["safety_number"], inn
    assert out["security"] == "secure, unverified", out  # bob's key did not change: A has nothing to say
    assert inn["state"] == out["state"] == "ended", (inn, out)
    assert changed.to_callee >= MIN_CORRELATION, changed.to_callee  # the call is allowed, and it carries audio
    assert f"WARNING: the identity key of {ALICE} has CHANGED" in topo.gw_b.log()
    # Loud until bob's admin verifies or accepts the key: bob's own call to alice is marked at B as well.
    assert back.out["security"] == "key changed, unverified", back.out
    assert back.inn["security"] == "secure, unverified" and back.shown == f"[E2E {back.inn['sas']}] bob", back
    # What bob's phone (the caller) gets for it: the key-change cue, never the sealed one (its screen shows nothing).
    assert back.out["cue"] == "key changed", back.out

    verified = cli(bob_dir, "verify", ALICE, "--safety-number", str(inn["safety_number"]), "--yes")
    assert verified.returncode == 0, verified.stderr
    again = _call(topo, tmp_path / "verified", clips, "alice")
    assert again.inn["security"] == "secure, verified", again.inn
    assert again.shown == f"[SAFE {again.inn['sas']}] alice", again.shown

    topo.restart_gateway("gw-a", meanwhile=rotate_alice)
    blocked = _call(topo, tmp_path / "blocked", clips, "alice")
    print(f"verified key changed: alice got {blocked.closed!r}; A {blocked.out['reason']!r}; "
          f"B {blocked.inn['reason']!r}")  # fmt: skip
    assert blocked.callee_saw == [], blocked.callee_saw  # bob's phone never rang
    assert blocked.closed == "488 Not Acceptable Here", blocked.closed
    assert "Warning: 399" in blocked.to_caller_488, blocked.to_caller_488
    # The caller and the PBX learn only that it was refused for a key change (not when the old key was first seen
    # nor whether it was verified); the detail stays on B, in its record and log.
    assert KEY_CHANGE_REFUSED in blocked.to_caller_488, blocked.to_caller_488
    assert KEY_CHANGE_REFUSED in blocked.out["reason"], blocked.out
    for leaked in ("first seen", "verified", "UTC"):
        assert leaked not in blocked.to_caller_488 and leaked not in blocked.out["reason"], leaked
    assert f"identity key of {ALICE} changed" in blocked.inn["reason"], blocked.inn
    for rec in (blocked.out, blocked.inn):
        assert rec["state"] == "failed" and rec["security"] == "refused", rec
    assert blocked.out["outside_frames_sealed"] == 0 and blocked.out["inside_frames_out"] == 0, blocked.out
