"""The caller learns the SAS (issue 12, security review H1), through the issue's topology (baresip alice - gateway
A - Kamailio - gateway B - baresip bob) with the spoken SAS on: alice's recording holds the cue of the call's trust
state and the SAS spoken from the shipped prompts (found by cross-correlation and read back); ``*1`` from her phone
makes bob verified in her gateway user's store and never reaches bob; ``*0`` hangs both legs up and records the
mismatch; after bob's key changed alice hears the key-change cue and never the sealed one. The admin command
(``voipgw gateway contacts``) reads and accepts the results. What the phones hear is docs/OPERATIONS.md's "What
the phones show and say"."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.support.phones import voipgw_argv
from tests.support.requires import requires
from tests.support.spoken import Heard, cue_score, spoken_symbols
from tests.support.topology import CALL_TIMEOUT, RATES, Topology, run_topology, wait_closed, wait_until
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from voipgw.audio.wav import read_wav
from voipgw.gateway.announce import Cue, announcement, confirmation, render
from voipgw.gateway.tones import CONFIRMED_CUE, FIRST_CONTACT_CUE, KEY_CHANGED_CUE, SECURE_CUE, VERIFIED_CUE

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "baresip", "sox")]

BOB = "bob@127.0.0.1"
RATE = 8000
"""The phones speak PCMU: their recordings are at 8 kHz."""
HEARD_CUE = 0.8
"""A tone cue that was played correlates above this in the recording (measured ~0.97); one that was not, below
NOT_HEARD_CUE (a different cue, speech or the far end's tone: measured under 0.3)."""
NOT_HEARD_CUE = 0.5
CLI_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """Its own PBX and gateways, speaking the SAS: the other topology tests keep the cue alone (the spoken SAS
    mutes the far end for a few seconds), and this module changes bob's identity."""
    yield from run_topology(tmp_path_factory.mktemp("topo-sas"), with_rtpengine=False, speak_sas=True)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Steady tones as the phones' voices: long enough for any call here, and nothing like speech, so a prompt
    found in alice's recording came from her gateway."""
    d = tmp_path_factory.mktemp("sas-sources")
    return {
        f"{who}-{codec}": speech.make_tone(d / f"{who}-{codec}.wav", RATES[codec], seconds=60.0, freq=hz)
        for who, hz in (("alice", 300.0), ("bob", 250.0))
        for codec in ("PCMU", "opus")
    }


@dataclass
class Call:
    out: dict[str, Any]
    """Gateway A's record (alice's outbound call)."""
    inn: dict[str, Any]
    """Gateway B's record."""
    heard: list[Heard]
    """The SAS symbols found in alice's recording, in order."""
    recording: Any
    bob_got_dtmf: str


def _announcement_s(cue: str, sas: str | None) -> float:
    return len(render(announcement(Cue(cue), sas))) * 0.02


def _call(
    topo: Topology,
    workdir: Path,
    sources: dict[str, Path],
    during: Callable[[Baresip], bool],
    codec: str = "PCMU",
) -> Call:
    """alice calls bob; once her gateway's announcement has played, ``during(alice)`` runs; then she hangs up
    (unless ``during`` returned True: it saw the call closed)."""
    n_a, n_b = topo.gw_a.finished_count(), topo.gw_b.finished_count()
    workdir.mkdir(parents=True, exist_ok=True)
    rate = RATES[codec]
    with (
        topo.phone(workdir, "bob", sources[f"bob-{codec}"], codec) as bob,
        topo.phone(workdir, "alice", sources[f"alice-{codec}"], codec) as alice,
    ):
        alice.dial(f"sip:bob@127.0.0.1:{topo.gw_a.port}")
        alice.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        active: list[dict[str, Any]] = []

        def cue_chosen() -> bool:
            active[:] = [c for c in topo.gw_a.active() if c["cue"]]
            return bool(active)

        wait_until(cue_chosen, "gateway A's cue")
        time.sleep(_announcement_s(active[0]["cue"], active[0]["sas"]) + 0.5)  # it plays out, then the steps
        if not during(alice):
            alice.hangup()
            wait_closed(alice)
        wait_closed(bob)
        recording = read_wav(alice.received_wav(), rate)
        got = bob.received_dtmf()
    out, inn = topo.gw_a.finished_after(n_a), topo.gw_b.finished_after(n_b)
    return Call(out, inn, spoken_symbols(recording, rate), recording, got)


def _admin(topo: Topology, *args: str) -> subprocess.CompletedProcess[str]:
    """``voipgw gateway contacts`` on gateway A's home and TOML, for its user alice, as OPERATIONS.md says."""
    toml = topo.configs["gw-a"]["toml"]
    argv = voipgw_argv(topo.workdir / "gw-a-home", "gateway", "contacts", "--config", str(toml), "--user", "alice")
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)


