"""Security review C1 in the issue's topology (baresip alice - gateway A - Kamailio - gateway B - baresip bob):
RTP sprayed from 127.0.0.66 at every media port of both gateways during a call moves no leg, reaches nobody's ear
and gets none of the far party's audio back; every sprayed packet the inside legs see is dropped and counted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.requires import requires
from tests.support.rtp_spray import Sprayer, udp_ports
from tests.support.topology import CALL_TIMEOUT, MIN_CORRELATION, Node, Topology, heard, run_topology, wait_closed
from tests.testbed import speech

pytestmark = [
    pytest.mark.integration,
    pytest.mark.hardening,
    pytest.mark.interop,
    requires("kamailio", "baresip", "sox"),
]

SPRAY_SECONDS = 4.0
MAX_TONE_CORRELATION = 0.3
"""Speech against a tone scores about 0.02 (testbed.md); an injected tone that got through scores near 1."""


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    yield from run_topology(tmp_path_factory.mktemp("topo-spray"), with_rtpengine=False)


def _active(node: Node) -> dict[str, Any]:
    calls = node.active()
    assert len(calls) == 1, calls
    return calls[0]


def test_rtp_sprayed_at_every_media_port_moves_nothing_and_reaches_no_one(topo: Topology, tmp_path: Path) -> None:
    alice_clip = speech.make_variant(tmp_path / "alice.wav", 8000)
    bob_clip = speech.make_variant(tmp_path / "bob.wav", 8000, seconds=30.0)
    tone = speech.make_tone(tmp_path / "tone.wav", 8000, seconds=2.0, freq=440.0)
    a, b = topo.gw_a, topo.gw_b
    n_a, n_b = a.finished_count(), b.finished_count()
    with topo.phone(tmp_path, "bob", bob_clip) as bob, topo.phone(tmp_path, "alice", alice_clip) as alice:
        alice.dial(f"sip:bob@127.0.0.1:{a.port}")
        bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        alice.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        # The gateways start the inside leg's media a moment after the phones see the call established: wait for
        # both legs to know their phone (inside_peer set) so "before" is the leg as the phone set it up.
        deadline = time.monotonic() + CALL_TIMEOUT
        while not all(_active(n)["inside_peer"] for n in (a, b)) and time.monotonic() < deadline:
            time.sleep(0.05)
        before = _active(a), _active(b)
        assert all(leg["inside_peer"] for leg in before), before
        sip = {a.port, b.port}
        ports = [p for node in (a, b) for p in udp_ports(node.proc.proc.pid) if p not in sip]
        assert len(ports) >= 8, ports  # RTP and RTCP of the inside and outside legs of both gateways
        with Sprayer(ports, tone) as spray:
            time.sleep(SPRAY_SECONDS)
        during = _active(a), _active(b)
        wait_closed(alice)  # alice's clip ends: she hangs up
        wait_closed(bob)
        to_bob = heard(alice_clip, bob.received_wav())
        to_alice = heard(bob_clip, alice.received_wav())
        tone_at_bob = heard(tone, bob.received_wav())
        tone_at_alice = heard(tone, alice.received_wav())
    out, inn = a.finished_after(n_a), b.finished_after(n_b)
    print(
        f"sprayed {spray.sent} packets at {len(ports)} ports; attacker received {len(spray.received)}; "
        f"to bob {to_bob.windowed:.3f}, to alice {to_alice.windowed:.3f}, tone at bob {tone_at_bob.correlation:.3f}, "
        f"tone at alice {tone_at_alice.correlation:.3f}; dropped A {out['inside_dropped']} B {inn['inside_dropped']}"
    )
    # Nothing came back to the attacker: no leg moved to it, so none of the far party's audio did either.
    assert spray.received == [], spray.received[:3]
    # The inside legs never moved and dropped what they were sprayed with, counted by reason.
    for (first, later), node in zip(zip(before, during, strict=True), (a, b), strict=True):
        assert first["inside_peer"] == later["inside_peer"], (first, later, node.log()[-2000:])
        assert later["inside_peer"] is not None and not later["inside_peer"].startswith("127.0.0.66")
    assert out["inside_dropped"].get("wrong-source", 0) > 100 and inn["inside_dropped"].get("wrong-source", 0) > 100
    # The outside legs (sealed) refused the spray: nothing opened that was not the far gateway's.
    assert out["outside_frames_refused"] > 0 or inn["outside_frames_refused"] > 0, (out, inn)
    # Audio both ways as without the attacker, and none of the injected tone reached either phone.
    assert to_bob.windowed >= MIN_CORRELATION, to_bob
    assert to_alice.windowed >= MIN_CORRELATION, to_alice
    assert tone_at_bob.correlation < MAX_TONE_CORRELATION, tone_at_bob
    assert tone_at_alice.correlation < MAX_TONE_CORRELATION, tone_at_alice
    assert out["security"] == inn["security"] == "secure, unverified", (out, inn)
