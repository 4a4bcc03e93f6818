"""The issue's topology on loopback: baresip alice - gateway A - Kamailio (the PBX, optionally with rtpengine) -
gateway B - baresip bob. Audio both ways in both directions (PCMU, G.722, Opus pass-through), what the PBX side
carries (sealed only), DTMF, hold/resume, cancel while ringing, non-gateway destinations under both policies and
a tampering PBX. The PBX, the gateways and the proxies are started once per module; phones once per test."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_node import write_config
from tests.phones import ROOT, PhoneProc
from tests.testbed import capture, speech
from tests.testbed.baresip import Baresip, BaresipEvent
from tests.testbed.kamailio import Kamailio
from tests.testbed.ports import PortBlock, reserve_block
from tests.testbed.rtpengine import Rtpengine
from tests.testbed.sip_mangler import SipMangler
from voipgw.audio.compare import AudioMatch, compare_audio
from voipgw.audio.wav import read_wav

pytestmark = pytest.mark.integration

CLIP_SECONDS = 3.0
MIN_CORRELATION = 0.9
MAX_EAVESDROP_CORRELATION = 0.3
MAX_EAVESDROP_WINDOWED = 0.6
"""Random bytes decoded as Opus reach ~0.35 on the windowed median of a 3 s stream (it searches a lag per
window); plaintext scores > 0.9 on both figures (the inside-leg control below)."""
CALL_TIMEOUT = 20.0
READY_TIMEOUT_S = 20.0
SNAPSHOT_TIMEOUT_S = 10.0
BARESIP_BLOCK = 50
EPHEMERAL_OFFSET = 100  # inside the offer's x25519 ephemeral key (PROTOCOL.md §3.2)
RATES = {"PCMU": 8000, "G722": 16000, "opus": 48000}


@dataclass
class Node:
    """One gateway process (tests.gateway_node) and its on-demand snapshot."""

    proc: PhoneProc
    snapshot_path: Path

    @property
    def port(self) -> int:
        return self.proc.sip_port

    def log(self) -> str:
        return self.proc.log()

    def snapshot(self) -> dict[str, Any]:
        """A fresh snapshot (SIGUSR1 makes the gateway write one, numbered)."""
        before = self._seq()
        self.proc.signal(signal.SIGUSR1)
        deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
        while self._seq() <= before:
            if time.monotonic() > deadline or self.proc.proc.poll() is not None:
                raise AssertionError(f"no snapshot from the gateway; log:\n{self.log()}")
            time.sleep(0.02)
        return dict(json.loads(self.snapshot_path.read_text()))

    def _seq(self) -> int:
        try:
            return int(json.loads(self.snapshot_path.read_text())["seq"])
        except (OSError, ValueError, KeyError):
            return 0

    def finished_after(self, count: int, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        """The first call that finished after ``count`` others had (waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            if len(snap["finished"]) > count:
                call: dict[str, Any] = snap["finished"][count]
                return call
            if time.monotonic() > deadline:
                raise AssertionError(f"no call finished (snapshot {snap}); log:\n{self.log()}")
            time.sleep(0.1)

    def finished_count(self) -> int:
        return len(self.snapshot()["finished"])

    def active(self) -> list[dict[str, Any]]:
        return list(self.snapshot()["calls"])


@dataclass
class Topology:
    pbx: Kamailio
    rtpengine: Rtpengine | None
    gw_a: Node
    gw_b: Node
    mangler: SipMangler
    phones: dict[str, PortBlock]
    """Port blocks of the phones (alice behind A, bob behind B, carol and dave: plain phones, no gateway)."""

    def phone(self, workdir: Path, user: str, play: Path, codec: str = "PCMU", **kw: Any) -> Baresip:
        return Baresip(
            workdir, user=user, play=play, codecs=(codec,), srate=RATES[codec], ports=self.phones[user], **kw
        )

    def contact(self, user: str) -> str:
        return f"sip:{user}@127.0.0.1:{self.phones[user][0]}"


def _start_node(workdir: Path, name: str, block: PortBlock, **config: Any) -> Node:
    snap = workdir / f"{name}.json"
    cfg = write_config(
        workdir / f"{name}-config.json", home=workdir / f"{name}-home", port=block[0], snapshot=snap, **config
    )
    argv = [sys.executable, "-m", "tests.gateway_node", str(cfg)]
    with (workdir / f"{name}.log").open("wb") as log:
        popen = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)},
            cwd=workdir,
        )
    proc = PhoneProc(name, workdir, popen, block[0], block)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while "gateway listening on" not in proc.log():
        if proc.proc.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise AssertionError(f"{name} did not start; log:\n{proc.log()}")
        time.sleep(0.05)
    return Node(proc, snap)


