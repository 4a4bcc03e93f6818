"""A secure call between two voipgw phones registered to Kamailio, and what the SIP capture shows of it."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.phone_calls import wait_for_call
from tests.support.phones import SPEECH, PhoneProc, start_caller, start_listener
from tests.testbed.capture import CapturedPacket

USERS = {"alice": "alicepw", "bob": "bobpw"}


def sip_messages(packets: list[CapturedPacket]) -> list[tuple[int, int, str]]:
    """(src_port, dst_port, text) of every SIP datagram in capture order (keep-alive CRLFs dropped)."""
    out = []
    for p in packets:
        text = p.payload.decode("utf-8", "replace")
        if text.startswith(("SIP/2.0 ", "INVITE ", "ACK ", "BYE ", "REGISTER ", "CANCEL ", "OPTIONS ")):
            out.append((p.src_port, p.dst_port, text))
    return out


def cseq_method(text: str) -> str:
    m = re.search(r"^CSeq:\s*\d+\s+(\w+)", text, re.MULTILINE | re.IGNORECASE)
    assert m is not None, text[:300]
    return m.group(1).upper()


def registered_aors(sip: list[tuple[int, int, str]], registrar_port: int) -> set[str]:
    """AORs the registrar answered 200 OK to a REGISTER for, with a contact bound (seen on the wire)."""
    aors = set()
    for src, _, text in sip:
        if not (src == registrar_port and text.startswith("SIP/2.0 200") and cseq_method(text) == "REGISTER"):
            continue
        if re.search(r"^(Contact|m):", text, re.MULTILINE | re.IGNORECASE):
            to = re.search(r"^(?:To|t):.*?sip:([^>;\s]+)", text, re.MULTILINE | re.IGNORECASE)
            assert to is not None
            aors.add(to.group(1))
    return aors


def run_call_via(tmp_path: Path, registrar_port: int) -> tuple[PhoneProc, PhoneProc]:
    reg = ["--registrar", f"127.0.0.1:{registrar_port}"]
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), *reg, "--username", "bob", "--password", "bobpw")
    alice = start_caller(
        tmp_path,
        "alice",
        f"sip:bob@127.0.0.1:{registrar_port}",
        "--play",
        str(SPEECH),
        *reg,
        "--username",
        "alice",
        "--password",
        "alicepw",
    )
    wait_for_call(alice, bob)
    return alice, bob
