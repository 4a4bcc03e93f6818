"""Hostile SIP and RTP at a running gateway while it carries a secure call (outside voipgw caller → gateway →
inside baresip): the same battery, floods, replay and foreign frames as at a phone, the same verdicts.
"""

from __future__ import annotations

import random
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from ratchet.frame import COUNTER_MOD, COUNTER_SHIFT
from tests.support.live_call import RelayThread, collect_responses, foreign_frames, udp_burst
from tests.support.phones import SPEECH, start_caller
from tests.support.requires import requires
from tests.support.sip_probe import FINAL_ERROR, PLAIN_SDP, cases, finals, sip
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from tests.testbed.gateway_proc import start_gateway
from tests.testbed.gateway_proc import stop_with_snapshot as stop_gateway
from tests.testbed.impair import Impairment
from tests.testbed.sip_mangler import SipMangler, redirect_media
from tests.testbed.sipp import run_uac
from voipgw.audio.compare import compare_audio
from voipgw.audio.wav import read_wav, write_wav
from voipgw.demo import decode_as_plain_opus, read_wire
from voipgw.rtp.packet import build_rtp, parse_rtp
from voipgw.store.contacts import ContactStore

pytestmark = [pytest.mark.integration, pytest.mark.hardening, pytest.mark.interop, requires("baresip", "sipp", "sox")]

PROC_TIMEOUT = 25.0

FLOOD = 200
JUNK_FRAMES = 1000


def test_hostile_sip_and_rtp_at_a_gateway_during_a_secure_call(tmp_path: Path) -> None:
    rng = random.Random(7)
    long48 = tmp_path / "speech48k-long.wav"
    write_wav(long48, np.tile(read_wav(SPEECH), 2))
    long8 = speech.make_variant(tmp_path / "speech8k-long.wav", 8000, src=long48)
    with Baresip(tmp_path, user="bob", play=long8, codecs=("PCMU",)) as bob:
        gw, snap = start_gateway(tmp_path, "--user", f"bob=sip:bob@127.0.0.1:{bob.sip_port}")
        carol = None
        try:
            with RelayThread(Impairment()) as relay:
                relay_b = relay.addr_b

                def media_via_relay(sdp: str) -> str:
                    sdp, relay.peer["a"] = redirect_media(sdp, *relay_b)
                    return sdp

                with SipMangler(("127.0.0.1", gw.sip_port), on_offer=media_via_relay, lifetime_s=120) as mangler:
                    uri = f"sip:bob@127.0.0.1:{mangler.port}"
                    carol = start_caller(tmp_path, "carol", uri, "--play", str(long48), tap=False)
                    bob.wait_event("CALL_ESTABLISHED", timeout=15.0)
                    for _ in range(400):  # bounded: up to 20 s for media to flow through the relay
                        if (
                            len(relay.recorded) >= 100 and relay.peer["b"] is not None
                        ) or carol.proc.poll() is not None:
                            break
                        time.sleep(0.05)
                    assert relay.peer["b"] is not None and len(relay.recorded) >= 100, carol.log()

                    # SIP at the gateway's port
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                        s.bind(("127.0.0.1", 0))
                        me = s.getsockname()[1]
                        battery = cases(me)
                        for _, data, _ in battery:
                            s.sendto(data, ("127.0.0.1", gw.sip_port))
                        answered = [cid for cid, _, want in battery if want is not None]
                        codes = collect_responses(
                            s, lambda c: all(finals(c.get(cid, [])) for cid in answered), timeout=15
                        )
                        flood_ids = [f"gw-flood-{i}" for i in range(FLOOD)]
                        more: dict[str, list[int]] = {}
                        for i, cid in enumerate(flood_ids):
                            s.sendto(sip("INVITE", cid, me, body=PLAIN_SDP, sdp=True), ("127.0.0.1", gw.sip_port))
                            if i % 25 == 24:  # paced (in 40 ms bursts) so the kernel drops none of the flood
                                for k, v in collect_responses(s, lambda c: False, timeout=0.04).items():
                                    more.setdefault(k, []).extend(v)
                        rest = collect_responses(
                            s,
                            lambda c: all(finals(more.get(cid, []) + c.get(cid, [])) for cid in flood_ids),
                            timeout=30,
                        )
                        for k, v in rest.items():
                            more.setdefault(k, []).extend(v)
                    sipp = run_uac(tmp_path, f"127.0.0.1:{gw.sip_port}", calls=100, rate=100, service="bob", timeout=30)

                    # RTP at the gateway's outside media port
                    target = relay.peer["b"]
                    captured = list(relay.recorded)
                    sample = parse_rtp(captured[-1])
                    counter = (int.from_bytes(sample.payload[:4], "big") >> COUNTER_SHIFT) % COUNTER_MOD
                    pt, ssrc = sample.payload_type, sample.ssrc
                    udp_burst(target, [rng.randbytes(rng.randrange(1, 1400)) for _ in range(500)])
                    udp_burst(
                        target,
                        [
                            build_rtp(pt, rng.randrange(65536), 0, ssrc, rng.randbytes(rng.randrange(0, 300)))
                            for _ in range(JUNK_FRAMES)
                        ],
                    )
                    udp_burst(target, captured)
                    udp_burst(target, foreign_frames(pt, ssrc, sample.sequence + 50, counter + 50, 100))
                    hostile = JUNK_FRAMES + len(captured) + 100

                    assert carol.wait(90) == 0, carol.log()
                    bob.wait_event("CALL_CLOSED", timeout=15.0)
                    bob_heard = bob.received_wav()
        finally:
            if carol is not None:
                carol.stop()
            snapshot = stop_gateway(gw, snap)

    for cid, _, want in battery:
        got = finals(codes.get(cid, []))
        print(f"{cid}: {sorted(set(got)) or 'no response'}")
        if want is None:
            assert not got, f"{cid}: answered {got}, RFC 3261 wants silence"
        else:
            assert got and set(got) <= want | FINAL_ERROR, f"{cid}: final responses {got}"
    flood_finals = {c for cid in flood_ids for c in finals(more.get(cid, []))}
    unanswered = [cid for cid in flood_ids if not finals(more.get(cid, []))]
    print(f"flood finals {sorted(flood_finals)}, unanswered {len(unanswered)}; sipp {sipp.created}/{sipp.failed}")
    assert not unanswered and flood_finals <= FINAL_ERROR
    assert sipp.created == 100 and sipp.successful == 0

    c = carol.summary()
    assert c["state"] == "ended" and c["security"] == "secure, unverified" and c["frames_refused"] == 0
    secure = [x for x in snapshot["finished"] if x.get("security") == "secure, unverified"]
    print(f"gateway finished {len(snapshot['finished'])} calls, {len(secure)} secure")
    (call,) = secure  # every flood and sipp INVITE was refused: only carol's call was ever secure
    print({k: v for k, v in call.items() if "frames" in k})
    assert call["security"] == "secure, unverified" and call["sas"] == c["sas"]
    assert call["outside_frames_refused"] >= hostile - 5
    # against one copy of the sample: the played file repeats it, which would make the alignment ambiguous
    one8 = speech.make_variant(tmp_path / "speech8k.wav", 8000)
    to_bob = compare_audio(read_wav(one8, 8000), read_wav(bob_heard, 8000), 8000)
    to_carol = compare_audio(read_wav(SPEECH), read_wav(carol.wav))
    print(f"carol->bob {to_bob.windowed:.3f}, bob->carol {to_carol.windowed:.3f}")
    assert to_bob.windowed >= 0.9 and to_carol.windowed >= 0.9, (to_bob, to_carol)
    log = gw.log()
    assert "Traceback" not in log
    # per-reason log points (1st, 10th, 100th...) for 1600 hostile datagrams; refused INVITEs are rate-limited
    # too (tests/gateway/test_refusals_and_malformed.py counts those lines)
    assert sum(("refused" in line and "RTP" in line) or "frame refused" in line for line in log.splitlines()) <= 40
    print(f"gateway log: {len(log.splitlines())} lines")


