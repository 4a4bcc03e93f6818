"""A secure call through a userspace rtpengine behind Kamailio (digest auth): the relay changes every port and
carries our ciphertext untouched. Header rewriting itself is proven in tests/phone/test_call_rewritten_headers.py.

Measured on rtpengine 10.5 (Debian): in plain forwarding it changes the ports only and keeps SSRC and sequence
numbers. It substitutes its own SSRC only when its transcoding engine is active for that media, which needs a
codec our opus-only secure SDP never offers (its inject-DTMF flag instead decodes and re-encodes the "opus", and
every frame is then refused, so no garbage is ever played).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.kamailio_calls import USERS, registered_aors, run_call_via, sip_messages
from tests.support.phones import assert_secure_call
from tests.support.requires import requires
from tests.testbed.capture import RawCapture, rtp_streams
from tests.testbed.kamailio import Kamailio
from tests.testbed.rtpengine import Rtpengine

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "rtpengine")]

MIN_LEG_PACKETS = 100


def test_secure_call_through_kamailio_and_rtpengine(tmp_path: Path) -> None:
    with Rtpengine(tmp_path) as relay, Kamailio(tmp_path, users=USERS, auth=True, rtpengine_ng=relay.ng_socket) as k:
        lo, hi = relay.rtp_range
        with RawCapture(k.port, k.port) as sip_cap, RawCapture(lo, hi) as rtp_cap:
            alice, bob = run_call_via(tmp_path, k.port)
    assert_secure_call(alice, bob)
    assert registered_aors(sip_messages(sip_cap.packets), k.port) >= {"alice@127.0.0.1", "bob@127.0.0.1"}

    # Each direction has two legs: endpoint -> relay port, then another relay port -> the other endpoint.
    streams = {key: pkts for key, pkts in rtp_streams(rtp_cap.packets).items() if len(pkts) >= MIN_LEG_PACKETS}
    into_relay = {k: v for k, v in streams.items() if lo <= k[1] <= hi and not lo <= k[0] <= hi}
    out_of_relay = {k: v for k, v in streams.items() if lo <= k[0] <= hi and not lo <= k[1] <= hi}
    assert len(into_relay) == 2 and len(out_of_relay) == 2, sorted(streams)
    for (src, relay_in, _), sent in into_relay.items():
        first = {p.payload for p in sent[:50]}
        (relay_out, dst, _), got = next((k, v) for k, v in out_of_relay.items() if first & {p.payload for p in v})
        assert dst != src and relay_out != relay_in, "each endpoint talks to the relay, never to the other one"
        # the relay carries our ciphertext untouched: every payload that left it had entered it
        assert {p.payload for p in got} <= {p.payload for p in sent}
