"""Wire v3 frames: control data inside the ciphertext, equal frame sizes with padding, the control-size schedule,
telephone events as TLVs, and the control-block codec."""

from __future__ import annotations

import pytest

from ratchet.errors import MalformedFrame, ReplayedFrame, SealError
from ratchet.events import SasReady, TelephoneEventReceived
from ratchet.frame import (
    HEADER_LEN,
    KEY_ACK_LEN,
    RATCHET_KEY_LEN,
    KeyAck,
    RatchetKeyAnnouncement,
    padding,
    parse_control,
    sas_reveal_tlv,
    split_plaintext,
    telephone_event_tlv,
)
from ratchet.media_state import repeats, reveal_repeats
from ratchet.session import MediaConfig
from tests.support.media_sim import FRAME_S, T0, make_call, random_loss

CONFIG = MediaConfig(dh_interval_s=2.0)
P = 120


def test_every_frame_of_a_stream_has_the_same_length_whatever_it_carries() -> None:
    """Keys, acks, the SAS reveals (both), DH steps and telephone events ride in frames of exactly one length."""
    call = make_call(CONFIG, payload_size=P)
    events = {k: k.to_bytes(8, "big") for k in range(10, 400, 7)}
    call.ab.drop = random_loss(0.1, 3)  # loss makes items repeat and overlap
    call.run(20.0, events)
    assert call.ab.lengths == call.ba.lengths == {HEADER_LEN + 1 + P + 10}
    assert set(call.ab.carried) == {"ratchet_key", "key_ack", "sas_reveal", "telephone_event"}
    assert set(call.ba.carried) == {"ratchet_key", "key_ack", "sas_reveal"}
    a, b = call.a.stats, call.b.stats
    assert a.local_steps >= 5 and b.local_steps >= 5 and a.announcements_sent > a.local_steps
    assert call.of("a", SasReady) and call.of("b", SasReady)
    assert len(call.of("b", TelephoneEventReceived)) >= 40
    assert a.oversize_frames == b.oversize_frames == 0


def test_control_size_is_exact_and_the_worst_case_is_60_bytes() -> None:
    call = make_call(CONFIG)
    sizes = set()
    for k in range(600):
        now = T0 + k * FRAME_S
        for d, ev in ((call.ab, k % 3 == 0), (call.ba, False)):
            predicted = d.sender.control_size(now, event=ev)
            predicted_again = d.sender.control_size(now, event=ev)
            frame = d.sender.seal(b"c" * 40, now, b"\x00" * 8 if ev else None)
            assert predicted == predicted_again == len(frame) - HEADER_LEN - 1 - 40 - 10  # no padding set
            sizes.add(predicted)
            assert d.receiver.open(frame, now) == b"c" * 40
    assert max(sizes) <= 2 + RATCHET_KEY_LEN + 2 + KEY_ACK_LEN + 10 == 60
    assert 0 in sizes and 2 + RATCHET_KEY_LEN in sizes


def test_an_oversize_frame_grows_by_whole_buckets_and_is_counted() -> None:
    call = make_call(MediaConfig(dh_interval_s=0))
    call.a.set_payload_size(50, bucket=16)
    lengths = set()
    for k, content in enumerate((10, 50, 51, 66, 67, 200)):
        now = T0 + (100 + k) * FRAME_S  # control_size says what rides along; the frame is p or p + k buckets
        ctl = call.a.control_size(now)
        frame = call.a.seal(b"z" * content, now)
        assert call.b.open(frame, now) == b"z" * content
        body = ctl + content
        expected = 50 if body <= 50 else 50 + -(-(body - 50) // 16) * 16
        assert len(frame) == HEADER_LEN + 1 + expected + 10
        lengths.add(len(frame))
    assert call.a.stats.oversize_frames >= 3
    assert all((n - HEADER_LEN - 1 - 10 - 50) % 16 == 0 for n in lengths)


def test_telephone_events_arrive_in_frame_order_once_per_frame() -> None:
    call = make_call(MediaConfig(dh_interval_s=1.0), payload_size=P)
    events = {k: (k * 1000).to_bytes(4, "big") + bytes([k % 16, 0x0A, 0, 160]) for k in range(5, 300, 3)}
    call.run(6.0, events)
    got = [e.data for e in call.of("b", TelephoneEventReceived)]  # type: ignore[attr-defined]
    assert got == [events[k] for k in sorted(events)]
    # A replayed event frame is refused: the event is not delivered twice.
    with pytest.raises(ReplayedFrame):
        call.b.open(call.ab.sent[299], call.now)
    assert call.b.next_event() is None


def test_an_event_must_be_8_bytes() -> None:
    call = make_call()
    with pytest.raises(SealError):
        call.a.seal(b"x", T0, b"\x01" * 7)


# --- the control-block codec (table tests) -------------------------------------------------------------------

ANN = RatchetKeyAnnouncement(3, 2, 1234, bytes(range(32)))


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (b"", {}),
        (padding(1), {}),
        (padding(2), {}),
        (padding(300), {}),
        (ANN.encode(), {"ratchet_key": ANN}),
        (KeyAck(3, b"abcd").encode() + padding(5), {"key_ack": KeyAck(3, b"abcd")}),
        (
            sas_reveal_tlv(b"r" * 16) + telephone_event_tlv(b"e" * 8),
            {"sas_reveal": b"r" * 16, "telephone_event": b"e" * 8},
        ),
        (bytes([0x77, 3, 1, 2, 3]) + ANN.encode(), {"ratchet_key": ANN}),  # unknown types are skipped
    ],
)
def test_control_blocks_parse(block: bytes, expected: dict[str, object]) -> None:
    control = parse_control(block)
    for name in ("ratchet_key", "key_ack", "sas_reveal", "telephone_event"):
        assert getattr(control, name) == expected.get(name)


@pytest.mark.parametrize(
    "block",
    [
        b"\x01",  # a type without its length
        b"\x03\x06\x00",  # value overruns
        bytes([0x01, 39]) + bytes(39),  # RATCHET_KEY of the wrong length
        bytes([0x03, 5]) + bytes(5),
        bytes([0x02, 15]) + bytes(15),
        bytes([0x04, 9]) + bytes(9),
        KeyAck(1, b"abcd").encode() * 2,  # a known type twice
    ],
)
def test_malformed_control_blocks_are_refused(block: bytes) -> None:
    with pytest.raises(MalformedFrame):
        parse_control(block)


def test_padding_has_the_exact_length_and_the_plaintext_splits() -> None:
    for n in range(0, 600):
        assert len(padding(n)) == n
    assert split_plaintext(b"\x02ab" + b"content") == (b"ab", b"content")
    with pytest.raises(MalformedFrame):
        split_plaintext(b"\x05ab")


@pytest.mark.parametrize(
    ("rel", "item", "reveal"),
    [
        (0, True, True),
        (1, True, True),
        (2, True, True),
        (3, False, False),
        (4, True, True),
        (5, False, False),
        (124, True, True),
        (128, True, True),
        (132, True, False),
        (144, True, True),
        (4096, True, True),
        (4100, True, False),
    ],
)
def test_the_repeat_schedules(rel: int, item: bool, reveal: bool) -> None:
    """Keys and acks: the first 3 frames, then every 4th. The SAS reveal: the same until frame 128, then every 16th."""
    assert repeats(rel) is item
    assert reveal_repeats(rel) is reveal
