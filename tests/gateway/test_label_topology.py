"""What the phones are shown, with real components (Kamailio, two gateways, baresip phones; the attacker at
127.0.0.66): a secure call shows the first-contact label, then the known one, label first (From, P-Asserted-Identity
and Remote-Party-ID); a plain caller whose display name spoofs a label is never shown as one; a tampered answer is
counted as refused at both gateways; a far end without voipgw is named as such in the caller's Warning."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.config_gateway import OUTSIDE_SIP
from tests.support.labels import (
    ATTACKER,
    RevealDropper,
    header,
    plain_invite,
    shown_name,
    sip_messages,
    tamper_answer,
)
from tests.support.requires import requires
from tests.support.topology import (
    CALL_TIMEOUT,
    Topology,
    event_types,
    run_topology,
    sip_final,
    swap_ephemeral,
    wait_closed,
    wait_until,
)
from tests.testbed import capture, speech
from voipgw.ops.control import render_status
from voipgw.ops.metrics import NO_KEY_EXCHANGE, handshake_failure_reason

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "baresip", "sox")]

SPOOFS = [
    "Alice [E2E 4XJ9]",
    "Alice [E2E 4XJ9]" + " " * 40,
    "[SAFE 4xj9] Alice\t[NEW 4xj9]\x7f\u202e]9jx4 E2E[",
    "\uff3bE2E 4XJ9\uff3d Alice",
]
"""Display names a plain caller (or the PBX) chooses: a label, padded, other labels with controls and a bidi
override, full-width brackets."""


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    yield from run_topology(tmp_path_factory.mktemp("topo-labels"), with_rtpengine=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech.make_variant(tmp_path_factory.mktemp("label-clips") / "speech.wav", 8000)


def test_a_secure_call_shows_first_contact_then_known_label_first_on_both_phones(
    topo: Topology, tmp_path: Path, clip: Path
) -> None:
    """Runs first in the module (fresh contact stores). bob's ringing phone shows ``[NEW sas] alice`` (From,
    P-Asserted-Identity, Remote-Party-ID), alice's 200 OK carries ``[NEW sas] bob``; the second call shows
    ``[E2E sas]`` on both, with the call's own SAS."""
    a, b = topo.gw_a, topo.gw_b
    alice_sip, bob_sip = topo.phones["alice"][0], topo.phones["bob"][0]
    seen = []
    for i in range(2):
        n_a, n_b = a.finished_count(), b.finished_count()
        with (
            topo.phone(tmp_path / str(i), "bob", clip) as bob,
            topo.phone(tmp_path / str(i), "alice", clip) as alice,
            capture.RawCapture(alice_sip, alice_sip) as alice_wire,
            capture.RawCapture(bob_sip, bob_sip) as bob_wire,
        ):
            alice.dial(f"sip:bob@127.0.0.1:{a.port}")
            rang = bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
            alice.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
            alice.hangup()
            wait_closed(alice)
            wait_closed(bob)
        out, inn = a.finished_after(n_a), b.finished_after(n_b)
        invite = sip_messages(bob_wire.packets, b"INVITE ")[0]
        ok = sip_messages(alice_wire.packets, b"SIP/2.0 200")[0]
        seen.append((out, inn, shown_name(rang), invite, ok))
    expected = [("first-contact", "NEW"), ("known", "E2E")]
    for (out, inn, shown, invite, ok), (kind, tag) in zip(seen, expected, strict=True):
        sas = inn["sas"]
        assert sas and out["sas"] == sas, (out, inn)
        assert inn["label"] == out["label"] == kind, (out, inn)
        assert shown == inn["display"] == f"[{tag} {sas}] alice", (shown, inn)
        assert header(invite, "From").startswith(f'"[{tag} {sas}] alice" <sip:alice@'), invite
        assert header(invite, "P-Asserted-Identity") == f'"[{tag} {sas}] alice" <sip:alice@127.0.0.1>', invite
        assert "party=calling" in header(invite, "Remote-Party-ID"), invite
        assert out["display"] == f"[{tag} {sas}] bob", out
        assert header(ok, "P-Asserted-Identity") == f'"[{tag} {sas}] bob" <sip:bob@127.0.0.1>', ok
        rpid = header(ok, "Remote-Party-ID")
        assert rpid.startswith(f'"[{tag} {sas}] bob" <sip:bob@127.0.0.1>') and "party=called" in rpid, ok


