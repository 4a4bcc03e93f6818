"""A man in the middle on the media path (docs/PROTOCOL.md §C.7): the path strips ``a=voipgw``, and an attacker at
127.0.0.66 races the caller with an in-band offer of its own (validly signed, by its own key, claiming to be the
caller). It can never sign as the caller, so the substitution shows: a verified contact's call is blocked as a key
change, a first contact's call carries the attacker's identity key (so its safety number and SAS are not the ones
the real caller would show), and the real caller never accepts an answer bound to another offer."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest

from ratchet.handshake import Offerer
from ratchet.identity import IdentityKey
from ratchet.inband import InbandKind, chunk_message
from tests.support.phones import SPEECH, PhoneProc, run_cli, start_caller, start_listener
from tests.testbed.sip_mangler import SipMangler
from voipgw.config import PhoneConfig
from voipgw.rtp.packet import build_rtp

pytestmark = [pytest.mark.integration, pytest.mark.hardening]

ALICE, BOB = "alice@127.0.0.1", "bob@127.0.0.1"
ATTACKER = "127.0.0.66"


def strip_voipgw(sdp: str) -> str:
    return re.sub(r"a=voipgw:[^\r\n]*\r\n", "", sdp)


class Injector:
    """Sends the attacker's own signed offer (``mallory``'s key, claiming to be alice) to the RTP address of the
    callee's 183 the moment the relay sees it, before the 183 reaches the caller: it arrives first. Three bursts, as
    a real sender's schedule would."""

    def __init__(self, mallory: IdentityKey) -> None:
        offer = Offerer(mallory, ALICE, BOB, "mallory-call@127.0.0.66", PhoneConfig(aor=ALICE).offer_handshake,
                        time.time())  # fmt: skip
        self.packets = chunk_message(InbandKind.OFFER, offer.offer_bytes)
        self.sent = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ATTACKER, 0))
        self._seq = 0

    def on_answer(self, sdp: str) -> str:
        port = re.search(r"m=audio (\d+) RTP/AVP (\d+)", sdp)
        if port is not None and self.sent == 0:
            target, pt = ("127.0.0.1", int(port.group(1))), int(port.group(2))
            self._burst(target, pt)
            for delay in (0.2, 0.6):
                threading.Timer(delay, self._burst, (target, pt)).start()
        return strip_voipgw(sdp)

    def _burst(self, target: tuple[str, int], pt: int) -> None:
        for payload in self.packets:
            self._seq += 1
            self.sock.sendto(build_rtp(pt, self._seq, self._seq * 960, 0x6D616C6C, payload), target)
            self.sent += 1


def _call(work: Path, mallory: IdentityKey, *, inject: bool) -> tuple[PhoneProc, PhoneProc, Injector]:
    bob = start_listener(work, "bob", "--play", str(SPEECH))
    injector = Injector(mallory)
    hook = injector.on_answer if inject else strip_voipgw
    try:
        with SipMangler(("127.0.0.1", bob.sip_port), on_offer=strip_voipgw, on_answer=hook) as relay:
            relay.in_path = True
            alice = start_caller(work, "alice", f"sip:bob@127.0.0.1:{relay.port}", "--play", str(SPEECH))
            try:
                alice.wait(40)
                bob.wait(15)
            finally:
                alice.stop()
                bob.stop()
    finally:
        time.sleep(0.7)  # the injector's last timer burst
        injector.sock.close()
    return alice, bob, injector


def test_a_substituted_in_band_offer_is_blocked_for_a_verified_contact(tmp_path: Path) -> None:
    mallory = IdentityKey.generate()
    # 1. An honest call through the same stripping path, then bob verifies alice's safety number.
    alice, bob, _ = _call(tmp_path, mallory, inject=False)
    a, b = alice.summary(), bob.summary()
    assert a["key_exchange"] == b["key_exchange"] == "media" and a["safety_number"] == b["safety_number"], (a, b)
    verify = run_cli(tmp_path / "bob-home", "verify", ALICE, "--safety-number", a["safety_number"], "--yes")
    assert verify.returncode == 0, verify.stderr
    # 2. The attacker's offer arrives first: bob refuses the call as a key change of a verified contact.
    alice, bob, injector = _call(tmp_path, mallory, inject=True)
    a, b = alice.summary(), bob.summary()
    assert injector.sent >= 1
    assert b["state"] == "failed" and b["security"] == "refused", b
    assert "488" in b["reason"] and "key" in b["reason"], b["reason"]
    assert b["frames_sent"] == 0 and b["frames_played"] == 0
    assert a["state"] == "failed" and a["frames_sent"] == 0 and a["frames_played"] == 0, a


def test_a_first_contact_sees_the_attackers_key_and_the_caller_never_keys(tmp_path: Path) -> None:
    mallory = IdentityKey.generate()
    alice, bob, injector = _call(tmp_path, mallory, inject=True)
    a, b = alice.summary(), bob.summary()
    assert injector.sent >= 1
    # bob keyed with the attacker: the identity on its call is mallory's, not alice's, so the safety number and the
    # SAS it shows cannot match what alice's side would show (alice has no keys at all).
    assert b["remote_identity"] == mallory.public.serialize().hex(), b
    assert b["key_exchange"] == "media"
    # alice got bob's answer to the attacker's offer: refused (bound to another offer), never keyed, hung up.
    assert a["state"] == "failed" and a["safety_number"] is None and a["frames_sent"] == 0, a
    assert a["inband_refused"].get("inband-answer-refused", 0) >= 1, a["inband_refused"]
    assert "no key exchange" in a["reason"], a["reason"]
    assert b["frames_opened"] == 0, b  # nothing alice sealed ever opened at bob
