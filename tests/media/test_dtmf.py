"""RFC 4733 DTMF without sockets: the payload codec, the sender's train, the once-only receiver, and telephone
events inside sealed audio frames (same counter sequence, same frame size, other frames unchanged)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratchet.events import TelephoneEventReceived
from ratchet.params import FrameSuite, SendParams
from ratchet.session import MediaConfig, MediaSession
from tests.support.ratchet_pairs import make_pair
from voipgw.rtp.dtmf import (
    DIGITS,
    END_PACKETS,
    BadDigit,
    BadDuration,
    DtmfReceiver,
    MalformedEvent,
    TelephoneEvent,
    UnknownEvent,
    check_digits,
    decode_sealed,
    digit_train,
    encode_sealed,
)

T0 = 1_000.0

events = st.builds(
    TelephoneEvent,
    event=st.integers(0, 255),
    end=st.booleans(),
    volume=st.integers(0, 63),
    duration=st.integers(0, 0xFFFF),
)


# --- payload codec ----------------------------------------------------------------------------------------


def test_known_payloads_match_rfc4733_layout() -> None:
    # Digit 5, end bit, volume 10, duration 800 (100 ms at 8 kHz).
    assert TelephoneEvent(5, True, 10, 800).encode() == bytes([5, 0x8A, 0x03, 0x20])
    ev = TelephoneEvent.decode(bytes([11, 0x4A, 0x01, 0x90]))  # '#', R bit set (ignored), vol 10, 400
    assert ev == TelephoneEvent(11, False, 10, 400) and ev.digit == "#"
    assert TelephoneEvent(16, False, 0, 0).digit is None  # hook flash is not a digit


@given(events)
def test_payload_round_trips(ev: TelephoneEvent) -> None:
    assert TelephoneEvent.decode(ev.encode()) == ev


@given(st.binary(max_size=12).filter(lambda b: len(b) != 4))
def test_wrong_lengths_are_malformed(data: bytes) -> None:
    with pytest.raises(MalformedEvent) as e:
        TelephoneEvent.decode(data)
    assert e.value.reason == "dtmf-malformed"


@given(st.binary(min_size=4, max_size=4))
def test_any_four_bytes_decode_without_surprises(data: bytes) -> None:
    ev = TelephoneEvent.decode(data)
    assert ev.encode() == bytes([data[0], data[1] & 0xBF, data[2], data[3]])  # only the R bit is dropped


def test_out_of_range_fields_are_refused() -> None:
    for args in [(256, False, 0, 0), (1, False, 64, 0), (1, False, 0, 65536), (-1, False, 0, 0)]:
        with pytest.raises(MalformedEvent):
            TelephoneEvent(*args)


@given(st.integers(0, 0xFFFFFFFF), events)
def test_sealed_plaintext_round_trips(event_id: int, ev: TelephoneEvent) -> None:
    plain = encode_sealed(event_id, ev)
    assert len(plain) == 8 and decode_sealed(plain) == (event_id, ev)


def test_sealed_plaintext_of_a_wrong_length_is_malformed() -> None:
    with pytest.raises(MalformedEvent):
        decode_sealed(bytes(4))


# --- sender -----------------------------------------------------------------------------------------------


def test_train_for_a_200_ms_digit() -> None:
    train = digit_train("7", 200)
    assert [p.offset_ms for p in train] == [0, 50, 100, 200, 220, 240]
    assert [p.marker for p in train] == [True] + [False] * 5
    assert [p.event.duration for p in train] == [400, 800, 1200, 1600, 1600, 1600]
    assert [p.event.end for p in train] == [False] * 3 + [True] * 3
    assert {p.event.event for p in train} == {7}


@given(st.sampled_from(DIGITS + "abcd"), st.integers(40, 5000))
def test_any_train_is_well_formed(digit: str, duration_ms: int) -> None:
    train = digit_train(digit, duration_ms)
    assert train[0].marker and not any(p.marker for p in train[1:])
    assert sum(p.event.end for p in train) == END_PACKETS and all(p.event.end for p in train[-END_PACKETS:])
    durations = [p.event.duration for p in train]
    assert durations == sorted(durations) and durations[-1] == duration_ms * 8
    offsets = [p.offset_ms for p in train]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert all(d <= (o + 50) * 8 for d, o in zip(durations, offsets, strict=True))  # never ahead of the send time
    assert {p.event.digit for p in train} == {digit.upper()}


def test_bad_digits_and_durations_are_refused() -> None:
    for bad in ["E", "1x", " ", "", "12345678901"[:0] + "-"]:
        if bad:
            with pytest.raises(BadDigit):
                check_digits(bad)
    assert check_digits("12ab*#") == "12AB*#"
    with pytest.raises(BadDigit):
        digit_train("E")
    for ms in (0, 39, 5001):
        with pytest.raises(BadDuration):
            digit_train("1", ms)


# --- receiver ---------------------------------------------------------------------------------------------


def _packets(digit: str, ts: int, duration_ms: int = 100) -> list[tuple[int, TelephoneEvent]]:
    return [(ts, p.event) for p in digit_train(digit, duration_ms)]


def test_each_press_is_reported_once_and_repeats_are_counted() -> None:
    rx = DtmfReceiver()
    got = [d for ts, ev in _packets("1", 1000) + _packets("1", 5000) + _packets("#", 9000) if (d := rx.feed(ts, ev))]
    assert got == ["1", "1", "#"]
    assert rx.reported == 3 and rx.repeats == 3 * (len(_packets("1", 0)) - 1)


def test_losing_the_start_or_every_end_still_reports_once() -> None:
    rx = DtmfReceiver()
    train = _packets("9", 100, 300)
    assert [rx.feed(ts, ev) for ts, ev in train[1:]].count("9") == 1  # start lost
    rx2 = DtmfReceiver()
    assert [rx2.feed(ts, ev) for ts, ev in train[:-END_PACKETS]].count("9") == 1  # all ends lost
    rx3 = DtmfReceiver()
    assert [rx3.feed(ts, ev) for ts, ev in train[-1:]] == ["9"]  # only one end packet arrived


def test_non_digit_events_and_id_reuse_are_refused() -> None:
    rx = DtmfReceiver()
    with pytest.raises(UnknownEvent):
        rx.feed(1, TelephoneEvent(16, False, 10, 400))
    assert rx.feed(2, TelephoneEvent(3, False, 10, 400)) == "3"
    with pytest.raises(MalformedEvent):
        rx.feed(2, TelephoneEvent(4, False, 10, 800))  # a second digit under the first one's id
    assert rx.reported == 1


def test_receiver_state_is_bounded() -> None:
    rx = DtmfReceiver(remembered=8)
    for ts in range(1000):
        assert rx.feed(ts, TelephoneEvent(1, True, 10, 800)) == "1"
    assert len(rx._seen) == 8


@settings(max_examples=60)
@given(
    presses=st.lists(st.tuples(st.sampled_from(DIGITS), st.integers(40, 400)), min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0.0, 0.6),
)
def test_reordered_duplicated_lossy_trains_never_report_a_press_twice(
    presses: list[tuple[str, int]], seed: int, loss: float
) -> None:
    rnd = random.Random(seed)
    packets: list[tuple[int, TelephoneEvent]] = []
    for i, (digit, ms) in enumerate(presses):
        packets += _packets(digit, 10_000 * (i + 1), ms)
    delivered = [p for p in packets if rnd.random() >= loss]
    delivered += rnd.sample(delivered, k=len(delivered) // 3)  # duplicates
    rnd.shuffle(delivered)
    rx = DtmfReceiver()
    got = [d for ts, ev in delivered if (d := rx.feed(ts, ev))]
    expected_ids = {ts for ts, _ in delivered}
    assert len(got) == len(expected_ids)
    assert sorted(got) == sorted(presses[ts // 10_000 - 1][0] for ts in expected_ids)


# --- telephone events inside sealed audio frames (wire v3 TELEPHONE_EVENT TLV) -------------------------------


def _pair(params: SendParams | None = None, dh: float = 0.0) -> tuple[MediaSession, MediaSession]:
    ko, ka = make_pair(interval_ms=2000, offerer_params=params, answerer_params=params)
    cfg = MediaConfig(dh_interval_s=dh)
    return MediaSession(ko, T0, cfg), MediaSession(ka, T0, cfg)


def _telephone_events(session: MediaSession) -> list[bytes]:
    out = []
    while (ev := session.next_event()) is not None:
        if isinstance(ev, TelephoneEventReceived):
            out.append(ev.data)
    return out


@pytest.mark.parametrize(
    "params",
    [
        SendParams(),
        SendParams(per_frame_keys=True),
        SendParams(frame_suite=FrameSuite.AES256_GCM_128, frames_per_key=3),
    ],
)
def test_events_ride_inside_audio_frames_of_one_size(params: SendParams) -> None:
    alice, bob = _pair(params)
    alice.set_payload_size(60)
    now = T0
    sizes, got = set(), []
    for i in range(40):
        now += 0.02
        ev = encode_sealed(1000 + i, TelephoneEvent(i % 16, False, 10, 400)) if i % 7 == 3 else None
        content = bytes(60 - alice.control_size(now, event=ev is not None))
        frame = alice.seal(content, now, event=ev)
        sizes.add(len(frame))
        assert bob.open(frame, now) == content  # the audio of the frame, the event beside it
        assert bob.last_index == i  # one counter sequence, no gaps
        got += _telephone_events(bob)
    assert len(sizes) == 1, sizes
    assert [decode_sealed(g)[0] for g in got] == [1000 + i for i in range(40) if i % 7 == 3]
    assert bob.stats.refused == {}


def test_events_during_dh_steps_arrive_in_order_and_frames_stay_equal() -> None:
    alice, bob = _pair(dh=1.0)
    alice.set_payload_size(60)
    bob.set_payload_size(60)
    now = T0
    got: list[int] = []
    sizes = set()
    for i in range(400):
        now += 0.02
        ev = encode_sealed(i, TelephoneEvent(i % 16, False, 10, 400)) if i % 5 == 0 else None
        a2b = alice.seal(bytes(60 - alice.control_size(now, event=ev is not None)), now, event=ev)
        b2a = bob.seal(bytes(60 - bob.control_size(now)), now)
        sizes |= {len(a2b), len(b2a)}
        bob.open(a2b, now)
        alice.open(b2a, now)
        got += [decode_sealed(g)[0] for g in _telephone_events(bob)]
        _telephone_events(alice)
    assert alice.stats.local_epoch >= 3 and bob.stats.peer_epoch == alice.stats.local_epoch
    assert got == list(range(0, 400, 5)) and bob.stats.refused == {}
    assert len(sizes) == 1, sizes


def test_an_event_changes_no_other_frame() -> None:
    """Frames around one that carries an event are byte-identical to those of a stream that carried none."""
    from tests.vectors.gen_frames import _keygen

    def session() -> MediaSession:
        ko, _ka = make_pair(interval_ms=2000, seed=b"same")
        gen = _keygen("x")
        s = MediaSession(ko, T0, MediaConfig(dh_interval_s=0), keygen=lambda: next(gen))
        s.set_payload_size(60)
        return s

    plain, mixed = session(), session()
    for i in range(40):
        now = T0 + 0.02 * i
        carries = i in (0, 5, 17)
        a = plain.seal(b"frame %d" % i, now)
        b = mixed.seal(b"frame %d" % i, now, event=b"event %02d" % i if carries else None)
        assert len(a) == len(b)
        assert (a == b) == (not carries)


def test_the_secure_protector_gives_telephone_events_to_the_media_and_keeps_the_rest_in_order() -> None:
    from voipgw.active_call import SecureProtector

    alice, bob = _pair(dh=0.2)
    pa, pb = SecureProtector(alice), SecureProtector(bob)
    now = T0
    taken: list[int] = []
    others: list[object] = []
    for i in range(100):
        now += 0.02
        ev = encode_sealed(i, TelephoneEvent(1, False, 10, 400)) if i % 3 == 0 else None
        frame = pa.seal(b"a", now, event=ev)
        pa.open(pb.seal(b"b", now), now)
        pb.open(frame, now)
        taken += [decode_sealed(d)[0] for d in pb.take_telephone_events()]
        if i % 10 == 9:  # the call layer polls now and then, as ActiveCall.poll_session_events does
            while (e := pb.next_event()) is not None:
                others.append(e)
    assert taken == list(range(0, 100, 3))
    assert not [e for e in others if isinstance(e, TelephoneEventReceived)]
    kinds = {type(e).__name__ for e in others}
    assert {"SasReady", "PeerRatchetStep", "LocalRatchetStep"} <= kinds, kinds
    steps = [e.epoch for e in others if type(e).__name__ == "PeerRatchetStep"]  # type: ignore[attr-defined]
    assert steps == sorted(steps) and len(steps) >= 3  # in the order the session raised them
