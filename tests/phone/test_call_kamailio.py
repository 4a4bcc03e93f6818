"""Two voipgw processes register at a real Kamailio (digest auth) and call each other through it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.kamailio_calls import USERS, cseq_method, registered_aors, run_call_via, sip_messages
from tests.support.phones import assert_secure_call
from tests.support.requires import requires
from tests.testbed.capture import RawCapture
from tests.testbed.kamailio import Kamailio

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio")]

VOIPGW = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "voipgw"
UDP_SIP_BUDGET = 1300
"""DESIGN: the classical suite keeps the INVITE well under this, so plain UDP carries it unfragmented."""


def first_line(text: str) -> str:
    return text.split("\r\n", 1)[0]


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
