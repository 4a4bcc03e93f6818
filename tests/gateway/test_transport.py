"""Mixed transports in gateway mode: UDP inside legs (baresip), the outside leg over SIP/TLS (or TCP) through a
real Kamailio with digest auth. Both gateways register over the stream transport, the call carries audio both
ways with the hybrid suite, and no clear-text SIP crosses between a gateway and the PBX.

Start-up mistakes in the new keys (an unknown transport, a missing CA file) are one line and exit 2."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.config_gateway import GATEWAY_BLOCK, OUTSIDE_SIP, toml_value, zone_tables
from tests.support.phones import ROOT
from tests.support.pki import Pki, make_pki
from tests.support.requires import requires
from tests.support.sniffer import LoopbackSniffer, tcp_streams
from tests.support.topology import (
    CALL_TIMEOUT,
    MIN_CORRELATION,
    PASSWORDS,
    RATES,
    READY_TIMEOUT_S,
    Node,
    heard,
    is_registered,
    start_node,
    wait_closed,
    wait_until,
)
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from tests.testbed.kamailio import Kamailio
from tests.testbed.ports import PortBlock, reserve_block

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "baresip", "sox")]

BARESIP_BLOCK = 50
USERS = {"alice": PASSWORDS["alice"], "bob": PASSWORDS["bob"]}


def _toml(path: Path, ports: PortBlock, registrar: int, user: str, phone: PortBlock, sock: Path, tls: str) -> Path:
    zones = {k: "\n".join(f"{key} = {toml_value(v)}" for key, v in t.items()) for k, t in zone_tables(ports).items()}
    path.write_text(
        f"""[gateway]
