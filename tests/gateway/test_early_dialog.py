"""Calls through two gateways behave like calls (issue 13): the far phone answers, not its gateway. The key
exchange settles in the outside leg's early dialog (183), the far phone rings with the SAS, the PBX leg carries a
200 OK only after the far phone answered, every final status of the far phone reaches the caller's phone as
itself, and a man in the middle that probes the SAS pays a visible ring for each guess (and, past the limit, an
answered call). Topology: baresip alice - gateway A - Kamailio (digest auth) - gateway B - bob (baresip, or a sipp
phone that gives a status of its own); the prober calls from 127.0.0.66 through Kamailio."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.labels import display_for
from tests.support.requires import requires
from tests.support.sas_prober import SasProber, prober_config
from tests.support.topology import (
    CALL_TIMEOUT,
    PASSWORDS,
    RATES,
    Topology,
    event_types,
    run_topology,
    sip_final,
    wait_closed,
    wait_until,
)
from tests.testbed import capture, speech
from tests.testbed.ports import reserve_block
from tests.testbed.sipp import SippUas, render_scenario

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "baresip", "sipp", "sox")]

NO_ANSWER_S = 4.0
"""How long each gateway rings its inside phone here (30 s by default)."""


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    yield from run_topology(tmp_path_factory.mktemp("early"), with_rtpengine=False, no_answer_timeout_s=NO_ANSWER_S)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech.make_variant(tmp_path_factory.mktemp("early-clip") / "speech8k.wav", RATES["PCMU"])


def _b_ports(topo: Topology) -> tuple[int, int]:
    """Gateway B's port block: its inside and outside SIP listeners (and its RTP ranges) are all in it."""
    block = topo.gw_b.proc.ports
    assert block is not None
    return block[0], block[block.count - 1]


def _sip(packets: list[capture.CapturedPacket]) -> list[tuple[int, int, str]]:
    """The SIP messages among captured datagrams, in wire order: (source port, destination port, first line and
    CSeq line)."""
    out = []
    for p in packets:
        if p.payload[:8] in (b"SIP/2.0 ", b"INVITE s", b"CANCEL s", b"ACK sip:", b"BYE sip:"):
            text = p.payload.decode(errors="replace")
            cseq = next((line for line in text.split("\r\n") if line.lower().startswith("cseq:")), "")
            out.append((p.src_port, p.dst_port, text.split("\r\n", 1)[0] + " | " + cseq))
    return out


def _invite_responses(sip: list[tuple[int, int, str]], src: int, code: int) -> list[int]:
    """Indexes (wire order) of the INVITE responses with ``code`` sent from port ``src``."""
    head = f"SIP/2.0 {code} "
    return [i for i, (s, _d, line) in enumerate(sip) if s == src and line.startswith(head) and "INVITE" in line]


