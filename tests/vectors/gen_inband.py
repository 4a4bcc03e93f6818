"""Deterministic vectors for the key exchange in the media path (docs/PROTOCOL.md §C.6): the offer and answer of
both cases of ``handshake.json`` chunked into in-band packets, refused packets and sequences with their reasons, and
the retransmission schedule.

``python -m tests.vectors.gen_inband`` (re)writes tests/vectors/inband.json from the committed handshake.json, so
run it after gen_handshake (``tests/vectors/generate.py`` does).
"""

from __future__ import annotations

import json
import struct
import sys

from ratchet.errors import InbandError
from ratchet.inband import (
    HEADER_LEN,
    INBAND_PREFIX,
    INBAND_VERSION,
    MAX_CHUNK_DATA,
    MAX_CHUNKS,
    MAX_MESSAGE,
    InbandKind,
    Reassembler,
    Retransmitter,
    chunk_message,
)
from tests.vectors.gen_handshake import VECTOR_DIR

FILE = "inband.json"
SOURCE = "handshake.json"


def _header(kind: int, tid: bytes, index: int, count: int, total: int, version: int = INBAND_VERSION) -> bytes:
    return INBAND_PREFIX + struct.pack(">BB8sBBH", version, kind, tid, index, count, total)


def _refusals(offer_packets: list[bytes]) -> list[dict[str, object]]:
    """Sequences whose last packet is refused (every earlier one is accepted as incomplete), built on a real
    two-chunk offer."""
    first, second = offer_packets
    tid, total = first[8:16], int.from_bytes(first[18:20], "big")
    cs = len(first) - HEADER_LEN
    data1 = second[HEADER_LEN:]
    cases: list[tuple[str, list[bytes]]] = [
        ("shorter than the header", [first[: HEADER_LEN - 1]]),
        ("version 2", [_header(1, tid, 0, 2, total, version=2) + first[HEADER_LEN:]]),
        ("kind 3", [_header(3, tid, 0, 2, total) + first[HEADER_LEN:]]),
        ("count 0", [_header(1, tid, 0, 0, total)]),
        ("count 9", [_header(1, tid, 0, 9, 4096) + bytes(456)]),
        ("index equals count", [_header(1, tid, 2, 2, total) + data1]),
        ("total length 0", [_header(1, tid, 0, 1, 0)]),
        ("total length 4097", [_header(1, tid, 0, 5, 4097) + bytes(820)]),
        ("data one byte short", [first[:-1]]),
        ("data one byte long", [first + b"\x00"]),
        ("one chunk over 1000 bytes", [_header(1, tid, 0, 1, 1001) + bytes(1001)]),
        ("the last chunk would be empty", [_header(1, tid, 3, 4, 5)]),
        ("same index, other data", [first, _header(1, tid, 0, 2, total) + bytes(cs)]),
        ("other kind in the same transfer", [first, _header(2, tid, 1, 2, total) + data1]),
        ("other total length in the same transfer", [first, _header(1, tid, 1, 2, total - 1) + data1[:-1]]),
        ("a forged chunk completes the set", [first, second[:HEADER_LEN] + bytes(len(data1))]),
    ]
    out = []
    for name, packets in cases:
        r = Reassembler()
        for pkt in packets[:-1]:
            assert r.add(pkt) is None
        try:
            r.add(packets[-1])
        except InbandError as exc:
            out.append({"name": name, "packets": [p.hex() for p in packets], "reason": exc.reason})
        else:
            raise AssertionError(f"{name}: accepted")
    return out


def generate() -> dict[str, object]:
    handshake = json.loads((VECTOR_DIR / SOURCE).read_text())
    messages: list[dict[str, object]] = []
    offer_packets: list[bytes] = []
    for case in handshake["cases"]:
        for kind, key in ((InbandKind.OFFER, "offer_wire"), (InbandKind.ANSWER, "answer_wire")):
            message = bytes.fromhex(case[key])
            packets = chunk_message(kind, message)
            if case["name"] == "x25519-mlkem768" and kind is InbandKind.OFFER:
                offer_packets = packets
            messages.append(
                {
                    "name": f"{case['name']} {kind.name.lower()}",
                    "source": f"{SOURCE} case {case['name']!r} {key}",
                    "kind": int(kind),
                    "message": message.hex(),
                    "transfer_id": packets[0][8:16].hex(),
                    "packets": [p.hex() for p in packets],
                }
            )
    schedule = Retransmitter([b"x"], 0.0, give_up_s=4.0)
    sent = []
    for step in range(8):
        if schedule.due(Retransmitter.offset(step)):
            sent.append(Retransmitter.offset(step))
    return {
        "description": (
            "voipgw in-band key-exchange vectors, in-band version 1; see docs/PROTOCOL.md §C.6. Each message is the "
            "offer or answer wire bytes of one case of handshake.json, chunked into RTP payloads; each refusal is a "
            "sequence of payloads fed to one receiver whose last payload is refused with `reason` (the earlier ones "
            "are accepted as incomplete). `retransmit_offsets_s` are the burst times, in seconds from the first "
            "burst, and `retransmit_sent_within_4s` those sent with a 4 s bound."
        ),
        "prefix": INBAND_PREFIX.hex(),
        "version": INBAND_VERSION,
        "header_len": HEADER_LEN,
        "max_chunk_data": MAX_CHUNK_DATA,
        "max_chunks": MAX_CHUNKS,
        "max_message": MAX_MESSAGE,
        "messages": messages,
        "refusals": _refusals(offer_packets),
        "retransmit_offsets_s": [Retransmitter.offset(step) for step in range(8)],
        "retransmit_sent_within_4s": sent,
    }


def main() -> int:
    (VECTOR_DIR / FILE).write_text(json.dumps(generate(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {VECTOR_DIR / FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