@pytest.mark.hardening
def test_a_plain_callers_display_name_is_never_shown_as_a_security_label(
    topo: Topology, tmp_path: Path, clip: Path
) -> None:
    """The attacker (127.0.0.66) calls bob in the clear (policy opportunistic for dave@*) with display names that
    spoof labels: bob's phone shows ``[INSECURE] dave`` every time, the INVITE it gets carries nothing else."""
    b = topo.gw_b
    bob_sip = topo.phones["bob"][0]
    assert b.proc.ports is not None
    outside = ("127.0.0.1", b.proc.ports[OUTSIDE_SIP])  # the PBX's side: where outside callers reach gateway B
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind((ATTACKER, 0))
    try:
        with (
            topo.phone(tmp_path, "bob", clip, answer="manual") as bob,
            capture.RawCapture(bob_sip, bob_sip) as bob_wire,
        ):
            shown = []
            for display in SPOOFS:
                n_b = b.finished_count()
                plain_invite(attacker, outside, secrets.token_hex(8), display, "dave", "bob")
                shown.append(shown_name(bob.wait_event("CALL_INCOMING", timeout=CALL_TIMEOUT)))
                bob.hangup()
                wait_closed(bob)
                inn = b.finished_after(n_b)
                assert inn["security"] == "NOT SECURE" and inn["label"] == "not-secure", inn
                assert inn["display"] == "[INSECURE] dave", inn
            invites = sip_messages(bob_wire.packets, b"INVITE ")
    finally:
        attacker.close()
    assert shown == ["[INSECURE] dave"] * len(SPOOFS), shown
    assert len(invites) >= len(SPOOFS)
    for invite in invites:
        assert header(invite, "From").startswith('"[INSECURE] dave" <sip:dave@'), invite
        assert header(invite, "P-Asserted-Identity").startswith('"[INSECURE] dave" <'), invite
        assert "E2E" not in invite and "NEW" not in invite and "SAFE" not in invite, invite


@pytest.mark.hardening
def test_a_tampered_answer_is_recorded_and_counted_as_refused_at_both_gateways(
    topo: Topology, tmp_path: Path, clip: Path
) -> None:
    """The PBX flips a bit of bob's signed answer: gateway A refuses it (BYE with the reason), alice gets 488;
    gateway B, which had answered, records the call as refused (not "secure, unverified"), counts a refused
    INVITE and the key-exchange reason, and bob's phone never rings."""
    a, b = topo.gw_a, topo.gw_b
    mangler = topo.mangler
    n_a, n_b = a.finished_count(), b.finished_count()
    before = b.snapshot()
    refused_before = int(before["refused_invites"].get("488", 0))
    bad_before = int(before["refused_calls"].get("bad-signature", 0))
    rewritten = mangler.answers_rewritten
    alice_sip = topo.phones["alice"][0]
    mangler.on_offer, mangler.on_answer, mangler.in_path = None, tamper_answer, True
    try:
        with (
            topo.phone(tmp_path, "bob", clip) as bob,
            topo.phone(tmp_path, "alice", clip) as alice,
            capture.RawCapture(alice_sip, alice_sip) as alice_wire,
        ):
            alice.dial(f"sip:mallory@127.0.0.1:{a.port}")  # routed to bob through the tampering PBX
            refused = wait_closed(alice)
            out, inn = a.finished_after(n_a), b.finished_after(n_b)
            bob_saw = event_types(bob)
    finally:
        mangler.on_offer, mangler.on_answer, mangler.in_path = swap_ephemeral, None, False
    assert mangler.answers_rewritten > rewritten
    assert refused.param == "488 Not Acceptable Here", refused
    assert bob_saw == []
    assert out["security"] == inn["security"] == "refused", (out["reason"], inn["reason"], b.log()[-3000:])
    assert out["state"] == inn["state"] == "failed", (out, inn)
    assert "answer refused" in inn["reason"] and "bad-signature" in inn["reason"], inn
    assert handshake_failure_reason(inn["reason"]) == handshake_failure_reason(out["reason"]) == "bad-signature"
    snap = b.snapshot()
    assert int(snap["refused_invites"]["488"]) == refused_before + 1, snap["refused_invites"]
    assert int(snap["refused_calls"]["bad-signature"]) == bad_before + 1, snap["refused_calls"]
    status = render_status(snap)
    assert "refused calls: bad-signature x" in status, status  # what `voipgw gateway status` prints
    to_alice = sip_final(alice_wire.packets, 488)
    assert "Warning: 399" in to_alice and "bad-signature" in to_alice, to_alice


