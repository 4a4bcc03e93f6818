"""A secure call through a relay that rewrites every RTP header (SSRC, sequence numbers with jumps, timestamps):
voipgw never depends on them, so nothing is refused and the audio is intact."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.phone_calls import wait_for_call
from tests.support.phones import SPEECH, start_caller, start_listener
from tests.testbed.rtp_rewriter import RtpRewriter
from tests.testbed.sip_mangler import SipMangler, redirect_media
from voipgw.audio.compare import compare_audio
from voipgw.audio.wav import read_wav

pytestmark = pytest.mark.integration


def test_secure_call_survives_rtp_header_rewriting(tmp_path: Path) -> None:
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH))
    with RtpRewriter() as relay:

        def media_via_relay(sdp: str) -> str:
            sdp, relay.peer_a = redirect_media(sdp, *relay.addr_a)
            return sdp

        with SipMangler(("127.0.0.1", bob.sip_port), on_offer=media_via_relay) as mangler:
            alice = start_caller(tmp_path, "alice", f"sip:bob@127.0.0.1:{mangler.port}", "--play", str(SPEECH))
            wait_for_call(alice, bob)
        rewritten, seen = relay.rewritten, relay.seen_in
    a, b = alice.summary(), bob.summary()
    assert rewritten["a"] > 300 and rewritten["b"] > 300  # both directions really went through the rewriter
    assert relay.ssrc["a"] not in seen["a"] and relay.ssrc["b"] not in seen["b"]
    assert a["security"] == b["security"] == "secure, unverified" and a["sas"] == b["sas"]
    assert a["frames_refused"] == 0 and b["frames_refused"] == 0
    speech = read_wav(SPEECH)
    assert compare_audio(speech, read_wav(alice.wav)).windowed >= 0.9
    assert compare_audio(speech, read_wav(bob.wav)).windowed >= 0.9
