"""The key exchange in the media path (docs/PROTOCOL.md §C.6) between two real softphones, through a relay that
deletes ``a=voipgw`` from every SDP (what a B2BUA PBX does): the call is still sealed end to end, both ends agree on
the SAS, and neither ever sent or played a clear frame. With in-band turned off the old refusal stands, and a path
that also destroys the in-band packets (a transcoding PBX) is refused, never clear."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ratchet.inband import is_inband
from tests.support.phones import SPEECH, PhoneProc, assert_secure_call, start_caller, start_listener
from tests.support.requires import requires
from tests.testbed.sip_mangler import SdpHook, SipMangler
from tests.testbed.sipp import SippUas
from voipgw.demo import read_wire

pytestmark = [pytest.mark.integration]

SHORT = ("--play", str(SPEECH))


def strip_voipgw(sdp: str) -> str:
    return re.sub(r"a=voipgw:[^\r\n]*\r\n", "", sdp)


def _call_through(
    tmp_path: Path,
    on_offer: SdpHook,
    on_answer: SdpHook | None,
    extra: tuple[str, ...] = (),
) -> tuple[PhoneProc, PhoneProc, SipMangler]:
    """alice calls bob through a relay that rewrites the offer (and the answer, if given); returns both phones,
    finished, and the relay (for its counters). ``extra`` goes to both phones."""
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), *extra)
    with SipMangler(("127.0.0.1", bob.sip_port), on_offer=on_offer, on_answer=on_answer) as relay:
        relay.in_path = on_answer is not None  # the replies come back through the relay to be rewritten
        alice = start_caller(tmp_path, "alice", f"sip:bob@127.0.0.1:{relay.port}", *SHORT, *extra)
        try:
            alice.wait(40)
            bob.wait(15)
        finally:
            alice.stop()
            bob.stop()
    return alice, bob, relay


def test_a_stripped_attribute_is_replaced_by_the_key_exchange_in_the_media_path(tmp_path: Path) -> None:
    alice, bob, relay = _call_through(tmp_path, strip_voipgw, strip_voipgw)
    assert alice.proc.returncode == 0 and bob.proc.returncode == 0, (alice.log(), bob.log())
    assert relay.offers_rewritten >= 1 and relay.answers_rewritten >= 1
    assert_secure_call(alice, bob)  # same SAS and safety number, audio both ways, nothing clear on the wire
    a, b = alice.summary(), bob.summary()
    for side in (a, b):
        assert side["key_exchange"] == "media" and side["call_id_bound"] is False, side
        assert side["inband_sent"] >= 1 and side["inband_received"] >= 1, side
        assert side["inband_refused"] == {}, side
    # Each side's first packet was its half of the key exchange, never audio (the taps hold what arrived):
    assert is_inband(read_wire(bob.wire)[0]) and is_inband(read_wire(alice.wire)[0])
    assert "key exchange in the media path" in alice.log() and "key exchange in the media path" in bob.log()


def test_with_the_media_path_turned_off_a_stripped_offer_is_refused_as_before(tmp_path: Path) -> None:
    alice, _bob, _relay = _call_through(tmp_path, strip_voipgw, None, ("--no-inband",))
    assert alice.proc.returncode == 1, alice.log()
    a = alice.summary()
    assert a["state"] == "failed" and "488" in a["reason"] and "carries no voipgw key exchange" in a["reason"], a
    assert a["frames_sent"] == 0 and a["inband_sent"] == 0


def blackhole_media(sdp: str) -> str:
    """Point the SDP's audio at a port where nothing listens: what a PBX that transcodes the audio does to the
    in-band packets (they never arrive as they were sent)."""
    return re.sub(r"m=audio \d+", "m=audio 9", strip_voipgw(sdp))


def test_a_path_that_destroys_the_in_band_packets_is_refused_never_clear(tmp_path: Path) -> None:
    alice, bob, _relay = _call_through(tmp_path, blackhole_media, blackhole_media)
    assert alice.proc.returncode == 1, alice.log()
    a, b = alice.summary(), bob.summary()
    assert a["state"] == b["state"] == "failed", (a, b)
    assert "no key exchange" in a["reason"] and "media path" in a["reason"], a["reason"]
    assert "no key exchange" in b["reason"], b["reason"]
    for side, tap in ((a, alice.wire), (b, bob.wire)):
        assert side["frames_sent"] == 0 and side["frames_played"] == 0, side
        assert all(is_inband(p) for p in read_wire(tap)) if tap.exists() else True


@requires("sipp")
def test_a_plain_183_is_not_cancelled_and_the_200_gets_its_own_attempt(tmp_path: Path) -> None:
    """A PBX's own early media (183, Opus, no a=voipgw) is not the callee: a caller under ``require`` tries the media
    path on it, and when nothing answers it waits for the 200 (no CANCEL), tries again there, and only then hangs up
    with the reason; no audio is ever sent."""
    with SippUas(tmp_path, name="pbx", scenario_name="uas_183_opus_then_200_plain", calls=1) as uas:
        alice = start_caller(tmp_path, "alice", f"sip:bob@{uas.address}", *SHORT)
        try:
            assert alice.wait(40) == 1, alice.log()
        finally:
            alice.stop()
        result = uas.wait(15.0)
    assert result.all_ok and result.successful == 1, result.log[-3000:]  # INVITE, 183, 200, ACK, BYE: no CANCEL
    a = alice.summary()
    assert a["state"] == "failed" and "no key exchange: the answer had no a=voipgw" in a["reason"], a
    assert a["frames_sent"] == 0 and a["frames_played"] == 0
    assert a["inband_sent"] >= 2  # bursts on the 183, then on the 200
