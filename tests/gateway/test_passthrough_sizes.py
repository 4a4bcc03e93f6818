"""Opus pass-through on the wire: an inside baresip's VBR Opus packets are sealed as they are on the outside leg,
and since our SDP asks for CBR 24 kbps (which baresip honours) they are all one size (voipgw.gateway.pipes.
PASSTHROUGH_PAYLOAD); DTMF from the inside phone crosses inside them; the outside phone's own frames are one size."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import pytest

from tests.support.phones import start_listener
from tests.support.requires import requires
from tests.support.rtp_spray import udp_ports
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from tests.testbed.capture import RawCapture, plain_dtmf
from tests.testbed.gateway_proc import start_gateway, stop_with_snapshot
from voipgw.gateway.pipes import PASSTHROUGH_PAYLOAD

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("baresip", "sox")]

PROC_TIMEOUT = 25.0
OVERHEAD = 4 + 1 + 10
"""Frame header, ctl_len byte, CCM tag."""
CBR_FRAME = 60 + OVERHEAD
"""The outside leg's own frames (the gateway's cue and ringback before pass-through starts; the phone's)."""
TE_PT = 101


def test_passthrough_frames_on_the_outside_leg_fall_in_the_documented_buckets(tmp_path: Path) -> None:
    play = speech.make_variant(tmp_path / "s48k.wav", 48000, seconds=4.0)
    bob = start_listener(tmp_path, "bob", "--play", str(play), tap=False)
    cap = RawCapture(1024, 65535).start()
    try:
        with Baresip(tmp_path, user="alice", play=play, codecs=("opus",), srate=48000) as alice:
            gw, snap = start_gateway(
                tmp_path,
                "--user",
                f"alice=sip:alice@127.0.0.1:{alice.sip_port},alice@127.0.0.1",
                "--route",
                f"bob=sip:bob@127.0.0.1:{bob.sip_port}",
            )
            try:
                alice.dial(f"sip:bob@127.0.0.1:{gw.sip_port}")
                alice.wait_event("CALL_ESTABLISHED", timeout=10.0)
                bob_ports = set(udp_ports(bob.proc.pid))  # its SIP and RTP sockets, while it runs
                time.sleep(1.0)
                alice.send_dtmf("58")
                alice.wait_event("CALL_CLOSED", timeout=PROC_TIMEOUT)  # her file ended: she hangs up
                assert bob.wait(PROC_TIMEOUT) == 0, bob.log()
                lo, hi = alice.rtp_range
            finally:
                snapshot = stop_with_snapshot(gw, snap)
    finally:
        packets = cap.stop()
        bob.stop()
    b = bob.summary()
    call = snapshot["finished"][0]
    assert call["passthrough"] is True and b["security"] == "secure, unverified", (call, b)
    assert b["dtmf_received"] == "58", b
    inside = collections.Counter(
        len(r.payload) for p in packets if lo <= p.src_port <= hi and (r := p.rtp()) is not None
    )
    to_bob = collections.Counter(
        len(r.payload) for p in packets if p.dst_port in bob_ports and (r := p.rtp()) is not None
    )
    from_bob = collections.Counter(
        len(r.payload) for p in packets if p.src_port in bob_ports and (r := p.rtp()) is not None
    )
    print(f"inside phone's Opus sizes: {sorted(inside.items())}")
    print(f"outside leg to bob: {sorted(to_bob.items())}; from bob: {sorted(from_bob.items())}")
    # The phone honoured our fmtp (maxaveragebitrate=24000;cbr=1): 60-byte CBR packets once it talks.
    assert inside.most_common(1)[0][0] == 60 and inside[60] > 100, sorted(inside.items())
    # Pass-through frames: all of them 120 + overhead (60 + the most control fits); before it started, the
    # gateway's own few CBR frames.
    assert set(to_bob) <= {PASSTHROUGH_PAYLOAD + OVERHEAD, CBR_FRAME}, sorted(to_bob.items())
    assert to_bob[PASSTHROUGH_PAYLOAD + OVERHEAD] > 100 and to_bob[CBR_FRAME] < 10, sorted(to_bob.items())
    assert set(from_bob) == {CBR_FRAME}, sorted(from_bob.items())
    to_bob_types = {r.payload_type for p in packets if p.dst_port in bob_ports and (r := p.rtp()) is not None}
    assert TE_PT not in to_bob_types  # the inside phone's RFC 4733 digits crossed inside the sealed frames
    assert plain_dtmf([p for p in packets if p.dst_port in bob_ports]) == ""