@pytest.mark.faults
def test_a_gateway_killed_mid_call_keeps_its_store_and_takes_the_next_call(tmp_path: Path) -> None:
    """SIGKILL the gateway in the middle of carol's secure call: nothing it sent carol decodes as speech, the
    user's contact store is intact, and the restarted gateway (same home) carries a new secure call."""
    long48 = tmp_path / "speech48k-long.wav"
    write_wav(long48, np.tile(read_wav(SPEECH), 2))
    long8 = speech.make_variant(tmp_path / "speech8k-long.wav", 8000, src=long48)
    with Baresip(tmp_path, user="bob", play=long8, codecs=("PCMU",)) as bob:
        gw, _snap = start_gateway(tmp_path, "--user", f"bob=sip:bob@127.0.0.1:{bob.sip_port}")
        carol = start_caller(tmp_path, "carol", f"sip:bob@127.0.0.1:{gw.sip_port}", "--play", str(long48))
        try:
            bob.wait_event("CALL_ESTABLISHED", timeout=15.0)
            time.sleep(2.0)  # media flowing both ways
            gw.signal(signal.SIGKILL)
            assert gw.proc.wait(10) == -signal.SIGKILL
            assert carol.wait(90) in (0, 1), carol.log()
        finally:
            carol.stop()
            gw.stop()
    c = carol.summary()
    assert c["security"] == "secure, unverified" and c["frames_opened"] > 50
    eavesdropped = compare_audio(read_wav(SPEECH), decode_as_plain_opus(read_wire(carol.wire)))
    assert eavesdropped.windowed < 0.2, eavesdropped

    store_home = tmp_path / "gateway-home" / "users" / "bob"
    with ContactStore(store_home) as store:
        assert store.integrity_check() == "ok"
        assert store.get("carol@127.0.0.1") is not None

    with Baresip(tmp_path, user="bob2", play=long8, codecs=("PCMU",)) as bob2:
        gw2, snap2 = start_gateway(tmp_path, "--user", f"bob=sip:bob2@127.0.0.1:{bob2.sip_port}")
        carol2 = start_caller(tmp_path, "carol2", f"sip:bob@127.0.0.1:{gw2.sip_port}", "--play", str(SPEECH))
        try:
            bob2.wait_event("CALL_ESTABLISHED", timeout=15.0)
            assert carol2.wait(PROC_TIMEOUT) == 0, carol2.log()
        finally:
            carol2.stop()
            snapshot = stop_gateway(gw2, snap2)
    c2 = carol2.summary()
    (call,) = snapshot["finished"]
    assert c2["state"] == "ended" and c2["security"] == "secure, unverified"
    assert call["security"] == "secure, unverified" and call["sas"] == c2["sas"]
