"""DTMF between real processes on loopback: two ``voipgw`` phones exchange sealed digits both ways while a raw
capture proves no digit is readable on the wire; a plain call with baresip carries standard RFC 4733 both ways."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.phones import SPEECH, PhoneProc, start_caller, start_listener
from tests.support.requires import requires
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from tests.testbed.capture import CapturedPacket, RawCapture, plain_dtmf
from voipgw.rtp.dtmf import digit_train

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("baresip", "sox")]

PROC_TIMEOUT = 40.0
AUDIO_PT = 111


def _udp_ports(pid: int) -> set[int]:
    out = subprocess.run(["ss", "-uanpH"], capture_output=True, text=True, timeout=10, check=True).stdout
    ports = set()
    for line in out.splitlines():
        if f"pid={pid}," in line:
            m = re.search(r"127\.0\.0\.1:(\d+)\s", line)
            if m:
                ports.add(int(m.group(1)))
    return ports


def _wait_for(proc: PhoneProc, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.log():
        if proc.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{proc.name} never logged {text!r}; log:\n{proc.log()}")
        time.sleep(0.05)


def _printed_digits(proc: PhoneProc) -> str:
    return "".join(re.findall(r"^dtmf: (.)$", proc.log(), re.MULTILINE))


def test_two_phones_exchange_sealed_digits_and_the_wire_shows_none(tmp_path: Path) -> None:
    """Digits ride inside the sealed audio frames: the capture shows one payload type and ONE frame length per
    direction, through DH steps every second, the SAS reveal and the digits, and no telephone-event at all."""
    config = tmp_path / "fast-dh.toml"
    config.write_text("dh_interval_s = 1\n")
    cap = RawCapture(1024, 65535).start()
    packets: list[CapturedPacket] = []
    ours: set[int] = set()
    bob = start_listener(tmp_path, "bob", "--config", str(config), "--send-dtmf", "4#", tap=False)
    alice = start_caller(
        tmp_path,
        "alice",
        f"sip:bob@127.0.0.1:{bob.sip_port}",
        "--config",
        str(config),
        "--send-dtmf",
        "159*",
        "--duration",
        "5",
        "--play",
        str(SPEECH),
        tap=False,
    )
    try:
        _wait_for(bob, "incoming call", PROC_TIMEOUT)
        _wait_for(alice, "SAS", PROC_TIMEOUT)  # both media streams are bound by now
        ours = _udp_ports(alice.proc.pid) | _udp_ports(bob.proc.pid)
        assert alice.wait(PROC_TIMEOUT) == 0, alice.log()
        assert bob.wait(15) == 0, bob.log()
    finally:
        packets = cap.stop()
        alice.stop()
        bob.stop()
    a, b = alice.summary(), bob.summary()
    assert a["security"] == b["security"] == "secure, unverified"
    assert b["dtmf_received"] == "159*" and _printed_digits(bob) == "159*"
    assert a["dtmf_received"] == "4#" and _printed_digits(alice) == "4#"
    assert a["dtmf_out"] == 4 and b["dtmf_out"] == 2
    assert a["frames_refused"] == 0 and b["frames_refused"] == 0
    assert min(a["ratchet_local_epoch"], b["ratchet_local_epoch"]) >= 2, (a, b)  # DH steps happened meanwhile

    between = [p for p in packets if p.src_port in ours and p.dst_port in ours]
    rtp = [(p, r) for p in between if (r := p.rtp()) is not None]
    assert len(rtp) > 2 * 150, f"capture saw {len(rtp)} RTP packets of {len(between)}"  # the capture works
    assert {r.payload_type for _, r in rtp} == {AUDIO_PT}  # no telephone-event packet, sealed or not
    sizes: dict[tuple[int, int], set[int]] = {}
    for p, r in rtp:
        sizes.setdefault((p.src_port, p.dst_port), set()).add(len(r.payload))
    assert len(sizes) == 2 and all(len(v) == 1 for v in sizes.values()), sizes
    assert plain_dtmf(between) == ""
    # No packet carries any RFC 4733 payload of the digits sent, anywhere in its bytes.
    clear = {pkt.event.encode() for d in "159*4#" for pkt in digit_train(d)}
    assert not [p for p in between for c in clear if c in p.payload]


def test_baresip_and_a_plain_voipgw_exchange_standard_rfc4733(tmp_path: Path) -> None:
    ours = start_listener(tmp_path, "bob", "--policy", "opportunistic", "--send-dtmf", "9#", tap=False)
    try:
        play = speech.make_variant(tmp_path / "s8k.wav", 8000, seconds=6.0)
        with Baresip(tmp_path, user="alice", play=play, codecs=("PCMU",)) as alice:
            alice.dial(f"sip:bob@127.0.0.1:{ours.sip_port}")
            alice.wait_event("CALL_ESTABLISHED")
            cap = RawCapture(*alice.rtp_range).start()
            try:
                time.sleep(0.5)
                alice.send_dtmf("37*")
                deadline = time.monotonic() + PROC_TIMEOUT
                while (
                    len(_printed_digits(ours)) < 3 or len(alice.received_dtmf()) < 2
                ) and time.monotonic() < deadline:
                    time.sleep(0.1)
            finally:
                packets = cap.stop()
            got_by_baresip = alice.received_dtmf()
            alice.hangup()
            alice.wait_event("CALL_CLOSED", timeout=PROC_TIMEOUT)
        assert ours.wait(15) == 0, ours.log()
    finally:
        ours.stop()
    s = ours.summary()
    assert s["security"] == "NOT SECURE" and s["codec"] == "pcmu", s
    assert s["dtmf_received"] == "37*" and _printed_digits(ours) == "37*", ours.log()
    assert got_by_baresip == "9#"
    # Plain is plain: both directions' digits are readable on the wire (the capture can see digits at all).
    assert sorted(plain_dtmf(packets)) == sorted("37*9#")


def test_bad_send_dtmf_digits_are_refused_before_any_call(tmp_path: Path) -> None:
    from tests.support.phones import voipgw_argv

    out = subprocess.run(
        voipgw_argv(tmp_path / "home", "call", "sip:bob@127.0.0.1:9", "--play", str(SPEECH), "--send-dtmf", "12E"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert "--send-dtmf" in out.stderr and "dtmf-bad-digit" in out.stderr
