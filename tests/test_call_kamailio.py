"""Two voipgw processes register at a real Kamailio (digest auth) and call each other through it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.phone_calls import wait_for_call
from tests.phones import SPEECH, PhoneProc, assert_secure_call, start_caller, start_listener
from tests.testbed.capture import CapturedPacket, RawCapture
from tests.testbed.kamailio import Kamailio

pytestmark = pytest.mark.integration

USERS = {"alice": "alicepw", "bob": "bobpw"}
VOIPGW = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "voipgw"
UDP_SIP_BUDGET = 1300
"""DESIGN: the classical suite keeps the INVITE well under this, so plain UDP carries it unfragmented."""


def sip_messages(packets: list[CapturedPacket]) -> list[tuple[int, int, str]]:
    """(src_port, dst_port, text) of every SIP datagram in capture order (keep-alive CRLFs dropped)."""
    out = []
    for p in packets:
        text = p.payload.decode("utf-8", "replace")
        if text.startswith(("SIP/2.0 ", "INVITE ", "ACK ", "BYE ", "REGISTER ", "CANCEL ", "OPTIONS ")):
            out.append((p.src_port, p.dst_port, text))
    return out


def first_line(text: str) -> str:
    return text.split("\r\n", 1)[0]


def cseq_method(text: str) -> str:
    m = re.search(r"^CSeq:\s*\d+\s+(\w+)", text, re.MULTILINE | re.IGNORECASE)
    assert m is not None, text[:300]
    return m.group(1).upper()


def registered_aors(sip: list[tuple[int, int, str]], registrar_port: int) -> set[str]:
    """AORs the registrar answered 200 OK to a REGISTER for, with a contact bound (seen on the wire)."""
    aors = set()
    for src, _, text in sip:
        if not (src == registrar_port and text.startswith("SIP/2.0 200") and cseq_method(text) == "REGISTER"):
            continue
        if re.search(r"^(Contact|m):", text, re.MULTILINE | re.IGNORECASE):
            to = re.search(r"^(?:To|t):.*?sip:([^>;\s]+)", text, re.MULTILINE | re.IGNORECASE)
            assert to is not None
            aors.add(to.group(1))
    return aors


def run_call_via(tmp_path: Path, registrar_port: int) -> tuple[PhoneProc, PhoneProc]:
    reg = ["--registrar", f"127.0.0.1:{registrar_port}"]
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), *reg, "--username", "bob", "--password", "bobpw")
    alice = start_caller(
        tmp_path,
        "alice",
        f"sip:bob@127.0.0.1:{registrar_port}",
        "--play",
        str(SPEECH),
        *reg,
        "--username",
        "alice",
        "--password",
        "alicepw",
    )
    wait_for_call(alice, bob)
    return alice, bob


def test_secure_call_through_kamailio_with_digest_auth(tmp_path: Path) -> None:
    with Kamailio(tmp_path, users=USERS, auth=True) as k:
        with RawCapture(k.port, k.port) as cap:
            alice, bob = run_call_via(tmp_path, k.port)
        sip = sip_messages(cap.packets)
    assert_secure_call(alice, bob)
    assert registered_aors(sip, k.port) >= {"alice@127.0.0.1", "bob@127.0.0.1"}
    # both REGISTERs were challenged first: the registrar really demanded the password
    assert sum(1 for s, _, t in sip if s == k.port and first_line(t).startswith("SIP/2.0 401")) >= 2
    invites = [(s, d, t) for s, d, t in sip if t.startswith("INVITE ")]
    challenged = [t for s, _, t in sip if s == k.port and t.startswith("SIP/2.0 407") and cseq_method(t) == "INVITE"]
    assert challenged, "Kamailio should challenge the INVITE with 407"
    from_alice = [t for _, d, t in invites if d == k.port]
    to_bob = [t for s, d, t in invites if s == k.port and d == bob.sip_port]
    assert len(from_alice) == 2 and "Proxy-Authorization:" in from_alice[1]
    assert len(to_bob) == 1 and "a=voipgw" in to_bob[0]
    sizes = {"invite": len(from_alice[0].encode()), "authorized": len(from_alice[1].encode())}
    sizes["relayed"] = len(to_bob[0].encode())
    print(f"INVITE bytes on the wire through Kamailio: {sizes}")
    assert max(sizes.values()) < UDP_SIP_BUDGET, sizes


def test_wrong_password_is_one_clear_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    with Kamailio(tmp_path, users=USERS, auth=True) as k:
        for cmd in (["listen", "--auto-answer"], ["call", f"sip:alice@127.0.0.1:{k.port}"]):
            argv = [str(VOIPGW), "--home", str(tmp_path / "bob-home"), *cmd, "--listen", "127.0.0.1:0"]
            argv += ["--aor", "bob@127.0.0.1", "--registrar", f"127.0.0.1:{k.port}"]
            argv += ["--username", "bob", "--password", "not-bobpw", "--record", str(tmp_path / "x.wav")]
            out = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert out.returncode == 1, out.stderr
            assert "Traceback" not in out.stderr
            last = out.stderr.strip().splitlines()[-1]
            assert last.startswith("voipgw: registration of bob@127.0.0.1") and "401" in last, out.stderr
            assert "--password" in last
            assert "not-bobpw" not in out.stderr
