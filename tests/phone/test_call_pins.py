"""No silent downgrade of a known contact: two ``opportunistic`` phones that have called before, and a SIP relay
that deletes ``a=voipgw`` on the way. Stripped from the offer, the callee refuses (488, "a known voipgw contact must
use end-to-end encryption"); stripped from the answer, the caller hangs up at once. No audio flows in the clear
either way, while a stranger's stripped call still goes through NOT SECURE (opportunistic is unchanged for it).

Both phones run with ``--no-inband``: with the key exchange in the media path (the default) a stripped attribute
no longer downgrades anything, the call is sealed anyway (tests/phone/test_call_inband.py); this is the check that
still stands when that is off or a path destroys it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.phones import SPEECH, PhoneProc, start_caller, start_listener
from tests.testbed.sip_mangler import SipMangler
from voipgw.negotiate import REJECT_PINNED_CONTACT, WARN_PINNED_CONTACT

pytestmark = [pytest.mark.integration, pytest.mark.hardening]

OPPORTUNISTIC = ("--policy", "opportunistic", "--no-inband")
SHORT = ("--play", str(SPEECH), "--duration", "1.5")


def strip_voipgw(sdp: str) -> str:
    out, n = re.subn(r"a=voipgw:[^\r\n]*\r\n", "", sdp)
    assert n == 1, sdp
    return out


def _listener(work: Path, name: str = "bob") -> PhoneProc:
    return start_listener(work, name, *OPPORTUNISTIC, "--play", str(SPEECH), record=False, tap=False)


def _caller(work: Path, uri: str, name: str = "alice") -> PhoneProc:
    return start_caller(work, name, uri, *OPPORTUNISTIC, *SHORT, record=False, tap=False)


def _finish(caller: PhoneProc, callee: PhoneProc) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        caller.wait(40)
        callee.wait(15)
    finally:
        caller.stop()
        callee.stop()
    return caller.summary(), callee.summary()


def _call(work: Path, *, on_offer: bool = False, on_answer: bool = False, caller: str = "alice") -> tuple[
    dict[str, Any], dict[str, Any], int
]:  # fmt: skip
    """One call ``caller`` -> bob (homes persist in ``work``), through a relay that strips ``a=voipgw`` from the
    offer and/or the answer; returns both summaries and how many SDP bodies the relay rewrote."""
    bob = _listener(work)
    with SipMangler(
        ("127.0.0.1", bob.sip_port),
        on_offer=strip_voipgw if on_offer else None,
        on_answer=strip_voipgw if on_answer else None,
    ) as relay:
        relay.in_path = on_answer  # the 200 OK must come back through the relay to be rewritten
        a, b = _finish(_caller(work, f"sip:bob@127.0.0.1:{relay.port}", caller), bob)
        return a, b, relay.offers_rewritten + relay.answers_rewritten


def _no_audio(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["frames_sent"] == 0 and a["frames_opened"] == 0 and a["frames_played"] == 0, a
    assert b["frames_opened"] == 0 and b["frames_played"] == 0, b


def test_stripping_the_key_exchange_between_known_contacts_refuses_the_call(tmp_path: Path) -> None:
    a, b, _ = _call(tmp_path)  # the first call: both ends now hold each other's key
    assert a["security"] == b["security"] == "secure, unverified", (a, b)
    assert a["trust_state"] == b["trust_state"] == "first-contact"

    # a=voipgw deleted from alice's offer: bob knows alice, so he refuses instead of answering in the clear
    a, b, rewritten = _call(tmp_path, on_offer=True)
    print(f"offer stripped: alice {a['reason']!r}; bob {b['reason']!r}")
    assert rewritten >= 1
    assert a["state"] == b["state"] == "failed" and a["security"] == b["security"] == "refused", (a, b)
    assert "488" in a["reason"] and WARN_PINNED_CONTACT in a["reason"], a["reason"]  # the Warning reached alice
    assert "488" in b["reason"] and WARN_PINNED_CONTACT in b["reason"], b["reason"]
    assert a["frames_sent"] == b["frames_sent"] == 0 and a["frames_received"] == b["frames_received"] == 0

    # a=voipgw deleted from bob's answer: alice knows bob, so she hangs up at once and never sends a frame
    a, b, rewritten = _call(tmp_path, on_answer=True)
    print(f"answer stripped: alice {a['reason']!r}; bob {b['reason']!r} ({b['frames_sent']} sealed frames sent)")
    assert rewritten >= 1
    assert a["state"] == "failed" and a["security"] == "refused" and a["reason"] == REJECT_PINNED_CONTACT, a
    assert b["security"] == "refused" and "answer refused" in b["reason"], b  # told why, in the BYE's Reason
    _no_audio(a, b)

    # carol is nobody's contact: her stripped call is plain and NOT SECURE, as opportunistic always was
    c, b, rewritten = _call(tmp_path, on_offer=True, caller="carol")
    assert rewritten >= 1
    assert c["state"] == b["state"] == "ended" and c["security"] == b["security"] == "NOT SECURE", (c, b)
    assert c["frames_sent"] > 0 and b["frames_opened"] > 0
