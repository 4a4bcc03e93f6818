"""Secure calls through media relays: a userspace rtpengine behind Kamailio (digest auth), and a relay that rewrites
every RTP header (SSRC, sequence number, timestamp), as B2BUAs and transcoding SBCs do.

Measured on rtpengine 10.5 (Debian): in plain forwarding it changes the ports only and keeps SSRC and sequence
numbers. It substitutes its own SSRC only when its transcoding engine is active for that media, which needs a
codec our opus-only secure SDP never offers (its inject-DTMF flag instead decodes and re-encodes the "opus", and
every frame is then refused). So header rewriting is proven with the in-test relay below.
"""

from __future__ import annotations

import asyncio
import re
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from tests.phones import SPEECH, start_caller, start_listener
from tests.test_call_kamailio import USERS, assert_secure_call, registered_aors, run_call_via, sip_messages
from tests.testbed.capture import RawCapture, parse_rtp, rtp_streams
from tests.testbed.impair import Impairment, ImpairmentRelay
from tests.testbed.kamailio import Kamailio
from tests.testbed.rtpengine import Rtpengine
from tests.testbed.sip_mangler import SipMangler

pytestmark = pytest.mark.integration

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


@dataclass
class Rewrites:
    """What the rewriting relay did to one direction."""

    packets: int = 0
    ssrc_in: set[int] = field(default_factory=set)
    ssrc_out: set[int] = field(default_factory=set)
    seq_pairs: list[tuple[int, int]] = field(default_factory=list)


class HeaderRewritingRelay(ImpairmentRelay):
    """Forwards RTP with a new SSRC, sequence numbers shifted by a fixed offset and timestamps by another, per
    direction; RTCP passes unchanged."""

    OUT_SSRC: ClassVar[dict[str, int]] = {"a": 0x5EC0_0A0A, "b": 0x5EC0_0B0B}
    SEQ_OFFSET = 31_337
    TS_OFFSET = 123_456_789

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.rewrites = {"a": Rewrites(), "b": Rewrites()}

    def _send(self, out: str, data: bytes) -> bool:
        rtp = parse_rtp(data)
        if rtp is not None:
            seq = (rtp.seq + self.SEQ_OFFSET) & 0xFFFF
            ts = (rtp.timestamp + self.TS_OFFSET) & 0xFFFF_FFFF
            new = data[:2] + struct.pack("!HII", seq, ts, self.OUT_SSRC[out]) + data[12:]
            r = self.rewrites[out]
            r.packets += 1
            r.ssrc_in.add(rtp.ssrc)
            r.ssrc_out.add(self.OUT_SSRC[out])
            r.seq_pairs.append((rtp.seq, seq))
            data = new
        return super()._send(out, data)


class RelayThread:
    """The asyncio relay in its own loop, so the test can drive subprocesses meanwhile."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.relay: HeaderRewritingRelay | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        opened = self.loop.run_until_complete(HeaderRewritingRelay.open(Impairment()))
        assert isinstance(opened, HeaderRewritingRelay)
        self.relay = opened
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(opened.close())
        self.loop.close()

    def __enter__(self) -> HeaderRewritingRelay:
        self.thread.start()
        assert self.ready.wait(5)
        assert self.relay is not None
        return self.relay

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_secure_call_survives_a_relay_that_rewrites_ssrc_sequence_and_timestamp(tmp_path: Path) -> None:
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH))
    with RelayThread() as relay:

        def media_via_relay(sdp: str) -> str:
            # Bob sends alice's media to the relay; alice latches onto the relay's address (symmetric RTP).
            m = re.search(r"m=audio (\d+)", sdp)
            assert m is not None
            relay.peer["a"] = ("127.0.0.1", int(m.group(1)))
            sdp = re.sub(r"m=audio \d+", f"m=audio {relay.addr_b[1]}", sdp)
            return re.sub(r"c=IN IP4 \S+", f"c=IN IP4 {relay.addr_b[0]}", sdp)

        with SipMangler(("127.0.0.1", bob.sip_port), on_offer=media_via_relay) as mangler:
            alice = start_caller(tmp_path, "alice", f"sip:bob@127.0.0.1:{mangler.port}", "--play", str(SPEECH))
            try:
                assert alice.wait(40) == 0, alice.log()
                assert bob.wait(15) == 0, bob.log()
            finally:
                alice.stop()
                bob.stop()
    assert_secure_call(alice, bob)
    for out in ("a", "b"):
        r = relay.rewrites[out]
        assert r.packets >= MIN_LEG_PACKETS, (out, r.packets)
        assert r.ssrc_in.isdisjoint(r.ssrc_out), (out, r.ssrc_in)
        assert all(before != after for before, after in r.seq_pairs)
