"""The issue's topology for the gateway tests: Kamailio (optionally with rtpengine), two gateways
(tests.testbed.gateway_node) fronting baresip phones, and the waits and probes those tests share."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.config_gateway import GATEWAY_BLOCK, OUTSIDE_SIP, toml_value, zone_tables
from tests.support.phones import ROOT, PhoneProc
from tests.testbed import capture
from tests.testbed.baresip import Baresip, BaresipEvent
from tests.testbed.gateway_node import write_config
from tests.testbed.gateway_proc import wait_listening
from tests.testbed.kamailio import Kamailio
from tests.testbed.ports import PortBlock, reserve_block
from tests.testbed.rtpengine import Rtpengine
from tests.testbed.sip_mangler import SipMangler
from voipgw.audio.compare import AudioMatch, compare_audio
from voipgw.audio.wav import read_wav

CLIP_SECONDS = 3.0
MIN_CORRELATION = 0.9
CALL_TIMEOUT = 20.0
READY_TIMEOUT_S = 20.0
SNAPSHOT_TIMEOUT_S = 10.0
BARESIP_BLOCK = 50
EPHEMERAL_OFFSET = 100  # inside the offer's x25519 ephemeral key (PROTOCOL.md §3.2)
RATES = {"PCMU": 8000, "PCMA": 8000, "G722": 16000, "opus": 48000}
MEDIA_TIMEOUT_S = 3.0
"""Each gateway ends a call whose leg has received no RTP this long (short here, so the test of it is too)."""

PASSWORDS = {"alice": "alice-pbx-pw", "bob": "bob-pbx-pw", "carol": "carol-pbx-pw", "dave": "dave-pbx-pw"}


@dataclass
class Node:
    """One gateway process (tests.testbed.gateway_node) and its on-demand snapshot."""

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
    workdir: Path
    configs: dict[str, dict[str, Any]]
    """How each gateway ("gw-a", "gw-b") was started (``start_node`` keywords), to start it again."""
    started: list[Node]
    """Every gateway process started, restarted ones too: the fixture stops them all."""

    def restart_gateway(self, name: str, meanwhile: Callable[[], None] = lambda: None) -> Node:
        """Stop gateway ``name`` ("gw-a" or "gw-b") with SIGTERM (as an operator would), run ``meanwhile`` while it
        is down (e.g. rotate an identity in its home), start it again on the same port with the same config, and
        wait until it is registered at the PBX again. Its snapshot starts afresh (no finished calls)."""
        old = self.gw_a if name == "gw-a" else self.gw_b
        ports = old.proc.ports
        assert ports is not None
        old.proc.stop()  # the process was running, so its port block stays reserved for the new one
        assert old.proc.proc.returncode == 0, old.log()
        meanwhile()
        (self.workdir / f"{name}.log").replace(self.workdir / f"{name}.log.{len(self.started)}")
        old.snapshot_path.unlink(missing_ok=True)  # the new process numbers its snapshots from 1 again
        node = start_node(self.workdir, name, ports, **self.configs[name])
        self.started.append(node)
        if name == "gw-a":
            self.gw_a = node
        else:
            self.gw_b = node
        wait_until(lambda: is_registered(node), f"{name}'s registration after its restart", READY_TIMEOUT_S)
        return node

    def phone(self, workdir: Path, user: str, play: Path, codec: str = "PCMU", **kw: Any) -> Baresip:
        return Baresip(
            workdir, user=user, play=play, codecs=(codec,), srate=RATES[codec], ports=self.phones[user], **kw
        )

    def plain_phone(self, workdir: Path, user: str, play: Path, codec: str = "PCMU") -> Baresip:
        """carol or dave: an ordinary phone registered to the PBX, with no gateway (start it, then wait for
        ``wait_registered()``)."""
        return self.phone(
            workdir, user, play, codec, registrar=f"127.0.0.1:{self.pbx.port}", password=PASSWORDS[user], regint=60
        )


def start_node(workdir: Path, name: str, block: PortBlock, **config: Any) -> Node:
    snap = workdir / f"{name}.json"
    cfg = write_config(
        workdir / f"{name}-config.json", home=workdir / f"{name}-home", port=block[0], snapshot=snap, **config
    )
    argv = [sys.executable, "-m", "tests.testbed.gateway_node", str(cfg)]
    with (workdir / f"{name}.log").open("wb") as log:
        popen = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)},
            cwd=workdir,
            start_new_session=True,  # stopped with its process group (PhoneProc.stop)
        )
    proc = PhoneProc(name, workdir, popen, block[0], block)
    wait_listening(proc, name, READY_TIMEOUT_S)
    return Node(proc, snap)


def swap_ephemeral(sdp: str) -> str:
    """What a tampering PBX does: flip one bit of the offer's ephemeral key in the handshake attribute."""

    def flip(m: re.Match[str]) -> str:
        raw = bytearray(base64.urlsafe_b64decode(m.group(1) + "=" * (-len(m.group(1)) % 4)))
        raw[EPHEMERAL_OFFSET] ^= 0x40
        return "a=voipgw:" + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")

    return re.sub(r"a=voipgw:([A-Za-z0-9_-]+)", flip, sdp)


