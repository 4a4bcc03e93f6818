"""Hostile SIP at a listening phone's port during a secure call: answered or dropped per RFC 3261, the log stays
short, and the call's audio is untouched.

Raw socket: truncated, oversized, wrong Content-Length, garbage headers, bad version, unknown methods, stray
in-dialog requests, a flood of INVITEs. Then sipp floods INVITEs too. bob's SIP port is hit directly.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.live_call import collect_responses, live_secure_call
from tests.support.requires import requires
from tests.support.sip_probe import FINAL_ERROR, PLAIN_SDP, cases, finals, sip
from tests.testbed.sipp import run_uac

pytestmark = [pytest.mark.integration, pytest.mark.hardening, pytest.mark.interop, requires("sipp")]

FLOOD = 200
SIPP_CALLS = 100
MAX_LOG_LINES = 60
"""bob's whole log for the call plus every attack: rate-limited warnings, never one line per datagram."""


def test_hostile_sip_during_a_secure_call(tmp_path: Path) -> None:
    with live_secure_call(tmp_path) as call:
        call.wait_media(50, timeout=30)
        port = call.bob.sip_port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            me = s.getsockname()[1]
            battery = cases(me)
            for _, data, _ in battery:
                s.sendto(data, ("127.0.0.1", port))
            answered = [cid for cid, _, want in battery if want is not None]
            codes = collect_responses(s, lambda c: all(finals(c.get(cid, [])) for cid in answered), timeout=15)
            silent = collect_responses(s, lambda c: False, timeout=0.5)  # late replies to the ignored ones

            flood_ids = [f"flood-{i}" for i in range(FLOOD)]
            for i, cid in enumerate(flood_ids):
                s.sendto(sip("INVITE", cid, me, body=PLAIN_SDP, sdp=True), ("127.0.0.1", port))
                if i % 50 == 49:
                    flood_codes = collect_responses(s, lambda c: False, timeout=0.05)
                    for k, v in flood_codes.items():
                        codes.setdefault(k, []).extend(v)
            more = collect_responses(s, lambda c: all(finals(c.get(cid, [])) for cid in flood_ids), timeout=20)
            for k, v in more.items():
                codes.setdefault(k, []).extend(v)
        sipp = run_uac(tmp_path, f"127.0.0.1:{port}", calls=SIPP_CALLS, rate=100, service="bob", timeout=30)
        assert call.alice.wait(90) == 0, call.alice.log()
        assert call.bob.wait(20) == 0, call.bob.log()

    for cid, _, want in battery:
        got = finals(codes.get(cid, []) + silent.get(cid, []))
        print(f"{cid}: {sorted(set(got)) or 'no response'}")
        if want is None:
            assert not got, f"{cid}: answered {got}, RFC 3261 wants silence"
        else:
            assert got and set(got) <= want, f"{cid}: final responses {got}, want one of {sorted(want)}"
    unanswered = [cid for cid in flood_ids if not finals(codes.get(cid, []))]
    assert not unanswered, f"{len(unanswered)} of {FLOOD} flood INVITEs got no final response"
    flood_finals = {c for cid in flood_ids for c in finals(codes[cid])}
    assert flood_finals <= FINAL_ERROR, sorted(flood_finals)  # measured: 503 while bob is in his call
    assert sipp.created == SIPP_CALLS and sipp.successful == 0, sipp.log[-2000:]
    print(f"flood: {FLOOD} INVITEs, finals {sorted(flood_finals)}; sipp: {sipp.created} created, {sipp.failed} failed")

    a, b = call.alice.summary(), call.bob.summary()
    assert a["state"] == b["state"] == "ended" and a["security"] == b["security"] == "secure, unverified"
    assert a["sas"] == b["sas"] is not None
    assert a["frames_refused"] == b["frames_refused"] == 0
    for proc in (call.alice, call.bob):
        assert call.heard(proc).windowed >= 0.9, (proc.name, call.heard(proc))
    log = call.bob.log()
    assert "Traceback" not in log
    assert len(log.splitlines()) <= MAX_LOG_LINES, log
