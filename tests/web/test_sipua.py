"""The web phone's SIP parsing (voipgw.web.sipua): what it reads from the gateway's answers."""

from __future__ import annotations

import pytest

from voipgw.web.sipua import _challenge, _tag_of, _uri_of, parse_message


def test_parse_response_with_compact_and_folded_headers() -> None:
    data = (
        b"SIP/2.0 488 Not Acceptable Here\r\nv: SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bKx\r\n"
        b"t: <sip:bob@h>;tag=abc\r\ni: cid@voipgw-web\r\nCSeq: 2 INVITE\r\n"
        b'Warning: 399 gw "voipgw gateway: far end\r\n  has no voipgw"\r\nContent-Length: 0\r\n\r\n'
    )
    msg = parse_message(data)
    assert msg is not None and msg.code == 488 and msg.method == "" and msg.cseq_method == "INVITE"
    assert msg.get("call-id") == "cid@voipgw-web" and _tag_of(msg.get("to")) == "abc"
    assert msg.get("warning") == '399 gw "voipgw gateway: far end has no voipgw"'


@pytest.mark.parametrize("data", [b"", b"\xff\xfe\r\n\r\n", b"INVITE sip:x SIP/2.0\r\nVia: x\r\n"])
def test_unreadable_datagrams_are_none(data: bytes) -> None:
    assert parse_message(data) is None


def test_request_method_and_uris() -> None:
    msg = parse_message(b"BYE sip:alice@127.0.0.1:5 SIP/2.0\r\nCall-ID: c\r\nCSeq: 7 BYE\r\n\r\n")
    assert msg is not None and msg.code == 0 and msg.method == "BYE"
    assert _uri_of('"Bob" <sip:bob@127.0.0.1:5070;transport=udp>;expires=3') == "sip:bob@127.0.0.1:5070;transport=udp"
    assert _uri_of("sip:bob@h;lr") == "sip:bob@h"


def test_challenge_parameters() -> None:
    c = _challenge('realm="voipgw", nonce="n1,2", algorithm=SHA-256, qop="auth,auth-int", opaque="o"')
    assert c == {"realm": "voipgw", "nonce": "n1,2", "algorithm": "SHA-256", "qop": "auth,auth-int", "opaque": "o"}