def test_the_pbx_leg_is_answered_only_after_the_far_phone_answers(topo: Topology, tmp_path: Path, clip: Path) -> None:
    """bob's phone rings with the SAS on its display (``[NEW sas] alice``) while nothing is answered: gateway B
    sends the key exchange in a 183, then a 180 when bob's phone rings; its 200 OK to the PBX comes after bob's
    own 200 OK on the inside leg (wire order on one capture), and alice's phone is connected only then."""
    a, b = topo.gw_a, topo.gw_b
    n_a, n_b = a.finished_count(), b.finished_count()
    inside_port, outside_port = b.proc.ports[0], b.proc.ports[2]  # type: ignore[index]
    bob_port = topo.phones["bob"][0]
    with (
        topo.phone(tmp_path, "bob", clip, answer="manual") as bob,
        topo.phone(tmp_path, "alice", clip) as alice,
        capture.RawCapture(*_b_ports(topo)) as b_wire,  # bob's messages to B's inside port are in it too
    ):
        alice.dial(f"sip:bob@127.0.0.1:{a.port}")
        incoming = bob.wait_event("CALL_INCOMING", timeout=CALL_TIMEOUT)
        alice.wait_event("CALL_RINGING", timeout=CALL_TIMEOUT)
        ringing = b.active()
        assert "CALL_ESTABLISHED" not in event_types(alice)  # the far phone rings: nothing is answered yet
        bob.accept()
        alice.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        alice.hangup()
        wait_closed(alice)
        wait_closed(bob)
    out, inn = a.finished_after(n_a), b.finished_after(n_b)
    sip = _sip(b_wire.packets)
    bob_200 = [i for i, (s, d, line) in enumerate(sip) if s == bob_port and d == inside_port and "200" in line
               and "INVITE" in line]  # fmt: skip
    pbx_183, pbx_180 = _invite_responses(sip, outside_port, 183), _invite_responses(sip, outside_port, 180)
    pbx_200 = _invite_responses(sip, outside_port, 200)
    print("gateway B's INVITE responses to the PBX:", [sip[i][2] for i in pbx_183 + pbx_180 + pbx_200])
    assert pbx_183 and pbx_180 and pbx_200 and bob_200, sip
    assert pbx_183[0] < pbx_180[0] < bob_200[0] < pbx_200[0], (pbx_183, pbx_180, bob_200, pbx_200)
    assert ringing and ringing[0]["state"] == "setup", ringing
    assert incoming.raw["peerdisplayname"] == display_for(inn, "alice"), incoming.raw
    assert inn["sas"] is not None and inn["sas"] == out["sas"], (inn, out)
    assert out["state"] == inn["state"] == "ended" and out["security"] == inn["security"] == "secure, unverified"


def test_an_unanswered_call_reaches_the_caller_as_480_and_the_pbx_never_sees_a_200(
    topo: Topology, tmp_path: Path, clip: Path
) -> None:
    """bob's phone rings and nobody picks up: gateway B gives up after its ring timer and alice's phone gets
    ``480 Temporarily Unavailable`` as a final response; no 200 OK ever crosses the PBX."""
    a, b = topo.gw_a, topo.gw_b
    n_a, n_b = a.finished_count(), b.finished_count()
    outside_port = b.proc.ports[2]  # type: ignore[index]
    with (
        topo.phone(tmp_path, "bob", clip, answer="manual") as bob,
        topo.phone(tmp_path, "alice", clip) as alice,
        capture.RawCapture(*_b_ports(topo)) as b_wire,
    ):
        alice.dial(f"sip:bob@127.0.0.1:{a.port}")
        bob.wait_event("CALL_INCOMING", timeout=CALL_TIMEOUT)
        closed = wait_closed(alice, timeout=CALL_TIMEOUT + NO_ANSWER_S)
        wait_closed(bob)
        alice_saw, bob_saw = event_types(alice), event_types(bob)
    out, inn = a.finished_after(n_a), b.finished_after(n_b)
    sip = _sip(b_wire.packets)
    print(f"alice's phone: {closed.param!r}; A: {out['reason']!r}; B: {inn['reason']!r}")
    assert closed.param.startswith("480"), closed
    assert "CALL_ESTABLISHED" not in alice_saw and "CALL_ESTABLISHED" not in bob_saw
    assert _invite_responses(sip, outside_port, 183), sip
    assert not _invite_responses(sip, outside_port, 200), sip
    assert _invite_responses(sip, outside_port, 480), sip
    assert out["state"] == inn["state"] == "failed", (out, inn)


