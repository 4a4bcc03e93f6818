"""A phone on the gateway's own inside TLS listener (issue 12): real Kamailio with digest auth as the PBX, reached
by gateway A over TLS on its outside listener; gateway B fronts bob (plain baresip). alice is a baresip phone with
SDES-SRTP (``mediaenc=srtp-mand``) that REGISTERs to gateway A over TLS with digest credentials, under
``inside.srtp = "required"``: she calls bob and bob calls her, audio crosses both ways, and her leg is SRTP. On A's
TLS listeners, from the attacker's address (127.0.0.66) and the PBX's: an unauthenticated REGISTER on the inside one
is challenged (401), a REGISTER on the outside one (the PBX's) is refused 403, counted and logged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.config_gateway import (
    CALL_TIMEOUT_S,
    PASSWORDS,
    GatewayProc,
    start_config_gateway,
    user,
    wait_idle,
)
from tests.support.pki import make_pki
from tests.support.requires import requires
from tests.support.sip_tls_client import TlsSipClient
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from tests.testbed.kamailio import Kamailio
from voipgw.audio.compare import AudioMatch, compare_audio
from voipgw.audio.wav import read_wav

pytestmark = [
    pytest.mark.integration,
    pytest.mark.interop,
    pytest.mark.hardening,
    requires("kamailio", "baresip", "sox"),
]

INSIDE_PW = "alice-phone-pw"
ATTACKER = "127.0.0.66"
MIN_CORRELATION = 0.9
CALL_SECONDS = 5.0


def _heard(sent: Path, recording: Path) -> AudioMatch:
    ref, rec = read_wav(sent), read_wav(recording)
    return compare_audio(ref[: len(rec)], rec)


def _register_once(port: int, ca: Path, source: str) -> str:
    """One REGISTER for alice without credentials over a fresh TLS connection from ``source``; the final response."""
    client = TlsSipClient(port, ca, source)
    try:
        client.request("REGISTER", port, "probe-" + str(port), user="alice")
        return client.final("REGISTER")
    finally:
        client.close()


def _call(caller: Baresip, callee: Baresip, uri: str) -> tuple[Path, Path]:
    """``caller`` dials ``uri``; the call ends when a phone's clip ends. (caller's, callee's) received audio."""
    caller.dial(uri)
    callee.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
    caller.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
    caller.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S + CALL_SECONDS)
    callee.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
    return caller.received_wav(), callee.received_wav()


def test_a_phone_registers_and_calls_over_the_inside_tls_listener_with_srtp(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    cert, key = pki.kamailio  # a certificate for 127.0.0.1 signed by the test CA (the PBX's and gateway A's)
    phone_cert, phone_key = pki.phone
    phone_pem = tmp_path / "alice.pem"
    phone_pem.write_bytes(phone_cert.read_bytes() + phone_key.read_bytes())
    clip = speech.make_variant(tmp_path / "clip8.wav", 8000, seconds=CALL_SECONDS)
    bob_dir = tmp_path / "bob"
    bob_dir.mkdir()
    with (
        Kamailio(tmp_path, users=PASSWORDS, auth=True, tls_cert=pki.kamailio) as pbx,
        Baresip(bob_dir, user="bob", play=clip, codecs=("PCMU",)) as bob,
    ):
        extra: dict[str, dict[str, Any]] = {
            "inside": {"auth": True, "realm": "office", "srtp": "required", "tls_port": 0},
            "outside": {
                "transport": "tls",
                "tls_ca_file": str(pki.ca),
                "tls_cert_file": str(cert),
                "tls_key_file": str(key),
            },
        }
        alice_user = {"outside_aor": "alice@127.0.0.1", "password": PASSWORDS["alice"], "inside_password": INSIDE_PW}
        gws: list[GatewayProc] = []
        try:
            pbx_tls = ("127.0.0.1", pbx.tls_port)
            gws.append(start_config_gateway(tmp_path, "gwa", pbx_tls, {"alice": alice_user}, extra=extra))
            gws.append(start_config_gateway(tmp_path, "gwb", pbx.addr, {"bob": user("bob", bob)}, log_format="text"))
            gwa, gwb = gws
            tls_port = int(gwa.status_json()["listen_tls"])
            assert tls_port not in (gwa.sip_port, gwa.outside_port), tls_port

            # The attacker registering as alice: no credentials on the inside TLS listener, challenged; on the outside
            # TLS listener (the PBX's side) refused 403 whoever sends it.
            for source in (ATTACKER, "127.0.0.1"):
                challenged = _register_once(tls_port, pki.ca, source)
                assert challenged.startswith("SIP/2.0 401 ") and "WWW-Authenticate" in challenged, challenged
                refused = _register_once(gwa.outside_port, pki.ca, source)
                assert refused.startswith("SIP/2.0 403 ") and "outside listener" in refused, refused

            with Baresip(
                tmp_path,
                user="alice",
                play=clip,
                codecs=("PCMU",),
                registrar=f"127.0.0.1:{tls_port}",
                password=INSIDE_PW,
                transport="tls",
                extra_config=f"module                  srtp.so\nsip_certificate         {phone_pem}\n"
                f"sip_cafile              {pki.ca}\n",
                extra_account_params=";mediaenc=srtp-mand",
            ) as alice:
                alice.wait_registered(timeout=15.0)
                gwa.wait_registered()
                gwb.wait_registered()
                phone = gwa.status_json()["inside"][0]
                assert phone["state"] == "registered", phone
                assert "transport=tls" in json.dumps(phone), phone

                # alice -> bob, dialled at gateway A's inside TLS listener; then bob -> alice, rung over TLS.
                to_alice_1, to_bob_1 = _call(alice, bob, f"sip:bob@127.0.0.1:{tls_port}")
                wait_idle(gwa, 1)
                to_bob_2, to_alice_2 = _call(bob, alice, f"sip:alice@127.0.0.1:{gwb.sip_port}")
                snap = wait_idle(gwa, 2)
            status = gwa.status_json()
        finally:
            for gw in gws:
                gw.stop()
    matches = [_heard(clip, wav) for wav in (to_alice_1, to_bob_1, to_bob_2, to_alice_2)]
    print("inside TLS + SRTP: " + ", ".join(f"{m.windowed:.3f}" for m in matches))
    calls = snap["finished"]
    assert [c["direction"] for c in calls] == ["outbound", "inbound"], calls
    for call in calls:
        assert call["inside_srtp"] is True, call
        assert call["security"] == "secure, unverified", call
    for match in matches:
        assert match.windowed >= MIN_CORRELATION, matches
    assert status["zone_refusals"].get("register_on_outside") == 2, status["zone_refusals"]
    log = gwa.log()
    assert f"REGISTER from {ATTACKER}:" in log and "on the outside listener refused (403)" in log, log[-3000:]
    assert "inline:" not in log and "a=crypto" not in log  # no SDES key is ever logged
