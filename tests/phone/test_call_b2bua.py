"""Two ``voipgw`` softphones through PBXs that break what the SDP key exchange relies on (issue 16):

- the Sippy B2BUA (tests/testbed/sippy_b2bua.py): ``a=voipgw`` arrives but each leg has its own Call-ID, so the
  callee runs with ``bind_call_id = false`` and the call is keyed in the SDP with the Call-ID unbound;
- Kamailio stripping ``a=voipgw`` (sdpops), masking the Call-ID (topoh) and relaying the media through rtpengine:
  nothing is configured, the key exchange moves into the media path by itself;
- the same Kamailio also transcoding to PCMU: no key exchange can happen; ``require`` refuses with the cause and
  never sends clear audio, ``opportunistic`` connects NOT SECURE.

Secure calls are checked as everywhere (tests.support.phones.assert_secure_call: same SAS and safety number at both
ends, audio >= 0.9 both ways, the wire taps decode to nothing) plus what a capture on the PBX side shows.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.support.config_gateway import udp_ports_of
from tests.support.eavesdrop import assert_nothing_decodes
from tests.support.kamailio_calls import USERS
from tests.support.phone_calls import wait_for_call
from tests.support.phones import SPEECH, PhoneProc, assert_secure_call, start_caller, start_listener
from tests.support.requires import requires
from tests.testbed.capture import CapturedPacket, RawCapture
from tests.testbed.kamailio import Kamailio
from tests.testbed.rtpengine import Rtpengine
from tests.testbed.sippy_b2bua import SippyB2bua

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "rtpengine")]

MEDIA_PATH_LABEL = "key exchange in the media path"
NO_KEY_EXCHANGE = "no key exchange"
MIN_PBX_PACKETS = 200
SETUP_TIMEOUT_S = 20.0
DIGITS = "159#"


def _wait_for_log(proc: PhoneProc, text: str, timeout: float = SETUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.log():
        if proc.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{proc.name} never logged {text!r}; log:\n{proc.log()}")
        time.sleep(0.05)


def _reg(pbx: Kamailio, user: str) -> list[str]:
    return ["--registrar", f"127.0.0.1:{pbx.port}", "--username", user, "--password", USERS[user]]


def test_secure_call_through_the_sippy_b2bua_with_the_call_id_unbound(tmp_path: Path) -> None:
    """The SDP (a=voipgw included) crosses untouched but the callee's Call-ID is the B2BUA's: keyed in the SDP,
    the Call-ID unbound at the callee; the media flows directly between the phones and decodes to nothing."""
    config = tmp_path / "b2bua.toml"
    config.write_text("bind_call_id = false\n")
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), "--config", str(config))
    cap = RawCapture(1024, 65535).start()
    packets: list[CapturedPacket] = []
    ours: set[int] = set()
    try:
        with SippyB2bua(tmp_path, next_hop=("127.0.0.1", bob.sip_port)) as pbx:
            pbx_port = pbx.port
            alice = start_caller(tmp_path, "alice", f"sip:bob@127.0.0.1:{pbx.port}", "--play", str(SPEECH))
            try:
                _wait_for_log(alice, "SAS")
                ours = udp_ports_of(alice.proc.pid) | udp_ports_of(bob.proc.pid)
            finally:
                wait_for_call(alice, bob)
    finally:
        packets = cap.stop()
        bob.stop()
    assert_secure_call(alice, bob)
    a, b = alice.summary(), bob.summary()
    assert a["call_id"] != b["call_id"], "the B2BUA gave each leg its own Call-ID"
    assert a["key_exchange"] == b["key_exchange"] == "sdp"
    assert b["call_id_bound"] is False
    # What the PBX side carries here is the phones' own RTP (the B2BUA relays none): no speech, no digits.
    ours -= {alice.sip_port, bob.sip_port, pbx_port}
    assert_nothing_decodes(
        [p for p in packets if p.src_port in ours and p.dst_port in ours], SPEECH, min_packets=MIN_PBX_PACKETS
    )


def test_secure_call_through_kamailio_stripping_the_attribute_keys_in_the_media_path(tmp_path: Path) -> None:
    """Kamailio deletes a=voipgw both ways, masks the Call-ID and relays the media through rtpengine: the phones
    key the call in the media path by themselves; sealed audio both ways, the SAS agrees, digits cross sealed,
    and nothing on rtpengine's ports decodes."""
    with (
        Rtpengine(tmp_path) as relay,
        Kamailio(tmp_path, users=USERS, auth=True, rtpengine_ng=relay.ng_socket, strip_voipgw=True, topoh=True) as pbx,
        RawCapture(*relay.rtp_range) as pbx_side,
    ):
        bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), *_reg(pbx, "bob"))
        alice = start_caller(
            tmp_path,
            "alice",
            f"sip:bob@127.0.0.1:{pbx.port}",
            "--play",
            str(SPEECH),
            "--send-dtmf",
            DIGITS,
            *_reg(pbx, "alice"),
        )
        wait_for_call(alice, bob)
    assert_secure_call(alice, bob)
    a, b = alice.summary(), bob.summary()
    assert a["call_id"] != b["call_id"], "topoh gave the callee another Call-ID"
    assert a["key_exchange"] == b["key_exchange"] == "media"
    assert a["call_id_bound"] is False and b["call_id_bound"] is False
    for phone in (alice, bob):
        assert MEDIA_PATH_LABEL in phone.log(), phone.log()[-2000:]
    assert "".join(re.findall(r"^dtmf: (.)$", bob.log(), re.MULTILINE)) == DIGITS
    assert_nothing_decodes(pbx_side.packets, SPEECH, min_packets=MIN_PBX_PACKETS)