def _bob_at_a(topo: Topology) -> dict[str, Any]:
    done = _admin(topo, "--json")
    assert done.returncode == 0, done.stderr
    return next(c for c in json.loads(done.stdout) if c["aor"] == BOB)


def _confirm(topo: Topology, alice: Baresip) -> bool:
    """alice presses *1; the gateway takes it and plays the confirmation."""
    alice.send_dtmf("*1")
    wait_until(lambda: topo.gw_a.active()[0]["sas_check"] == "confirm", "the *1 taken by gateway A")
    time.sleep(len(render(confirmation())) * 0.02 + 0.5)  # the confirmation plays out
    return False


def _symbols(call: Call) -> str:
    return "".join(h.symbol for h in call.heard)


def test_the_caller_hears_its_sas_and_star_one_verifies_the_contact(
    topo: Topology, tmp_path: Path, sources: dict[str, Path]
) -> None:
    """A first call: alice hears the first-contact cue and the SAS, which reads back as the call's SAS (B's too,
    the one on bob's screen). She presses *1: bob becomes verified (method sas) in her store, she hears the
    confirmation, and bob's phone never receives the digits. Her next call opens with the verified cue."""

    first = _call(topo, tmp_path / "first", sources, partial(_confirm, topo))
    out, inn = first.out, first.inn
    print(
        f"first call: SAS {out['sas']}, heard {[(h.symbol, round(h.at_s, 2), round(h.score, 3)) for h in first.heard]}"
    )
    assert out["security"] == inn["security"] == "secure, unverified", (out, inn)
    assert out["sas"] and out["sas"] == inn["sas"], (out, inn)
    assert out["cue"] == "first contact", out
    assert _symbols(first) == out["sas"], first.heard
    assert cue_score(first.recording, FIRST_CONTACT_CUE, RATE) >= HEARD_CUE
    assert cue_score(first.recording, KEY_CHANGED_CUE, RATE) < NOT_HEARD_CUE
    assert cue_score(first.recording, CONFIRMED_CUE, RATE) >= HEARD_CUE
    assert out["sas_check"] == "confirm", out
    assert first.bob_got_dtmf == "", first.bob_got_dtmf  # *1 is the gateway's, never relayed
    assert out["dtmf"]["to_outside"] == 0, out
    bob = _bob_at_a(topo)
    assert bob["verified"] and bob["verified_method"] == "sas", bob
    assert "confirmed the SAS with bob@127.0.0.1 (*1)" in topo.gw_a.log()

    again = _call(topo, tmp_path / "again", sources, lambda alice: False)
    print(f"second call: cue {again.out['cue']!r}, SAS {again.out['sas']} heard {_symbols(again)!r}")
    assert again.out["security"] == "secure, verified" and again.out["cue"] == "verified", again.out
    assert _symbols(again) == again.out["sas"], again.heard
    assert cue_score(again.recording, VERIFIED_CUE, RATE) >= HEARD_CUE


