"""The in-band carriage of the key exchange (docs/PROTOCOL.md §C.6): every refusal has its typed reason, any message
survives chunking, reordering, duplication and loss-then-retransmission byte for byte and completes once per
complete set, garbage raises nothing but InbandError, memory stays bounded under a flood, the retransmission
schedule is what the spec says, and a real hybrid offer and answer carried in-band complete the handshake."""

from __future__ import annotations

import hashlib
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratchet.errors import (
    InbandConflict,
    InbandError,
    InbandHashMismatch,
    MalformedInband,
    RatchetError,
    ReplayedNonce,
)
from ratchet.handshake import NonceCache
from ratchet.inband import (
    HEADER_LEN,
    INBAND_PREFIX,
    MAX_CHUNK_DATA,
    MAX_MESSAGE,
    InbandChunk,
    InbandKind,
    InbandMessage,
    Reassembler,
    Retransmitter,
    chunk_message,
    is_inband,
    parse_chunk,
)
from ratchet.params import Suite
from tests.support.handshake_fixtures import BOB, HYBRID, T0, answer, make_offerer


def _header(
    version: int = 1, kind: int = 1, tid: bytes = b"\x11" * 8, index: int = 0, count: int = 1, total: int = 10
) -> bytes:
    return INBAND_PREFIX + struct.pack(">BB8sBBH", version, kind, tid, index, count, total)


MESSAGE = bytes(range(256)) * 6 + b"tail"  # 1540 bytes: 2 chunks of 770
PACKETS = chunk_message(InbandKind.OFFER, MESSAGE)


def test_layout_of_a_two_chunk_message() -> None:
    assert len(PACKETS) == 2
    tid = hashlib.sha256(MESSAGE).digest()[:8]
    for i, pkt in enumerate(PACKETS):
        assert pkt[:6] == b"\xff\x00VGWK" and pkt[6] == 1 and pkt[7] == InbandKind.OFFER
        assert pkt[8:16] == tid and pkt[16] == i and pkt[17] == 2 and pkt[18:20] == (1540).to_bytes(2, "big")
        assert pkt[20:] == MESSAGE[i * 770 : (i + 1) * 770]
        assert parse_chunk(pkt) == InbandChunk(InbandKind.OFFER, tid, i, 2, 1540, MESSAGE[i * 770 : (i + 1) * 770])


@pytest.mark.parametrize(
    ("length", "count"),
    [(1, 1), (999, 1), (1000, 1), (1001, 2), (2000, 2), (2001, 3), (3999, 4), (4000, 4), (4001, 5), (4096, 5)],
)
def test_chunk_count_and_sizes(length: int, count: int) -> None:
    message = random.Random(length).randbytes(length)
    packets = chunk_message(InbandKind.ANSWER, message)
    assert len(packets) == count
    assert all(is_inband(p) and HEADER_LEN < len(p) <= HEADER_LEN + MAX_CHUNK_DATA for p in packets)
    assert b"".join(p[HEADER_LEN:] for p in packets) == message
    r = Reassembler()
    got = [r.add(p) for p in [packets[-1], *packets[:-1]]]
    assert got[:-1] == [None] * (count - 1)
    assert got[-1] == InbandMessage(InbandKind.ANSWER, message, hashlib.sha256(message).digest()[:8])


@pytest.mark.parametrize("length", [0, MAX_MESSAGE + 1])
def test_sender_refuses_a_message_out_of_range(length: int) -> None:
    with pytest.raises(ValueError):
        chunk_message(InbandKind.OFFER, b"x" * length)


def test_is_inband_is_a_prefix_test_on_bytes_and_memoryviews() -> None:
    assert is_inband(PACKETS[0]) and is_inband(memoryview(PACKETS[0])) and is_inband(INBAND_PREFIX)
    assert not is_inband(b"") and not is_inband(INBAND_PREFIX[:-1]) and not is_inband(b"\xfe" + PACKETS[0][1:])
    assert not is_inband(b"\x78\x01" + b"\x00" * 60)  # an ordinary Opus packet