def _transcoding_call(tmp_path: Path, *policy: str) -> tuple[PhoneProc, PhoneProc, list[CapturedPacket]]:
    """alice calls bob through Kamailio stripping a=voipgw with rtpengine transcoding Opus to PCMU for bob."""
    with (
        Rtpengine(tmp_path) as relay,
        Kamailio(
            tmp_path, users=USERS, auth=True, rtpengine_ng=relay.ng_socket, strip_voipgw=True, transcode=True
        ) as pbx,
        RawCapture(*relay.rtp_range) as pbx_side,
    ):
        bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), *policy, *_reg(pbx, "bob"))
        alice = start_caller(
            tmp_path,
            "alice",
            f"sip:bob@127.0.0.1:{pbx.port}",
            "--play",
            str(SPEECH),
            "--duration",
            "8",
            *policy,
            *_reg(pbx, "alice"),
        )
        try:
            alice.wait(SETUP_TIMEOUT_S + 10)
        finally:
            alice.stop()
            bob.stop()
    return alice, bob, pbx_side.packets


def test_a_pbx_that_strips_and_transcodes_is_refused_under_require_and_no_clear_audio_flows(tmp_path: Path) -> None:
    alice, bob, packets = _transcoding_call(tmp_path)
    a, b = alice.summary(), bob.summary()
    assert a["state"] == "failed" and a["security"] == b["security"] == "refused", (a, b)
    # The 488's Warning names the cause, and the caller's CLI shows it.
    assert str(a["reason"]).startswith("488") and NO_KEY_EXCHANGE in str(a["reason"]), a["reason"]
    assert NO_KEY_EXCHANGE in alice.log(), alice.log()[-2000:]
    assert a["frames_sent"] == b["frames_sent"] == 0 and a["sas"] is None
    # Never clear audio: whatever crossed rtpengine (if anything) reads as no speech.
    assert_nothing_decodes(packets, SPEECH, min_packets=0)


def test_a_pbx_that_strips_and_transcodes_is_not_secure_under_opportunistic(tmp_path: Path) -> None:
    alice, bob, _ = _transcoding_call(tmp_path, "--policy", "opportunistic")
    a, b = alice.summary(), bob.summary()
    assert a["security"] == b["security"] == "NOT SECURE", (a, b)
    assert b["codec"] == "pcmu", b  # what the transcoding PBX left it
    assert a["sas"] is None and a["key_exchange"] not in ("sdp", "media")
    assert "NOT SECURE" in alice.log()
