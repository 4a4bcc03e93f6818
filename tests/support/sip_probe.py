"""Raw SIP requests for probing a stack: hand-built datagrams (well-formed or deliberately broken), the hostile
cases RFC 3261 says how to answer, and the final codes among the responses."""

from __future__ import annotations

PLAIN_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)


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


def request(
    method: str = "OPTIONS",
    *,
    version: str = "SIP/2.0",
    body: bytes = b"",
    content_length: str | None = None,
    extra: bytes = b"",
    from_hf: bytes = b"<sip:junk@127.0.0.1>;tag=abc",
) -> bytes:
    cl = str(len(body)) if content_length is None else content_length
    return (
        f"{method} sip:x@127.0.0.1 {version}\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKjunk1\r\n".encode()
        + b"From: "
        + from_hf
        + f"\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: junk-1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n".encode()
        + extra
        + f"Content-Length: {cl}\r\n\r\n".encode()
        + body
    )
