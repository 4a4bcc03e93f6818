"""The committed in-band vectors are reproduced exactly, and read back with only struct and hashlib, as
docs/PROTOCOL.md §C.6 describes: every header field at its offset, the chunk sizes, the transfer id, the message
byte for byte equal to handshake.json's wire bytes; every refusal has the reason the vectors name."""

from __future__ import annotations

import hashlib
import json
import math
import struct

import pytest

from ratchet.errors import InbandError
from ratchet.inband import Reassembler
from tests.vectors import gen_inband

VECTORS = json.loads((gen_inband.VECTOR_DIR / gen_inband.FILE).read_text())
HANDSHAKE = {c["name"]: c for c in json.loads((gen_inband.VECTOR_DIR / gen_inband.SOURCE).read_text())["cases"]}


def test_generator_reproduces_committed_vectors() -> None:
    assert json.loads(json.dumps(gen_inband.generate(), sort_keys=True)) == VECTORS


@pytest.mark.parametrize("case", VECTORS["messages"], ids=lambda c: c["name"])
def test_every_packet_reads_back_independently(case: dict[str, object]) -> None:
    message = bytes.fromhex(str(case["message"]))
    name, _, kind_name = str(case["name"]).rpartition(" ")
    assert message.hex() == HANDSHAKE[name][f"{kind_name}_wire"]  # the handshake vector's own bytes
    packets = [bytes.fromhex(p) for p in case["packets"]]  # type: ignore[attr-defined]
    count = math.ceil(len(message) / 1000)
    cs = math.ceil(len(message) / count)
    assert len(packets) == count
    tid = hashlib.sha256(message).digest()[:8]
    assert tid.hex() == case["transfer_id"]
    for i, pkt in enumerate(packets):
        assert len(pkt) <= 1020
        magic, version, kind, got_tid, index, got_count, total = struct.unpack(">6sBB8sBBH", pkt[:20])
        assert magic == bytes.fromhex(VECTORS["prefix"]) == b"\xff\x00VGWK"
        assert (pkt[0] >> 3, (pkt[0] >> 2) & 1, pkt[0] & 3, pkt[1] & 0x3F) == (31, 1, 3, 0)  # Opus code 3, M = 0
        assert (version, kind, got_tid, index, got_count, total) == (1, case["kind"], tid, i, count, len(message))
        assert pkt[20:] == message[i * cs : (i + 1) * cs]
    assert b"".join(p[20:] for p in packets) == message
    done = [m for m in map(Reassembler().add, reversed(packets)) if m is not None]
    assert [m.message for m in done] == [message]


@pytest.mark.parametrize("case", VECTORS["refusals"], ids=lambda c: c["name"])
def test_every_refusal_vector_is_refused_with_its_reason(case: dict[str, object]) -> None:
    packets = [bytes.fromhex(p) for p in case["packets"]]  # type: ignore[attr-defined]
    r = Reassembler()
    for pkt in packets[:-1]:
        assert r.add(pkt) is None
    with pytest.raises(InbandError) as exc:
        r.add(packets[-1])
    assert exc.value.reason == case["reason"]


def test_retransmission_schedule() -> None:
    assert VECTORS["retransmit_offsets_s"] == [0.0, 0.2, 0.6, 1.4, 2.4, 3.4, 4.4, 5.4]
    assert VECTORS["retransmit_sent_within_4s"] == [0.0, 0.2, 0.6, 1.4, 2.4, 3.4]
