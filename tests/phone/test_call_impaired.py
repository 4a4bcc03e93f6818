"""A secure call through a seeded impairment relay (10% loss, bursts, reordering, duplication, jitter)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from tests.support.phone_calls import wait_for_call
from tests.support.phones import SPEECH, start_caller, start_listener
from tests.testbed.impair import Impairment, ImpairmentRelay
from tests.testbed.sip_mangler import SipMangler, redirect_media
from voipgw.audio.compare import compare_audio
from voipgw.audio.wav import read_wav

pytestmark = pytest.mark.integration


class RelayThread:
    """Runs the asyncio impairment relay in its own loop so the test can drive subprocesses meanwhile."""

    def __init__(self, impairment: Impairment) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.relay: ImpairmentRelay | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.impairment = impairment

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.relay = self.loop.run_until_complete(ImpairmentRelay.open(self.impairment))
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.relay.close())
        self.loop.close()

    def __enter__(self) -> ImpairmentRelay:
        self.thread.start()
        assert self.ready.wait(5)
        assert self.relay is not None
        return self.relay

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_secure_call_survives_loss_reordering_and_duplication(tmp_path: Path) -> None:
    impairment = Impairment(
        loss=0.10, burst_enter=0.01, burst_exit=0.5, reorder=0.05, duplicate=0.02, jitter=0.01, seed=1234
    )
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH))
    with RelayThread(impairment) as relay:
        relay_b = relay.addr_b

        def media_via_relay(sdp: str) -> str:
            # Bob must send alice's media to the relay; alice then latches onto the relay's address.
            sdp, relay.peer["a"] = redirect_media(sdp, *relay_b)
            return sdp

        with SipMangler(("127.0.0.1", bob.sip_port), on_offer=media_via_relay) as mangler:
            alice = start_caller(tmp_path, "alice", f"sip:bob@127.0.0.1:{mangler.port}", "--play", str(SPEECH))
            wait_for_call(alice, bob)
        stats = relay.stats
    a, b = alice.summary(), bob.summary()
    assert a["security"] == b["security"] == "secure, unverified"
    assert a["sas"] == b["sas"]
    # bob -> alice went entirely through the relay: what alice opened is what the relay delivered
    to_a = stats.b_to_a
    assert to_a.received > 300 and to_a.dropped > 0 and to_a.duplicated >= 0
    assert a["frames_refused"] <= to_a.duplicated  # only duplicates may be refused (as replays)
    assert a["frames_opened"] + a["frames_refused"] == a["frames_received"]
    assert a["frames_opened"] >= to_a.forwarded - to_a.duplicated - 5
    speech = read_wav(SPEECH)
    heard_by_alice = compare_audio(speech, read_wav(alice.wav))
    heard_by_bob = compare_audio(speech, read_wav(bob.wav))
    assert heard_by_alice.windowed >= 0.7, heard_by_alice
    assert heard_by_bob.windowed >= 0.7, heard_by_bob
