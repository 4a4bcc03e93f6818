"""Sealed DTMF through Kamailio and a userspace rtpengine: the digits ride inside the sealed audio frames, so the
relay sees no telephone-event and one frame size per direction, and both ends get every digit once and in
order."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.kamailio_calls import USERS
from tests.support.phone_calls import wait_for_call
from tests.support.phones import SPEECH, start_caller, start_listener
from tests.support.requires import requires
from tests.testbed.capture import RawCapture, plain_dtmf
from tests.testbed.kamailio import Kamailio
from tests.testbed.rtpengine import Rtpengine

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "rtpengine")]

TE_PT = 101


def test_sealed_digits_cross_rtpengine_both_ways(tmp_path: Path) -> None:
    with Rtpengine(tmp_path) as relay, Kamailio(tmp_path, users=USERS, auth=True, rtpengine_ng=relay.ng_socket) as k:
        reg = ["--registrar", f"127.0.0.1:{k.port}"]
        with RawCapture(*relay.rtp_range) as cap:
            bob = start_listener(
                tmp_path, "bob", *reg, "--username", "bob", "--password", "bobpw", "--send-dtmf", "0A", tap=False
            )
            alice = start_caller(
                tmp_path,
                "alice",
                f"sip:bob@127.0.0.1:{k.port}",
                "--play",
                str(SPEECH),
                "--duration",
                "4",
                *reg,
                "--username",
                "alice",
                "--password",
                "alicepw",
                "--send-dtmf",
                "*72#",
                tap=False,
            )
            wait_for_call(alice, bob)
    a, b = alice.summary(), bob.summary()
    assert a["security"] == b["security"] == "secure, unverified"
    assert b["dtmf_received"] == "*72#" and a["dtmf_received"] == "0A"
    assert a["frames_refused"] == 0 and b["frames_refused"] == 0
    rtp = [(p, r) for p in cap.packets if (r := p.rtp()) is not None]
    assert len(rtp) > 4 * 100  # into and out of the relay, both ways: the capture works
    # The digits rode inside the sealed audio: the relay saw no telephone-event, only equal audio frames.
    assert not [r for _, r in rtp if r.payload_type == TE_PT]
    sizes: dict[tuple[int, int], set[int]] = {}
    for p, r in rtp:
        sizes.setdefault((p.src_port, p.dst_port), set()).add(len(r.payload))
    assert len(sizes) == 4 and all(len(v) == 1 for v in sizes.values()), sizes
    assert plain_dtmf(cap.packets) == ""