# --- one-packet refusals: (name, payload, words in the detail) -------------------------------------------
MALFORMED = [
    ("empty", b"", "shorter"),
    ("header only minus one", _header()[:-1], "shorter"),
    ("wrong prefix", b"\xff\x00VGWX" + _header()[6:] + b"x" * 10, "prefix"),
    ("version 0", _header(version=0) + b"x" * 10, "version 0"),
    ("version 2", _header(version=2) + b"x" * 10, "version 2"),
    ("kind 0", _header(kind=0) + b"x" * 10, "kind 0"),
    ("kind 3", _header(kind=3) + b"x" * 10, "kind 3"),
    ("count 0", _header(count=0) + b"x" * 10, "count 0"),
    ("count 9", _header(count=9, total=9000 // 9) + b"x" * 112, "count 9"),
    ("index = count", _header(index=2, count=2) + b"x" * 5, "index 2"),
    ("index 255", _header(index=255, count=1) + b"x" * 10, "index 255"),
    ("total 0", _header(total=0), "total length 0"),
    ("total 4097", _header(count=5, total=4097) + b"x" * 820, "total length 4097"),
    ("data one short", _header() + b"x" * 9, "carries 9 bytes, not 10"),
    ("data one long", _header() + b"x" * 11, "carries 11 bytes, not 10"),
    ("last chunk short", _header(index=1, count=2, total=11) + b"x" * 6, "carries 6 bytes, not 5"),
    ("chunk over 1000 bytes", _header(total=1001) + b"x" * 1001, "over 1000"),
    ("empty last chunk", _header(index=3, count=4, total=5), "last one empty"),
]


@pytest.mark.parametrize(("payload", "words"), [pytest.param(p, w, id=n) for n, p, w in MALFORMED])
def test_every_malformed_packet_is_refused_with_its_reason(payload: bytes, words: str) -> None:
    with pytest.raises(MalformedInband) as exc:
        parse_chunk(payload)
    assert exc.value.reason == "inband-malformed" and words in exc.value.detail
    assert isinstance(exc.value, InbandError) and isinstance(exc.value, RatchetError)
    r = Reassembler()
    with pytest.raises(MalformedInband):
        r.add(payload)
    assert r.pending == 0 and r.buffered == 0


def _forge(pkt: bytes, data: bytes | None = None, kind: int | None = None, count: int | None = None,
           total: int | None = None) -> bytes:  # fmt: skip
    """``pkt`` with some header fields or its data replaced (no other check: the receiver's job)."""
    c = parse_chunk(pkt)
    return _header(
        kind=c.kind if kind is None else kind,
        tid=c.transfer_id,
        index=c.index,
        count=c.count if count is None else count,
        total=c.total_len if total is None else total,
    ) + (c.data if data is None else data)


# --- refusals across packets: (name, first packets, the refused packet, error class) -------------------------------
THREE = chunk_message(InbandKind.OFFER, b"m" * 2500)  # 3 chunks of 834, 834, 832
CONFLICTS = [
    ("same index, other data", [PACKETS[0]], _forge(PACKETS[0], data=b"y" * 770), InbandConflict),
    ("other kind", [PACKETS[0]], _forge(PACKETS[1], kind=2), InbandConflict),
    ("other count", [THREE[0]], _forge(THREE[1], count=4, total=2500, data=b"m" * 625), InbandConflict),
    ("other total length", [THREE[0]], _forge(THREE[2], total=2499, data=b"m" * 833), InbandConflict),
    ("a forged chunk completes the set", [PACKETS[0]], _forge(PACKETS[1], data=b"z" * 770), InbandHashMismatch),
    ("forged set of one", [], _forge(chunk_message(InbandKind.ANSWER, b"abc")[0], data=b"abd"), InbandHashMismatch),
]


@pytest.mark.parametrize(("before", "refused", "error"), [pytest.param(b, r, e, id=n) for n, b, r, e in CONFLICTS])
def test_every_cross_packet_refusal_drops_the_transfer_and_a_retransmission_still_completes(
    before: list[bytes], refused: bytes, error: type[InbandError]
) -> None:
    r = Reassembler()
    for pkt in before:
        assert r.add(pkt) is None
    with pytest.raises(error) as exc:
        r.add(refused)
    assert exc.value.reason == {InbandConflict: "inband-conflict", InbandHashMismatch: "inband-hash-mismatch"}[error]
    assert r.pending == 0 and r.buffered == 0  # dropped, not kept half-poisoned
    if before:
        genuine = PACKETS if before[0] in PACKETS else THREE
        results = [r.add(p) for p in genuine]
        assert results[-1] is not None and results[-1].message == (MESSAGE if genuine is PACKETS else b"m" * 2500)


def test_an_exact_duplicate_is_ignored_and_a_retransmitted_message_completes_again() -> None:
    r = Reassembler()
    assert r.add(PACKETS[0]) is None and r.add(PACKETS[0]) is None and r.pending == 1
    first = r.add(PACKETS[1])
    assert first is not None and first.message == MESSAGE and r.pending == 0
    assert r.add(PACKETS[1]) is None  # the retransmission starts a new transfer ...
    again = r.add(PACKETS[0])
    assert again == first  # ... which completes again: the caller decides what a repeat means


def test_clear_drops_every_partial_transfer() -> None:
    r = Reassembler()
    r.add(PACKETS[0])
    r.add(THREE[0])
    assert r.pending == 2 and r.buffered == 1540 + 2500
    r.clear()
    assert r.pending == 0 and r.buffered == 0 and r.add(PACKETS[1]) is None


def test_eviction_takes_the_oldest_partial_transfer() -> None:
    r = Reassembler(max_transfers=2)
    a, b, c = (chunk_message(InbandKind.OFFER, bytes([n]) * 1500) for n in (1, 2, 3))
    r.add(a[0])
    r.add(b[0])
    r.add(c[0])  # evicts a
    assert r.pending == 2 and r.evicted == 1
    assert r.add(b[1]) is not None and r.add(c[1]) is not None
    assert r.add(a[1]) is None  # a's first half is gone: this starts over


def test_the_byte_bound_evicts_too() -> None:
    r = Reassembler(max_transfers=10, max_bytes=MAX_MESSAGE)
    r.add(chunk_message(InbandKind.OFFER, b"a" * 3000)[0])
    r.add(chunk_message(InbandKind.OFFER, b"b" * 1500)[0])  # 3000 + 1500 > 4096: the first goes
    assert r.pending == 1 and r.evicted == 1 and r.buffered == 1500


@pytest.mark.parametrize(("max_transfers", "max_bytes"), [(0, 16384), (4, MAX_MESSAGE - 1)])
def test_bounds_too_small_for_one_message_are_refused(max_transfers: int, max_bytes: int) -> None:
    with pytest.raises(ValueError):
        Reassembler(max_transfers, max_bytes)


# --- properties ------------------------------------------------------------------------------------------------


@st.composite
def _deliveries(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """A message, and the order its chunk indices arrive in: bursts of shuffled, duplicated chunks where some are
    lost, then a burst that retransmits every chunk."""
    message = draw(st.binary(min_size=1, max_size=MAX_MESSAGE))
    count = len(chunk_message(InbandKind.OFFER, message))
    order: list[int] = []
    for _ in range(draw(st.integers(0, 3))):
        order += draw(st.lists(st.integers(0, count - 1), max_size=3 * count))
    order += draw(st.permutations(range(count)))
    return message, order


@settings(max_examples=200, deadline=None)
@given(_deliveries(), st.sampled_from(list(InbandKind)))
def test_any_delivery_reassembles_exactly_once_per_complete_set(
    delivery: tuple[bytes, list[int]], kind: InbandKind
) -> None:
    message, order = delivery
    packets = chunk_message(kind, message)
    r = Reassembler()
    seen: set[int] = set()
    completions = 0
    for i in order:
        got = r.add(packets[i])
        seen.add(i)
        if len(seen) == len(packets):
            assert got == InbandMessage(kind, message, hashlib.sha256(message).digest()[:8])
            completions += 1
            seen = set()
        else:
            assert got is None
    assert not seen  # the final full burst completed its set
    assert completions >= 1 and r.pending == 0


_FIELDS = st.tuples(
    st.integers(0, 3), st.integers(0, 3), st.binary(min_size=8, max_size=8), st.integers(0, 9), st.integers(0, 9)
)


@st.composite
def _garbage(draw: st.DrawFn) -> bytes:
    """Random bytes, random bytes behind the prefix, plausible headers with random data, or a genuine chunk with
    bytes flipped."""
    pick = draw(st.integers(0, 3))
    if pick == 0:
        return draw(st.binary(max_size=1100))
    if pick == 1:
        return INBAND_PREFIX + draw(st.binary(max_size=1100))
    if pick == 2:
        version, kind, tid, index, count = draw(_FIELDS)
        total = draw(st.sampled_from([0, 1, 5, 999, 1000, 1001, 4096, 4097, 65535]))
        return _header(version, kind, tid, index, count, total) + draw(st.binary(max_size=1100))
    pkt = bytearray(draw(st.sampled_from(PACKETS + THREE)))
    for pos in draw(st.lists(st.integers(0, len(pkt) - 1), min_size=1, max_size=4)):
        pkt[pos] ^= draw(st.integers(1, 255))
    return bytes(pkt)


@settings(max_examples=300, deadline=None)
@given(st.lists(_garbage(), max_size=30))
def test_garbage_raises_only_inband_errors_and_memory_stays_bounded(payloads: list[bytes]) -> None:
    r = Reassembler(max_transfers=3, max_bytes=6000)
    for payload in payloads:
        try:
            got = r.add(payload)
        except InbandError:
            got = None
        # Only a set whose bytes hash to its id ever comes out (a forgery needs a SHA-256 preimage).
        assert got is None or hashlib.sha256(got.message).digest()[:8] == got.transfer_id
        assert r.pending <= 3 and r.buffered <= 6000


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 8), st.integers(MAX_MESSAGE, 4 * MAX_MESSAGE), st.integers(0, 2**32))
def test_a_flood_of_distinct_transfers_never_exceeds_the_bounds(max_transfers: int, max_bytes: int, seed: int) -> None:
    rng = random.Random(seed)
    r = Reassembler(max_transfers, max_bytes)
    for n in range(500):
        total = rng.randint(1001, MAX_MESSAGE)  # at least 2 chunks: never completes from one
        packets = chunk_message(InbandKind.OFFER, n.to_bytes(4, "big") * (total // 4) + b"x" * (total % 4))
        assert r.add(packets[0]) is None
        assert r.pending <= max_transfers and r.buffered <= max_bytes
    assert r.evicted == 500 - r.pending


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.binary(min_size=1001, max_size=MAX_MESSAGE), min_size=1, max_size=40),
    st.integers(0, 40),
    st.binary(min_size=1, max_size=MAX_MESSAGE),
)
def test_the_genuine_transfer_completes_back_to_back_amid_a_flood(
    flood: list[bytes], position: int, message: bytes
) -> None:
    noise = [chunk_message(InbandKind.OFFER, m)[0] for m in flood]  # first halves that never complete
    genuine = chunk_message(InbandKind.OFFER, message)
    stream = noise[:position] + genuine + noise[position:]
    r = Reassembler()
    results = [r.add(p) for p in stream]
    done = [m for m in results if m is not None]
    assert [m.message for m in done] == [message]
    assert r.pending <= 4 and r.buffered <= 16384


# --- retransmission schedule -------------------------------------------------------------------------------


def test_retransmitter_schedule_with_explicit_times() -> None:
    start = 1000.0
    rt = Retransmitter(PACKETS, start, give_up_s=4.0)
    assert rt.next_due() == start and not rt.finished
    sent = []
    for now in (start, start + 0.1, start + 0.2, start + 0.5, start + 0.6, start + 1.4, start + 2.0, start + 2.4,
                start + 3.4, start + 3.9):  # fmt: skip
        burst = rt.due(now)
        assert burst in ([], PACKETS)
        if burst:
            sent.append(round(now - start, 6))
    assert sent == [0.0, 0.2, 0.6, 1.4, 2.4, 3.4]
    assert rt.next_due() is None and rt.finished and rt.bursts == 6  # 4.4 is past the 4 s bound
    assert rt.due(start + 4.4) == []


def test_retransmitter_skips_missed_bursts_instead_of_catching_up() -> None:
    rt = Retransmitter(PACKETS, 0.0, give_up_s=30.0)
    assert rt.due(0.0) == PACKETS
    assert rt.due(7.7) == PACKETS  # late by many bursts: one burst, not seven
    next_burst = rt.next_due()
    assert next_burst == pytest.approx(8.4) and rt.due(8.0) == []
    assert rt.due(next_burst) == PACKETS and rt.bursts == 3


def test_retransmitter_stops_on_ack_and_at_the_bound() -> None:
    rt = Retransmitter(PACKETS, 50.0, give_up_s=4.0)
    assert rt.due(50.0) == PACKETS
    rt.stop()
    assert rt.finished and rt.next_due() is None and rt.due(50.2) == []
    never = Retransmitter(PACKETS, 50.0, give_up_s=0.0)
    assert never.finished and never.due(50.0) == []
    late = Retransmitter(PACKETS, 50.0, give_up_s=1.0)
    assert late.due(51.0) == [] and late.finished  # first called after the bound: never sends


@pytest.mark.parametrize(("packets", "give_up"), [([], 4.0), ([b"x"], -1.0)])
def test_retransmitter_refuses_nonsense(packets: list[bytes], give_up: float) -> None:
    with pytest.raises(ValueError):
        Retransmitter(packets, 0.0, give_up)


# --- a real handshake carried in-band ----------------------------------------------------------------------


def test_a_hybrid_offer_and_answer_carried_in_band_complete_the_handshake() -> None:
    offerer = make_offerer(HYBRID)
    offer_packets = chunk_message(InbandKind.OFFER, offerer.offer_bytes)
    assert len(offer_packets) == 2 and all(len(p) <= 1020 for p in offer_packets)
    callee = Reassembler()
    got = [callee.add(p) for p in reversed(offer_packets)]
    assert got[0] is None and got[1] is not None and got[1].kind is InbandKind.OFFER
    assert got[1].message == offerer.offer_bytes
    cache = NonceCache()
    # In-band: no Call-ID to bind (a B2BUA gives each leg its own), the rest of §A.4.1 applies.
    answer_bytes, bob_keys = answer(got[1].message, cache=cache, call_id=None, identity=BOB)
    caller = Reassembler()
    answer_packets = chunk_message(InbandKind.ANSWER, answer_bytes)
    done = [m for m in (caller.add(p) for p in answer_packets) if m is not None]
    assert [m.kind for m in done] == [InbandKind.ANSWER]
    alice_keys = offerer.accept_answer(done[0].message, T0 + 0.3)
    assert alice_keys.suite is Suite.X25519_MLKEM768 and alice_keys.transcript_hash == bob_keys.transcript_hash
    # A retransmitted offer completes again; answering it again is the replay cache's refusal.
    again = [m for m in (callee.add(p) for p in offer_packets) if m is not None]
    assert [m.message for m in again] == [offerer.offer_bytes]
    with pytest.raises(ReplayedNonce):
        answer(again[0].message, cache=cache, call_id=None)