def swap_ephemeral(sdp: str) -> str:
    """What a tampering PBX does: flip one bit of the offer's ephemeral key in the handshake attribute."""

    def flip(m: re.Match[str]) -> str:
        raw = bytearray(base64.urlsafe_b64decode(m.group(1) + "=" * (-len(m.group(1)) % 4)))
        raw[EPHEMERAL_OFFSET] ^= 0x40
        return "a=voipgw:" + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")

    return re.sub(r"a=voipgw:([A-Za-z0-9_-]+)", flip, sdp)


def _topology(workdir: Path, with_rtpengine: bool) -> Iterator[Topology]:
    workdir.mkdir(parents=True, exist_ok=True)
    phones = {u: reserve_block(BARESIP_BLOCK) for u in ("alice", "bob", "carol", "dave")}
    blocks = {n: reserve_block(1) for n in ("gw-a", "gw-b")}
    rtp = Rtpengine(workdir).start() if with_rtpengine else None
    pbx = Kamailio(workdir, rtpengine_ng=rtp.ng_socket if rtp else None)
    nodes: list[Node] = []
    mangler = SipMangler(("127.0.0.1", blocks["gw-b"][0]), on_offer=swap_ephemeral, lifetime_s=900.0)
    try:
        pbx.start()
        mangler.__enter__()
        via_pbx = ["127.0.0.1", pbx.port]
        phone = {u: f"sip:{u}@127.0.0.1:{b[0]}" for u, b in phones.items()}
        a = _start_node(
            workdir,
            "gw-a",
            blocks["gw-a"],
            users=[{"name": "alice", "contact": phone["alice"], "outside_aor": "alice@127.0.0.1"}],
            proxy=via_pbx,
            routes={
                "bob": f"sip:bob@127.0.0.1:{blocks['gw-b'][0]}",
                "carol": phone["carol"],
                "dave": phone["dave"],
                "mallory": f"sip:bob@127.0.0.1:{mangler.port}",
            },
            destinations=[{"match": "dave@*", "policy": "opportunistic"}],
        )
        nodes.append(a)
        b = _start_node(
            workdir,
            "gw-b",
            blocks["gw-b"],
            users=[{"name": "bob", "contact": phone["bob"], "outside_aor": "bob@127.0.0.1"}],
            proxy=via_pbx,
            routes={"alice": f"sip:alice@127.0.0.1:{blocks['gw-a'][0]}"},
            destinations=[{"match": "dave@*", "policy": "opportunistic"}],
        )
        nodes.append(b)
        yield Topology(pbx, rtp, a, b, mangler, phones)
    finally:
        for node in nodes:
            node.proc.stop()
        mangler.__exit__(None, None, None)
        pbx.stop()
        if rtp is not None:
            rtp.stop()
        for block in (*phones.values(), *blocks.values()):
            block.release()


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """Kamailio relays the signalling; media flows gateway to gateway."""
    yield from _topology(tmp_path_factory.mktemp("topo-direct"), with_rtpengine=False)