def test_star_zero_hangs_up_and_a_key_change_never_sounds_sealed(
    topo: Topology, tmp_path: Path, sources: dict[str, Path]
) -> None:
    """alice presses *0 (the SAS did not match): both legs are hung up with the reason, the mismatch is stored
    with bob (``fingerprint`` shows it) and bob is no longer verified. bob's identity is then rotated (gateway B
    restarted): alice's next call plays the key-change cue, never the sealed one, then the SAS; her admin then
    accepts the new key."""

    def deny(alice: Baresip) -> bool:
        alice.send_dtmf("*0")
        wait_closed(alice)  # the gateway hangs up: alice does not
        return True

    mismatch = _call(topo, tmp_path / "mismatch", sources, deny)
    out, inn = mismatch.out, mismatch.inn
    print(f"*0: A {out['reason']!r}; B {inn['reason']!r}; bob got {mismatch.bob_got_dtmf!r}")
    assert out["sas_check"] == "mismatch" and "SAS mismatch" in out["reason"], out
    assert out["state"] == inn["state"] == "ended", (out, inn)
    assert "SAS mismatch" in inn["reason"], inn  # B learnt why from A's BYE
    assert mismatch.bob_got_dtmf == "", mismatch.bob_got_dtmf
    assert "reports a SAS MISMATCH with bob@127.0.0.1 (*0)" in topo.gw_a.log()
    shown = _admin(topo, "fingerprint", BOB)
    assert shown.returncode == 0 and "WARNING: sas-mismatch reported" in shown.stdout, shown
    assert not _bob_at_a(topo)["verified"]

    bob_dir = topo.workdir / "gw-b-home" / "users" / "bob"

    def rotate_bob() -> None:
        done = subprocess.run(
            voipgw_argv(bob_dir, "id", "new", "--force", "--yes"), capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr

    topo.restart_gateway("gw-b", meanwhile=rotate_bob)
    changed = _call(topo, tmp_path / "changed", sources, lambda alice: False)
    sealed = cue_score(changed.recording, SECURE_CUE, RATE)
    alarm = cue_score(changed.recording, KEY_CHANGED_CUE, RATE)
    print(f"key changed: cue {changed.out['cue']!r}, key-change cue {alarm:.3f}, sealed cue {sealed:.3f}, "
          f"SAS {changed.out['sas']} heard {_symbols(changed)!r}")  # fmt: skip
    assert changed.out["security"] == "key changed, unverified", changed.out
    assert changed.out["cue"] == "key changed", changed.out
    assert alarm >= HEARD_CUE and sealed < NOT_HEARD_CUE, (alarm, sealed)
    assert _symbols(changed) == changed.out["sas"], changed.heard

    accepted = _admin(topo, "accept", BOB, "--yes")
    assert accepted.returncode == 0, accepted.stderr
    assert _bob_at_a(topo)["state"] == "known"


def test_an_opus_phone_hears_its_sas_through_pass_through(
    topo: Topology, tmp_path: Path, sources: dict[str, Path]
) -> None:
    """With Opus phones the bridge relays frames untouched (pass-through): the announcement is encoded and paced by
    the gateway until it ends, then the far end's frames flow directly. alice hears the cue and reads back the SAS
    at 48 kHz as she does through PCMU, and after *1 the confirmation, which the gateway then sends itself."""
    call = _call(topo, tmp_path / "opus", sources, partial(_confirm, topo), codec="opus")
    rate = RATES["opus"]
    print(f"opus: cue {call.out['cue']!r}, SAS {call.out['sas']} heard "
          f"{[(h.symbol, round(h.score, 3)) for h in call.heard]}")  # fmt: skip
    assert call.out["passthrough"] is True and call.out["inside_codec"] == "opus", call.out
    assert _symbols(call) == call.out["sas"], call.heard
    assert cue_score(call.recording, SECURE_CUE, rate) >= HEARD_CUE
    assert call.out["passthrough_frames"]["to_inside"] > 0, call.out  # then bob's frames crossed untouched
    assert call.out["sas_check"] == "confirm" and call.bob_got_dtmf == "", call.out
    assert cue_score(call.recording, CONFIRMED_CUE, rate) >= HEARD_CUE
