"""Self-tests of the userspace rtpengine launcher and its ng (bencode over UDP) client."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.requires import requires
from tests.testbed.rtpengine import Rtpengine, bdecode, bencode

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("rtpengine")]

OFFER_SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def test_bencode_round_trip() -> None:
    value = {"command": "offer", "flags": ["a", "b"], "n": 42, "nested": {"x": b"\xff\x00"}}
    assert bencode(value) == b"d7:command5:offer5:flagsl1:a1:be1:ni42e6:nestedd1:x2:\xff\x00ee"
    assert bdecode(bencode(value)) == value
    with pytest.raises(ValueError):
        bdecode(b"i1ee")


def test_rtpengine_answers_ping_and_relays_an_offer_into_its_port_range(tmp_path: Path) -> None:
    with Rtpengine(tmp_path) as rtp:
        assert rtp.ng({"command": "ping"}) == {"result": "pong"}
        reply = rtp.ng(
            {"command": "offer", "call-id": "tb-1", "from-tag": "a", "sdp": OFFER_SDP,
             "replace": ["origin", "session-connection"]}
        )  # fmt: skip
        assert reply["result"] == "ok"
        media_line = next(line for line in reply["sdp"].split("\r\n") if line.startswith("m=audio "))
        port = int(media_line.split()[1])
        lo, hi = rtp.rtp_range
        assert lo <= port <= hi and port != 40000
        assert rtp.ng({"command": "list"})["calls"] == ["tb-1"]
        assert rtp.ng({"command": "delete", "call-id": "tb-1", "from-tag": "a"})["result"] == "ok"
        assert rtp.ng_socket == f"udp:127.0.0.1:{rtp.ng_port}"
    assert rtp.proc is not None and not rtp.proc.alive