@pytest.fixture(scope="module")
def relayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """Kamailio with rtpengine: the PBX relays the media too, rewriting addresses and ports."""
    yield from _topology(tmp_path_factory.mktemp("topo-rtpengine"), with_rtpengine=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("topo-clips")
    out: dict[str, Path] = {}
    for codec, rate in RATES.items():
        out[codec] = speech.make_variant(d / f"speech{rate}.wav", rate, seconds=CLIP_SECONDS)
        out[f"{codec}-long"] = speech.make_variant(d / f"speech{rate}_long.wav", rate)
    return out


def heard(sent: Path, recording: Path) -> AudioMatch:
    ref = read_wav(sent)
    rec = read_wav(recording)
    return compare_audio(ref[: len(rec)], rec)


def _types(phone: Baresip) -> list[str]:
    return [e.type for e in phone.ctrl.history]


def _closed(phone: Baresip, timeout: float = CALL_TIMEOUT) -> BaresipEvent:
    return phone.wait_event("CALL_CLOSED", timeout=timeout)


def _call(
    topo: Topology, workdir: Path, clips: dict[str, Path], codec: str, caller: str
) -> tuple[
    dict[str, Any], dict[str, Any], AudioMatch, AudioMatch, list[capture.CapturedPacket], list[capture.CapturedPacket]
]:
    """One call from ``caller`` (alice or bob) to the other through both gateways; the caller's clip ends it.
    Returns both gateways' records of it, what each phone heard of the other, and the packets on the PBX side
    (rtpengine's ports; none without it) and on the caller's inside leg."""
    callee = "bob" if caller == "alice" else "alice"
    gw_out, gw_in = (topo.gw_a, topo.gw_b) if caller == "alice" else (topo.gw_b, topo.gw_a)
    n_out, n_in = gw_out.finished_count(), gw_in.finished_count()
    lo, hi = topo.rtpengine.rtp_range if topo.rtpengine is not None else (0, -1)
    with (
        topo.phone(workdir, callee, clips[f"{codec}-long"], codec) as answerer,
        topo.phone(workdir, caller, clips[codec], codec) as dialler,
        capture.RawCapture(lo, hi) as cap,
        capture.RawCapture(*dialler.rtp_range) as inside_cap,
    ):
        dialler.dial(f"sip:{callee}@127.0.0.1:{gw_out.port}")
        answerer.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        _closed(dialler)  # its clip ended: it hangs up
        _closed(answerer)
        assert dialler.audio_codec().startswith(codec) and answerer.audio_codec().startswith(codec)
        to_callee = heard(clips[codec], answerer.received_wav())
        to_caller = heard(clips[f"{codec}-long"], dialler.received_wav())
    calls = gw_out.finished_after(n_out), gw_in.finished_after(n_in)
    return *calls, to_callee, to_caller, cap.packets, inside_cap.packets


@pytest.mark.parametrize("codec", ["PCMU", "G722", "opus"])
@pytest.mark.parametrize("caller", ["alice", "bob"])
@pytest.mark.parametrize("pbx", ["direct", "relayed"])
def test_call_through_the_pbx_carries_audio_both_ways_sealed(
    request: pytest.FixtureRequest, tmp_path: Path, clips: dict[str, Path], pbx: str, caller: str, codec: str
) -> None:
    topo: Topology = request.getfixturevalue(pbx)
    out, inn, to_callee, to_caller, packets, inside = _call(topo, tmp_path, clips, codec, caller)
    print(f"{pbx} {codec} {caller} calls: to callee {to_callee.windowed:.3f}, to caller {to_caller.windowed:.3f}")
    assert out["direction"] == "outbound" and inn["direction"] == "inbound", (out, inn)
    assert out["security"] == inn["security"] == "secure, unverified", (out, inn)
    assert out["sas"] is not None and out["sas"] == inn["sas"]
    assert inn["display"] == f"{caller} [E2E {out['sas']}]"
    assert out["cue"] == "secure"
    assert out["inside_codec"] == inn["inside_codec"] == codec.lower()
    assert out["outside_codec"] == inn["outside_codec"] == "opus"
    assert out["passthrough"] is inn["passthrough"] is (codec == "opus")
    assert out["outside_frames_refused"] == inn["outside_frames_refused"] == 0
    assert to_callee.windowed >= MIN_CORRELATION, to_callee
    assert to_caller.windowed >= MIN_CORRELATION, to_caller
    if topo.rtpengine is not None:
        # What the PBX relayed: RTP, and none of it decodes (as G.711 or Opus) to either phone's speech.
        assert sum(1 for p in packets if p.rtp() is not None) > 100, len(packets)
        for sent in (clips[codec], clips[f"{codec}-long"]):
            for as_codec in ("PCMU", "opus"):
                verdict = capture.looks_like_plain_audio(packets, sent, as_codec)
                assert verdict.streams, "no RTP stream through rtpengine"
                assert max(v.correlation for v in verdict.streams) < MAX_EAVESDROP_CORRELATION, (as_codec, verdict)
                assert max(v.windowed_correlation for v in verdict.streams) < MAX_EAVESDROP_WINDOWED, verdict
        assert capture.plain_dtmf(packets) == ""
    if codec == "PCMU":  # the control: the same detector reads the plain inside leg as the caller's speech
        assert capture.looks_like_plain_audio(inside, clips[codec], "PCMU").correlation >= MIN_CORRELATION


def _wait(predicate: Any, what: str, timeout: float = CALL_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _active(node: Node) -> dict[str, Any]:
    calls = node.active()
    assert len(calls) == 1, calls
    return calls[0]


def test_hold_and_resume_pass_through_both_gateways(direct: Topology, tmp_path: Path, clips: dict[str, Path]) -> None:
    """alice holds: gateway A re-INVITEs the outside leg (no new handshake), gateway B re-INVITEs bob's phone
    (sendonly); resume undoes it; then bob holds and resumes from his side. Audio flows again after each."""
    a, b = direct.gw_a, direct.gw_b
    n_a, n_b = a.finished_count(), b.finished_count()
    with (
        direct.phone(tmp_path, "bob", clips["PCMU-long"]) as bob,
        direct.phone(tmp_path, "alice", clips["PCMU-long"]) as alice,
    ):
        alice.dial(f"sip:bob@127.0.0.1:{a.port}")
        bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        sas = _active(a)["sas"]
        for holder, node, far in ((alice, a, b), (bob, b, a)):
            holder.hold()
            _wait(lambda n=node: _active(n)["hold"]["inside"], f"{holder.user}'s hold at its gateway")
            _wait(lambda n=far: _active(n)["hold"]["outside"], f"{holder.user}'s hold at the far gateway")
            holder.resume()
            _wait(lambda n=node: not _active(n)["hold"]["inside"], f"{holder.user}'s resume at its gateway")
            _wait(lambda n=far: not _active(n)["hold"]["outside"], f"{holder.user}'s resume at the far gateway")
        before = _active(b)["outside_frames_opened"], _active(a)["outside_frames_opened"]
        time.sleep(1.0)
        after = _active(b)["outside_frames_opened"], _active(a)["outside_frames_opened"]
        alice.hangup()
        _closed(alice)
        _closed(bob)
        reinvited = [p.proc.log_text().count("call: got re-INVITE") for p in (alice, bob) if p.proc is not None]
    out, inn = a.finished_after(n_a), b.finished_after(n_b)
    assert reinvited == [2, 2], reinvited  # each phone saw the other's hold and resume as a re-INVITE
    assert after[0] > before[0] + 25 and after[1] > before[1] + 25, (before, after)
    assert out["sas"] == inn["sas"] == sas  # the same sealed session throughout
    assert out["hold"]["reinvites"] == inn["hold"]["reinvites"] == 4, (out, inn)
    assert out["outside_frames_refused"] == inn["outside_frames_refused"] == 0
    assert "holds; passing it to the outside leg" in a.log() and "holds; passing it to the inside leg" in b.log()