def _gateway_toml(path: Path, ports: PortBlock, pbx: Kamailio, user: str, phone: PortBlock, sockdir: Path) -> Path:
    """The operator's TOML for one gateway fronting ``user`` (a static baresip), registering to ``pbx``: its two
    zones inside its port block (see ``config_gateway.zone_tables``), the inside one trusting 127.0.0.1 only."""
    zones = zone_tables(ports)
    inside = "\n".join(f"{k} = {toml_value(v)}" for k, v in zones["inside"].items())
    outside = "\n".join(f"{k} = {toml_value(v)}" for k, v in zones["outside"].items())
    path.write_text(
        f"""[gateway]
control_socket = "{sockdir / (path.stem + ".sock")}"
[inside]
{inside}
[outside]
{outside}
registrar = "127.0.0.1:{pbx.port}"
register_expires = 60
[users.{user}]
outside_aor = "{user}@127.0.0.1"
password = "{PASSWORDS[user]}"
inside_contact = "127.0.0.1:{phone[0]}"
[[destinations]]
match = "dave@*"
policy = "opportunistic"
"""
    )
    return path


def run_topology(
    workdir: Path, with_rtpengine: bool, speak_sas: bool = False, no_answer_timeout_s: float = 30.0
) -> Iterator[Topology]:
    """Kamailio with digest auth; each gateway registers its user from its TOML file and routes by the PBX's
    location table (only ``mallory``, the tampering path, is a static route); carol and dave register too.
    ``speak_sas``: the gateways speak the SAS after the answer's cue (it mutes the far end for ~3 s).
    ``no_answer_timeout_s``: how long gateway B rings its inside phone (gateway A waits twice as long for an
    outside answer, so B's verdict is the one that reaches alice)."""
    workdir.mkdir(parents=True, exist_ok=True)
    phones = {u: reserve_block(BARESIP_BLOCK) for u in ("alice", "bob", "carol", "dave")}
    blocks = {n: reserve_block(GATEWAY_BLOCK) for n in ("gw-a", "gw-b")}
    sockdir = Path(tempfile.mkdtemp(prefix="vgtopo", dir="/tmp"))  # Unix socket paths: 107 bytes at most
    rtp = Rtpengine(workdir).start() if with_rtpengine else None
    pbx = Kamailio(workdir, users=PASSWORDS, auth=True, rtpengine_ng=rtp.ng_socket if rtp else None)
    nodes: list[Node] = []
    configs: dict[str, dict[str, Any]] = {}
    mangler = SipMangler(("127.0.0.1", blocks["gw-b"][OUTSIDE_SIP]), on_offer=swap_ephemeral, lifetime_s=900.0)
    try:
        pbx.start()
        mangler.__enter__()
        for name, user in (("gw-a", "alice"), ("gw-b", "bob")):
            toml = _gateway_toml(workdir / f"{name}.toml", blocks[name], pbx, user, phones[user], sockdir)
            routes = {"mallory": f"sip:bob@127.0.0.1:{mangler.port}"} if user == "alice" else {}
            configs[name] = {
                "toml": toml,
                "routes": routes,
                "media_timeout_s": MEDIA_TIMEOUT_S,
                "speak_sas": speak_sas,
                # the calling side waits longer than the called side rings, as a caller's phone does
                "no_answer_timeout_s": no_answer_timeout_s * (2 if name == "gw-a" else 1),
            }
            nodes.append(start_node(workdir, name, blocks[name], **configs[name]))
        for node in nodes:
            wait_until(lambda n=node: is_registered(n), f"{node.proc.name}'s registration", READY_TIMEOUT_S)
        yield Topology(pbx, rtp, nodes[0], nodes[1], mangler, phones, workdir, configs, nodes)
    finally:
        for node in reversed(nodes):  # restarted ones first: an old node's stop releases the shared port block
            node.proc.stop()
        mangler.__exit__(None, None, None)
        pbx.stop()
        if rtp is not None:
            rtp.stop()
        for block in (*phones.values(), *blocks.values()):
            block.release()
        shutil.rmtree(sockdir, ignore_errors=True)


def is_registered(node: Node) -> bool:
    regs = node.snapshot()["registrations"]
    return bool(regs) and all(r["state"] == "registered" for r in regs)


def heard(sent: Path, recording: Path) -> AudioMatch:
    ref = read_wav(sent)
    rec = read_wav(recording)
    return compare_audio(ref[: len(rec)], rec)


def event_types(phone: Baresip) -> list[str]:
    return [e.type for e in phone.ctrl.history]


def wait_closed(phone: Baresip, timeout: float = CALL_TIMEOUT) -> BaresipEvent:
    return phone.wait_event("CALL_CLOSED", timeout=timeout)


def wait_until(predicate: Any, what: str, timeout: float = CALL_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def sip_final(packets: list[capture.CapturedPacket], code: int) -> str:
    """The first SIP response with ``code`` seen on the wire (as text), or ""."""
    head = f"SIP/2.0 {code} ".encode()
    return next((p.payload.decode(errors="replace") for p in packets if p.payload.startswith(head)), "")
