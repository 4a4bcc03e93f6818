"""Local contact names on real phones (Kamailio, two gateways, baresip; the attacker at 127.0.0.66): once the
gateway's admin names bob's contact alice (``voipgw gateway contacts --user bob name``), bob's phone rings
``[E2E sas] Alice Smith`` (From, P-Asserted-Identity) and alice's 200 OK carries the name alice's side gave bob;
a plain caller whose From display name is "Alice Smith" still shows ``[INSECURE] <its user part>``, and one from the
(unsigned) AOR of a contact bob has named never rings."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratchet.identity import IdentityKey
from tests.support.config_gateway import OUTSIDE_SIP
from tests.support.labels import ATTACKER, header, plain_invite, shown_name, sip_messages
from tests.support.phones import voipgw_argv
from tests.support.requires import requires
from tests.support.topology import CALL_TIMEOUT, Topology, event_types, run_topology, wait_closed
from tests.testbed import capture, speech
from voipgw.store.contacts import ContactStore

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "baresip", "sox")]

ALICE, BOB, DAVE = "alice@127.0.0.1", "bob@127.0.0.1", "dave@127.0.0.1"
CLI_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    yield from run_topology(tmp_path_factory.mktemp("topo-names"), with_rtpengine=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech.make_variant(tmp_path_factory.mktemp("name-clips") / "speech.wav", 8000)


def _admin(topo: Topology, gateway: str, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``voipgw gateway contacts`` on a gateway's home and TOML for one of its users, as OPERATIONS.md says."""
    toml = topo.configs[gateway]["toml"]
    argv = voipgw_argv(topo.workdir / f"{gateway}-home", "gateway", "contacts", "--config", str(toml), "--user", user)
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)


def _call(topo: Topology, workdir: Path, clip: Path) -> tuple[dict[str, object], dict[str, object], str, str, str]:
    """alice calls bob through both gateways: (A's call, B's call, bob's shown name, bob's INVITE, alice's 200)."""
    a, b = topo.gw_a, topo.gw_b
    alice_sip, bob_sip = topo.phones["alice"][0], topo.phones["bob"][0]
    n_a, n_b = a.finished_count(), b.finished_count()
    with (
        topo.phone(workdir, "bob", clip) as bob,
        topo.phone(workdir, "alice", clip) as alice,
        capture.RawCapture(alice_sip, alice_sip) as alice_wire,
        capture.RawCapture(bob_sip, bob_sip) as bob_wire,
    ):
        alice.dial(f"sip:bob@127.0.0.1:{a.port}")
        rang = bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        alice.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        alice.hangup()
        wait_closed(alice)
        wait_closed(bob)
    invite = sip_messages(bob_wire.packets, b"INVITE ")[0]
    ok = sip_messages(alice_wire.packets, b"SIP/2.0 200")[0]
    return a.finished_after(n_a), b.finished_after(n_b), shown_name(rang), invite, ok


def test_a_named_contact_rings_with_its_local_name_after_the_label(topo: Topology, tmp_path: Path, clip: Path) -> None:
    """Runs first in the module. A first call introduces alice and bob to each other's gateway (a contact can only
    be named once a call stored it); then bob's admin names alice, alice's names bob, and the next call shows
    those names, label first, on both phones."""
    first_out, first_in, shown, _invite, _ok = _call(topo, tmp_path / "first", clip)
    assert shown == f"[NEW {first_in['sas']}] alice", (shown, first_in)
    assert first_out["display"] == f"[NEW {first_out['sas']}] bob", first_out

    done = _admin(topo, "gw-b", "bob", "name", ALICE, "Alice Smith")
    assert done.returncode == 0 and "is now shown as 'Alice Smith'" in done.stdout, (done.stdout, done.stderr)
    done = _admin(topo, "gw-a", "alice", "name", BOB, "Bob [SAFE 9999] Jones")  # a name cannot fake a label either
    assert done.returncode == 0 and "'Bob SAFE 9999 Jones' (cleaned)" in done.stdout, (done.stdout, done.stderr)
    listed = json.loads(_admin(topo, "gw-b", "bob", "--json").stdout)
    assert [(c["aor"], c["name"]) for c in listed] == [(ALICE, "Alice Smith")]

    out, inn, shown, invite, ok = _call(topo, tmp_path / "named", clip)
    sas = inn["sas"]
    assert sas and out["sas"] == sas and inn["label"] == out["label"] == "known", (out, inn)
    assert shown == inn["display"] == f"[E2E {sas}] Alice Smith", (shown, inn)
    assert header(invite, "From").startswith(f'"[E2E {sas}] Alice Smith" <sip:{ALICE}'), invite
    assert header(invite, "P-Asserted-Identity") == f'"[E2E {sas}] Alice Smith" <sip:{ALICE}>', invite
    assert out["display"] == f"[E2E {sas}] Bob SAFE 9999 Jones", out
    assert header(ok, "P-Asserted-Identity") == f'"[E2E {sas}] Bob SAFE 9999 Jones" <sip:{BOB}>', ok


