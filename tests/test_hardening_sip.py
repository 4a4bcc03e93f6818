"""Hostile SIP at a listening phone's port during a secure call: answered or dropped per RFC 3261, the log stays
short, and the call's audio is untouched.

Raw socket: truncated, oversized, wrong Content-Length, garbage headers, bad version, unknown methods, stray
in-dialog requests, a flood of INVITEs. Then sipp floods INVITEs too. bob's SIP port is hit directly.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.hardening import collect_responses, live_secure_call
from tests.testbed.sipp import run_uac

pytestmark = pytest.mark.integration

FLOOD = 200
SIPP_CALLS = 100
PLAIN_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)
MAX_LOG_LINES = 60
"""bob's whole log for the call plus every attack: rate-limited warnings, never one line per datagram."""


def sip(
    method: str,
    call_id: str,
    port: int,
    *,
    version: str = "SIP/2.0",
    body: bytes = b"",
    content_length: str | None = None,
    extra: bytes = b"",
    contact: bool = True,
    sdp: bool = False,
    to_tag: str = "",
) -> bytes:
    cl = str(len(body)) if content_length is None else content_length
    head = (
        f"{method} sip:bob@127.0.0.1 {version}\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK-{call_id}\r\n"
        f"From: <sip:mallory@127.0.0.1>;tag=m1\r\nTo: <sip:bob@127.0.0.1>{to_tag and ';tag=' + to_tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
    ).encode()
    if contact:
        head += f"Contact: <sip:mallory@127.0.0.1:{port}>\r\n".encode()
    if sdp:
        head += b"Content-Type: application/sdp\r\n"
    return head + extra + f"Content-Length: {cl}\r\n\r\n".encode() + body


OK = frozenset({200})
FINAL_4XX = frozenset(range(400, 500))
FINAL_ERROR = frozenset(range(400, 700))


def cases(port: int) -> list[tuple[str, bytes, frozenset[int] | None]]:
    """(Call-ID, datagram, the final status codes RFC 3261 allows; None: no response at all)."""
    big = b"v=0\r\na=x:" + b"y" * 9000 + b"\r\n"
    return [
        ("truncated", sip("OPTIONS", "truncated", port)[:-2], frozenset({400})),
        # over the 8192-byte datagram limit: 513 Message Too Large (RFC 3261 21.5.14)
        ("oversized", sip("INVITE", "oversized", port, body=big, sdp=True), frozenset({513})),
        ("huge", sip("OPTIONS", "huge", port, body=b"z" * 60000), frozenset({513})),
        ("cl-too-big", sip("OPTIONS", "cl-too-big", port, body=b"v=0\r\n", content_length="300"), frozenset({400})),
        # §18.3: bytes past Content-Length are discarded; the request itself is fine
        ("cl-too-small", sip("OPTIONS", "cl-too-small", port, body=b"v=0\r\nxxxx", content_length="3"), OK),
        ("cl-nan", sip("OPTIONS", "cl-nan", port, body=b"v=0\r\n", content_length="x1"), frozenset({400})),
        ("no-colon", sip("OPTIONS", "no-colon", port, extra=b"this is no header\r\n"), frozenset({400})),
        ("non-utf8", sip("OPTIONS", "non-utf8", port, extra=b"Subject: \xff\xfe\xc3\r\n"), frozenset({400})),
        ("nul", sip("OPTIONS", "nul", port, extra=b"X-Nul: \x00\x00\r\n"), frozenset({200, 400})),
        ("version", sip("OPTIONS", "version", port, version="SIP/9.9"), frozenset({505})),
        ("unknown-method", sip("FROB", "unknown-method", port), frozenset({405, 501})),
        ("options", sip("OPTIONS", "options", port), OK),
        ("invite-no-contact", sip("INVITE", "invite-no-contact", port, contact=False), frozenset({400})),
        ("invite-no-sdp", sip("INVITE", "invite-no-sdp", port), FINAL_4XX),
        ("invite-plain", sip("INVITE", "invite-plain", port, body=PLAIN_SDP, sdp=True), FINAL_4XX),
        ("invite-junk-sdp", sip("INVITE", "invite-junk-sdp", port, body=b"v=0\r\nm=audio x\r\n", sdp=True), FINAL_4XX),
        ("bye-stray", sip("BYE", "bye-stray", port, to_tag="z"), frozenset({481})),
        ("cancel-stray", sip("CANCEL", "cancel-stray", port), frozenset({481})),
        ("ack-bad-version", sip("ACK", "ack-bad-version", port, version="SIP/9.9"), None),
        ("binary", b"\x00\x01\x02 not SIP \xff" * 20, None),
    ]  # fmt: skip


def finals(codes: list[int]) -> list[int]:
    return [c for c in codes if c >= 200]


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