@pytest.mark.hardening
def test_a_withheld_sas_reveal_rings_unverifiable_never_plain_e2e(topo: Topology, tmp_path: Path, clip: Path) -> None:
    """The PBX withholds alice's sealed media from gateway B while B waits for her SAS reveal (wire v3: every frame
    looks alike, so it cannot drop only the reveal): after ``sas_wait_s`` bob's phone rings ``[NO SAS] alice``,
    never ``[E2E]``; B logs it and records the label. Once media flows the SAS arrives (the offerer repeats it)."""
    a, b = topo.gw_a, topo.gw_b
    mangler = topo.mangler
    n_a, n_b = a.finished_count(), b.finished_count()
    with RevealDropper() as dropper:
        mangler.on_offer, mangler.on_answer, mangler.in_path = dropper.redirect_offer, dropper.redirect_answer, True
        try:
            with topo.phone(tmp_path, "bob", clip) as bob, topo.phone(tmp_path, "alice", clip) as alice:
                alice.dial(f"sip:mallory@127.0.0.1:{a.port}")  # through the PBX that drops the reveal
                rang = bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
                alice.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
                for _ in range(200):  # until the relay lets alice's media through again (bounded: 10 s)
                    if dropper.relayed >= 25:
                        break
                    time.sleep(0.05)
                alice.hangup()
                wait_closed(alice)
                wait_closed(bob)
        finally:
            mangler.on_offer, mangler.on_answer, mangler.in_path = swap_ephemeral, None, False
        out, inn = a.finished_after(n_a), b.finished_after(n_b)
    assert dropper.dropped > 0 and dropper.relayed > 0, (dropper.dropped, dropper.relayed)
    assert out["sas"] and out["security"] == inn["security"] == "secure, unverified", (out, inn)
    assert inn["label"] == "unverifiable", inn
    assert shown_name(rang) == inn["display"] == "[NO SAS] alice", (rang.raw, inn)
    assert "no SAS reveal from alice@127.0.0.1" in b.log()


def test_a_g711_far_end_without_voipgw_is_named_in_the_callers_warning(
    topo: Topology, tmp_path: Path, clip: Path
) -> None:
    """Under ``require`` carol (a plain G.711 phone, no gateway) refuses our Opus-only secure offer herself (488):
    alice's phone gets a Warning that says the far end has no voipgw; gateway A counts it as a refused call
    without a key exchange."""
    a = topo.gw_a
    n_a = a.finished_count()
    alice_sip = topo.phones["alice"][0]
    with (
        topo.plain_phone(tmp_path, "carol", clip, "PCMU") as carol,
        topo.phone(tmp_path, "alice", clip) as alice,
        capture.RawCapture(alice_sip, alice_sip) as alice_wire,
    ):
        carol.wait_registered()
        alice.dial(f"sip:carol@127.0.0.1:{a.port}")
        refused = wait_closed(alice)
        out = a.finished_after(n_a)
        carol_saw = event_types(carol)
    assert refused.param == "488 Not Acceptable Here", refused
    assert "CALL_ESTABLISHED" not in carol_saw
    to_alice = sip_final(alice_wire.packets, 488)
    warning = header(to_alice, "Warning")
    assert warning.startswith("399 ") and "488 Not Acceptable Here" in warning, to_alice
    assert "the far end has no voipgw" in warning, to_alice
    assert out["security"] == "refused" and out["policy"] == "require", out
    assert handshake_failure_reason(out["reason"]) == NO_KEY_EXCHANGE, out
    snap = a.snapshot()
    assert snap["refused_calls"].get(NO_KEY_EXCHANGE, 0) >= 1, snap["refused_calls"]
    assert "refused calls: " in render_status(snap) and f"{NO_KEY_EXCHANGE} x" in render_status(snap)
    wait_until(lambda: not a.active(), "gateway A to have no call left")