@pytest.mark.hardening
def test_a_plain_caller_calling_itself_alice_smith_still_shows_insecure_and_its_user_part(
    topo: Topology, tmp_path: Path, clip: Path
) -> None:
    """The attacker calls bob in the clear (policy opportunistic for dave@*) as dave, with the From display name
    "Alice Smith" (the name bob gave alice): bob's phone shows ``[INSECURE] dave``, the INVITE carries no "Alice".
    Then bob names dave "Dave Trusted" (as if a sealed call had introduced dave): the same plain call from dave's
    AOR never rings bob at all (a known contact must encrypt), so no local name ever stands next to an unsigned
    AOR."""
    b = topo.gw_b
    assert b.proc.ports is not None
    outside = ("127.0.0.1", b.proc.ports[OUTSIDE_SIP])  # the PBX's side: where outside callers reach gateway B
    bob_sip = topo.phones["bob"][0]
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind((ATTACKER, 0))
    try:
        with (
            topo.phone(tmp_path / "stranger", "bob", clip, answer="manual") as bob,
            capture.RawCapture(bob_sip, bob_sip) as bob_wire,
        ):
            n_b = b.finished_count()
            plain_invite(attacker, outside, secrets.token_hex(8), "Alice Smith", "dave", "bob")
            shown = shown_name(bob.wait_event("CALL_INCOMING", timeout=CALL_TIMEOUT))
            bob.hangup()
            wait_closed(bob)
            inn = b.finished_after(n_b)
            invite = sip_messages(bob_wire.packets, b"INVITE ")[0]
        assert shown == inn["display"] == "[INSECURE] dave", (shown, inn)
        assert inn["security"] == "NOT SECURE" and inn["label"] == "not-secure", inn
        assert header(invite, "From").startswith('"[INSECURE] dave" <sip:dave@'), invite
        assert header(invite, "P-Asserted-Identity").startswith('"[INSECURE] dave" <'), invite
        assert "Alice" not in invite, invite

        bob_dir = topo.workdir / "gw-b-home" / "users" / "bob"
        with ContactStore(bob_dir) as store:  # another process, as the admin command is: the store is multi-process
            store.add_first_contact(DAVE, IdentityKey.generate().public.serialize(), local_aor=BOB, now=1_000.0)
        done = _admin(topo, "gw-b", "bob", "name", DAVE, "Dave Trusted")
        assert done.returncode == 0, done.stderr
        with topo.phone(tmp_path / "known", "bob", clip, answer="manual") as bob:
            n_b = b.finished_count()
            plain_invite(attacker, outside, secrets.token_hex(8), "Alice Smith", "dave", "bob")
            inn = b.finished_after(n_b)
            bob_saw = event_types(bob)
    finally:
        attacker.close()
    assert inn["security"] == "refused" and bob_saw == [], (inn, bob_saw)
    assert "known voipgw contact" in inn["reason"], inn
    assert "Trusted" not in str(inn), inn