control_socket = "{sock}"
[inside]
{zones["inside"]}
[outside]
{zones["outside"]}
registrar = "127.0.0.1:{registrar}"
register_expires = 60
{tls}
[users.{user}]
outside_aor = "{user}@127.0.0.1"
password = "{PASSWORDS[user]}"
inside_contact = "127.0.0.1:{phone[0]}"
"""
    )
    return path


def _gateways(workdir: Path, pbx: Kamailio, registrar: int, tls: str, phones: dict[str, PortBlock]) -> Iterator[Node]:
    sockdir = Path(tempfile.mkdtemp(prefix="vgtls", dir="/tmp"))
    nodes: list[Node] = []
    blocks = {n: reserve_block(GATEWAY_BLOCK) for n in ("gw-a", "gw-b")}
    try:
        for name, user in (("gw-a", "alice"), ("gw-b", "bob")):
            toml = _toml(
                workdir / f"{name}.toml", blocks[name], registrar, user, phones[user], sockdir / f"{name}.sock", tls
            )
            nodes.append(start_node(workdir, name, blocks[name], toml=toml))
        for node in nodes:
            wait_until(lambda n=node: is_registered(n), f"{node.proc.name}'s registration", READY_TIMEOUT_S)
        yield from nodes
    finally:
        for node in nodes:
            node.proc.stop()
        for block in blocks.values():
            block.release()
        shutil.rmtree(sockdir, ignore_errors=True)


def _call(workdir: Path, gw_a: Node, phones: dict[str, PortBlock], seconds: float = 3.0) -> tuple[float, float]:
    rate = RATES["PCMU"]
    short = speech.make_variant(workdir / "short.wav", rate, seconds=seconds)
    long = speech.make_variant(workdir / "long.wav", rate)
    with (
        Baresip(workdir, user="bob", play=long, codecs=("PCMU",), srate=rate, ports=phones["bob"]) as bob,
        Baresip(workdir, user="alice", play=short, codecs=("PCMU",), srate=rate, ports=phones["alice"]) as alice,
    ):
        alice.dial(f"sip:bob@127.0.0.1:{gw_a.port}")
        bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        alice.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT)
        wait_closed(alice)
        wait_closed(bob)
        return heard(short, bob.received_wav()).windowed, heard(long, alice.received_wav()).windowed


@pytest.mark.parametrize("transport", ["tls", "tcp"])
def test_gateways_call_each_other_with_the_outside_leg_over_a_stream_transport(tmp_path: Path, transport: str) -> None:
    pki: Pki = make_pki(tmp_path)
    phones = {u: reserve_block(BARESIP_BLOCK) for u in ("alice", "bob")}
    cert, key = pki.phone
    tls = (
        f'transport = "tls"\ntls_ca_file = "{pki.ca}"\ntls_cert_file = "{cert}"\ntls_key_file = "{key}"'
        if transport == "tls"
        else 'transport = "tcp"\npq_interval_s = 1'  # over TCP the call also runs in-call ML-KEM epochs (§B.12)
    )
    try:
        with Kamailio(tmp_path, users=USERS, auth=True, tls_cert=pki.kamailio) as pbx, LoopbackSniffer() as sniff:
            registrar = pbx.tls_port if transport == "tls" else pbx.port
            gateways = _gateways(tmp_path, pbx, registrar, tls, phones)
            try:
                gw_a, gw_b = next(gateways), next(gateways)
                to_bob, to_alice = _call(tmp_path, gw_a, phones, seconds=8.0 if transport == "tcp" else 3.0)
                out = gw_a.finished_after(0)
                inn = gw_b.finished_after(0)
            finally:
                gateways.close()
        print(f"{transport}: to bob {to_bob:.3f}, to alice {to_alice:.3f}, suite {out.get('outside_suite')}")
        assert out["security"] == inn["security"] == "secure, unverified", (out, inn)
        assert out["sas"] is not None and out["sas"] == inn["sas"]
        assert out["outside_suite"] == inn["outside_suite"] == "x25519-mlkem768", (out, inn)
        if transport == "tcp":  # an ~8 s call with an exchange every second: epochs completed, shown in the status
            assert out["outside_pq_epochs"] >= 1 and inn["outside_pq_epochs"] >= 1, (out, inn)
        assert to_bob >= MIN_CORRELATION and to_alice >= MIN_CORRELATION, (to_bob, to_alice)
        log = gw_a.log()
        assert f"outside SIP over {transport}" in log, log
        pbx_ports = {pbx.port, pbx.tls_port}
        gw_ports = {gw_a.port, gw_b.port} | {n.proc.ports[OUTSIDE_SIP] for n in (gw_a, gw_b) if n.proc.ports}
        # The outside leg: no SIP datagram between a gateway's SIP port and the PBX (the inside legs are UDP).
        udp_sip = [
            p
            for p in sniff.packets
            if p.proto == 17 and {p.src_port, p.dst_port} & pbx_ports and {p.src_port, p.dst_port} & gw_ports
        ]
        assert not udp_sip, [p.payload[:60] for p in udp_sip]
        streams = tcp_streams(sniff.packets, {registrar})
        carried = b"".join(streams.values())
        assert len(carried) > 4000, len(carried)  # REGISTERs, both INVITEs and their answers
        if transport == "tls":
            assert b"SIP/2.0" not in carried and b"a=voipgw" not in carried
        else:
            assert b"INVITE sip:" in carried and b"a=voipgw" in carried
    finally:
        for block in phones.values():
            block.release()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('transport = "sctp"', "outside.transport: 'sctp' is not one of udp, tcp, tls, auto"),
        ('transport = "tls"\ntls_ca_file = "/nonexistent/ca.pem"', "outside.tls_ca_file: /nonexistent/ca.pem does not"),
        ('tls_pinned_sha256 = "12:34"', "outside.tls_pinned_sha256: not a hex SHA-256 fingerprint"),
    ],
)
def test_a_bad_transport_setting_is_one_line_and_exit_2(tmp_path: Path, lines: str, message: str) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f'[inside]\nlisten = "127.0.0.1:0"\n[outside]\nregistrar = "127.0.0.1:5060"\n{lines}\n'
        '[users.alice]\noutside_aor = "alice@127.0.0.1"\npassword = "x"\n'
    )
    run = subprocess.run(
        [sys.executable, "-m", "voipgw.cli.main", "--home", str(tmp_path / "h"), "gateway", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert run.returncode == 2, (run.stdout, run.stderr)
    lines_out = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines_out) == 1 and message in lines_out[0], run.stderr
    assert "Traceback" not in run.stderr
