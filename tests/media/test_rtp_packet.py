"""RTP/RTCP wire format: round trips, RFC 3550 edge cases, cross-check against aiortc, and fuzzing."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtp import RtpPacket as AiortcRtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from voipgw.rtp.packet import (
    Bye,
    PacketError,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    SenderReport,
    SourceDescription,
    build_rtcp,
    build_rtp,
    is_rtcp,
    ntp_from_unix,
    parse_rtcp,
    parse_rtp,
)


def test_plain_round_trip() -> None:
    data = build_rtp(111, 65535, 0xFFFFFFFF, 0xDEADBEEF, b"opus-frame", marker=True)
    assert len(data) == 12 + 10
    pkt = parse_rtp(data)
    assert (pkt.payload_type, pkt.sequence, pkt.timestamp, pkt.ssrc) == (111, 65535, 0xFFFFFFFF, 0xDEADBEEF)
    assert pkt.marker and pkt.payload == b"opus-frame"
    assert pkt.csrc == () and pkt.extension_profile is None and pkt.padding == 0


def test_csrc_extension_padding_round_trip() -> None:
    data = build_rtp(
        96,
        7,
        960,
        1,
        b"payload",
        csrc=(1, 2, 3),
        extension_profile=0xBEDE,
        extension=b"\x10\xaa\x00\x00",
        padding=4,
    )
    pkt = parse_rtp(data)
    assert pkt.csrc == (1, 2, 3)
    assert pkt.extension_profile == 0xBEDE and pkt.extension == b"\x10\xaa\x00\x00"
    assert pkt.padding == 4 and pkt.payload == b"payload"


def test_matches_aiortc_parser() -> None:
    data = build_rtp(111, 4242, 123456, 0xCAFEBABE, b"\x01\x02\x03", marker=True, csrc=(9,), padding=3)
    ours = parse_rtp(data)
    theirs = AiortcRtpPacket.parse(data)
    assert (ours.payload_type, ours.sequence, ours.timestamp, ours.ssrc, ours.marker) == (
        theirs.payload_type,
        theirs.sequence_number,
        theirs.timestamp,
        theirs.ssrc,
        bool(theirs.marker),
    )
    assert ours.payload == theirs.payload and list(ours.csrc) == theirs.csrc
    # And aiortc-built packets parse identically with our parser.
    theirs.payload = b"xyz"
    assert parse_rtp(theirs.serialize()).payload == b"xyz"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\x6f\x00", "too-short"),
        (b"\x40" + bytes(11), "bad-version"),
        (bytes([0x82]) + bytes(11) + bytes(4), "truncated-csrc"),  # cc=2 but one CSRC present
        (bytes([0x90]) + bytes(11) + b"\xbe\xde", "truncated-extension"),
        (bytes([0x90]) + bytes(11) + b"\xbe\xde\x00\x02" + bytes(4), "truncated-extension"),
        (bytes([0xA0]) + bytes(11) + b"ab\x00", "bad-padding"),  # padding count 0
        (bytes([0xA0]) + bytes(11) + b"ab\x09", "bad-padding"),  # more padding than bytes
    ],
)
def test_malformed_rtp_reasons(data: bytes, reason: str) -> None:
    with pytest.raises(PacketError) as info:
        parse_rtp(data)
    assert info.value.reason == reason


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_only_raise_packet_error(data: bytes) -> None:
    for parser in (parse_rtp, parse_rtcp):
        try:
            parser(data)
        except PacketError:
            pass


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 127),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=200),
    st.booleans(),
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    st.one_of(st.none(), st.integers(0, 0xFFFF)),
    st.integers(0, 8).map(lambda w: bytes(range(4 * w))),
    st.integers(0, 255),
)
def test_rtp_round_trip_property(
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    payload: bytes,
    marker: bool,
    csrc: list[int],
    profile: int | None,
    ext: bytes,
    padding: int,
) -> None:
    ext = ext if profile is not None else b""
    data = build_rtp(
        pt, seq, ts, ssrc, payload, marker=marker, csrc=tuple(csrc), extension_profile=profile, extension=ext,
        padding=padding,
    )  # fmt: skip
    pkt = parse_rtp(data)
    assert (pkt.payload_type, pkt.sequence, pkt.timestamp, pkt.ssrc, pkt.marker) == (
        pt,
        seq,
        ts,
        ssrc,
        marker,
    )
    assert pkt.payload == payload and pkt.csrc == tuple(csrc)
    assert pkt.extension_profile == profile and pkt.extension == ext and pkt.padding == padding


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=12, max_size=80), st.integers(0, 79), st.integers(0, 255))
def test_mutated_packets_only_raise_packet_error(payload: bytes, pos: int, value: int) -> None:
    data = bytearray(build_rtp(111, 1, 2, 3, payload, csrc=(4,), extension_profile=1, extension=bytes(4)))
    data[pos % len(data)] = value
    try:
        parse_rtp(bytes(data))
    except PacketError:
        pass


def test_builder_rejects_invalid_fields() -> None:
    with pytest.raises(ValueError):
        build_rtp(128, 0, 0, 0, b"")
    with pytest.raises(ValueError):
        build_rtp(0, 0, 0, 0, b"", csrc=tuple(range(16)))
    with pytest.raises(ValueError):
        build_rtp(0, 0, 0, 0, b"", extension_profile=1, extension=b"abc")


def test_rtcp_compound_round_trip() -> None:
    block = ReportBlock(ssrc=7, fraction_lost=25, cumulative_lost=-3, highest_sequence=70000, jitter=120, lsr=5)
    sr = SenderReport(1, ntp_from_unix(1_700_000_000.25), 48000, 50, 3000, (block,))
    rr = ReceiverReport(2, (block, ReportBlock(8, 0, 1 << 22, 1, 0)))
    sdes = SourceDescription(((1, "alice@voipgw"), (2, "b")))
    bye = Bye((1, 2))
    data = b"".join(build_rtcp(p) for p in (sr, rr, sdes, bye))
    assert len(data) % 4 == 0
    assert is_rtcp(data) and not is_rtcp(build_rtp(111, 0, 0, 0, b""))
    assert parse_rtcp(data) == [sr, rr, sdes, bye]
    assert sr.ntp_timestamp >> 32 == 1_700_000_000 + 2_208_988_800


def test_rtcp_unknown_types_are_skipped_and_truncation_is_typed() -> None:
    app = struct.pack("!BBHI4s", 0x80, 204, 2, 1, b"name")
    rr = build_rtcp(ReceiverReport(3))
    assert parse_rtcp(app + rr) == [ReceiverReport(3)]
    with pytest.raises(PacketError) as info:
        parse_rtcp(rr[:-1] + b"")
    assert info.value.reason in ("truncated-rtcp", "truncated-report")
    lying = bytearray(build_rtcp(ReceiverReport(3, (ReportBlock(1, 0, 0, 0, 0),))))
    lying[0] = 0x80 | 2  # claims two report blocks, carries one
    with pytest.raises(PacketError) as info:
        parse_rtcp(bytes(lying))
    assert info.value.reason == "truncated-report"


def test_reception_stats_loss_wrap_and_jitter() -> None:
    stats = ReceptionStats(clock_rate=48000)
    assert stats.report_block(0.0) is None
    seqs = [65530 + i for i in range(12)]  # crosses the 16-bit wrap
    lost = {65533, 2}
    t = 100.0
    for i, s in enumerate(seqs):
        if s % 65536 not in lost:
            stats.update(s % 65536, 960 * i, 42, t + 0.02 * i)
    block = stats.report_block(t + 1)
    assert block is not None
    assert block.ssrc == 42
    assert block.highest_sequence == (1 << 16) | (65541 % 65536)
    assert block.cumulative_lost == 2
    assert block.fraction_lost == (2 << 8) // 12
    assert block.jitter < 5  # perfectly paced arrivals
    # A new SSRC (relay re-origination) restarts the statistics instead of reporting a huge loss.
    stats.update(10, 0, 43, t + 2)
    again = stats.report_block(t + 3)
    assert again is not None and again.ssrc == 43 and again.cumulative_lost == 0