@pytest.mark.parametrize(
    ("status", "text"),
    [("486 Busy Here", "busy"), ("603 Decline", "declined by the user"), ("404 Not Found", "no such extension")],
)
def test_every_final_status_of_the_far_phone_reaches_the_caller_as_itself(
    topo: Topology, tmp_path: Path, clip: Path, status: str, text: str
) -> None:
    """bob's "phone" is a sipp UAS that rings, then answers ``status`` with an RFC 3326 Reason: alice's phone gets
    that status as its final response (through gateway B, the PBX and gateway A), with the Reason passed on;
    no 200 OK crosses the PBX."""
    a, b = topo.gw_a, topo.gw_b
    n_a, n_b = a.finished_count(), b.finished_count()
    code = status.split()[0]
    scenario = render_scenario(
        "uas_ring_status", tmp_path / "uas.xml", STATUS=status, CODE=code, TEXT=text, RING_MS="1000"
    )
    alice_sip = topo.phones["alice"][0]
    with (
        SippUas(tmp_path, name="bob", scenario_file=scenario, ports=topo.phones["bob"]),
        topo.phone(tmp_path, "alice", clip) as alice,
        capture.RawCapture(alice_sip, alice_sip) as alice_wire,
        capture.RawCapture(*_b_ports(topo)) as b_wire,
    ):
        alice.dial(f"sip:bob@127.0.0.1:{a.port}")
        closed = wait_closed(alice)
        alice_saw = event_types(alice)
    out, inn = a.finished_after(n_a), b.finished_after(n_b)
    final = sip_final(alice_wire.packets, int(code))
    print(f"alice's phone: {closed.param!r}; A: {out['reason']!r}; B: {inn['reason']!r}")
    assert closed.param.startswith(status), closed
    assert "CALL_ESTABLISHED" not in alice_saw and "CALL_RINGING" in alice_saw, alice_saw
    assert f"cause={code}" in final and text in final, final
    assert not _invite_responses(_sip(b_wire.packets), b.proc.ports[2], 200)  # type: ignore[index]
    assert out["state"] == inn["state"] == "failed", (out, inn)


def test_a_sas_prober_pays_a_visible_ring_per_guess(topo: Topology, tmp_path: Path, clip: Path) -> None:
    """The attack of issue 13: a man in the middle calls bob (as carol, with its own key, through the PBX), learns
    what it can and gives up at once. While bob's phone cannot ring (frozen), gateway B never reveals its SAS
    contribution: the prober learns nothing, whatever it waits. Once bob's phone rings, the prober learns the SAS
    only for calls that rang bob's phone (each one a missed call he sees). Past the limit (3 unanswered secure calls
    from one peer) gateway B alerts (status, metric) and reveals only at the answer: the prober's rings teach it
    nothing any more."""
    b = topo.gw_b
    n_b = b.finished_count()
    block = reserve_block(4)
    config = prober_config("carol@127.0.0.1", block[0], ("127.0.0.1", topo.pbx.port), "carol", PASSWORDS["carol"])
    target = f"sip:bob@127.0.0.1:{topo.pbx.port}"  # the PBX serves its own port only

    async def probe(n: int) -> list:  # type: ignore[type-arg]
        async with SasProber(config) as prober:
            return [await prober.attempt(target, patience_s=3.0) for _ in range(n)]

    try:
        with topo.phone(tmp_path, "bob", clip, answer="manual") as bob:
            bob.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            try:
                frozen = asyncio.run(probe(2))
            finally:
                bob.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
            wait_until(lambda: not b.active(), "gateway B to settle")
            ringing = asyncio.run(probe(3))
            wait_until(lambda: not b.active(), "gateway B to settle")
            snap = b.snapshot()
            shown = [e.raw.get("peerdisplayname", "") for e in bob.ctrl.history if e.type == "CALL_INCOMING"]
    finally:
        block.release()
    print("frozen phone:", frozen)
    print("ringing phone:", ringing, "bob's phone showed:", shown)
    print("B:", snap.get("unanswered_secure_calls"), snap.get("sas_probe_suspects"))
    assert all(p.early and p.sas is None for p in frozen), frozen  # got its 183, never the SAS
    learned = [p for p in ringing if p.sas is not None]
    assert [p.sas is not None for p in ringing] == [True, True, False], ringing  # the third: past the limit
    assert all(p.early for p in ringing), ringing
    # every SAS the prober learned was on bob's ringing display first: each guess cost a visible ring
    assert learned and all(any(p.sas in text for text in shown) for p in learned), (learned, shown)
    assert snap["unanswered_secure_calls"]["before-reveal"] >= 2, snap["unanswered_secure_calls"]
    assert snap["unanswered_secure_calls"]["alert"] == 1, snap["unanswered_secure_calls"]
    assert snap["sas_probe_suspects"] == ["carol@127.0.0.1"], snap
    finished = b.snapshot()["finished"][n_b:]
    assert all(c["state"] == "failed" for c in finished), finished  # nothing was ever answered
    assert "possible SAS probing: carol@127.0.0.1" in b.log()
