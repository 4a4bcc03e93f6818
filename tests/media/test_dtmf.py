"""RFC 4733 DTMF without sockets: the payload codec, the sender's train, the once-only receiver, and sealed events
in the ratchet (same frame sequence as audio; a relabelled frame never changes meaning; audio is unchanged)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratchet.errors import MalformedFrame, ReplayedFrame, TamperedFrame, WrongContent
from ratchet.frame import (
    CONTENT_TELEPHONE_EVENT,
    EXT_CONTENT_TYPE,
    Extensions,
    encode_extensions,
    parse_extensions,
    split_frame,
    with_content_type,
)
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


# --- sealed events in the ratchet -------------------------------------------------------------------------


def _pair(params: SendParams | None = None, dh: float = 0.0) -> tuple[MediaSession, MediaSession]:
    ko, ka = make_pair(interval_ms=2000, offerer_params=params, answerer_params=params)
    cfg = MediaConfig(dh_interval_s=dh)
    return MediaSession(ko, T0, cfg), MediaSession(ka, T0, cfg)


def test_extension_block_carries_the_content_type() -> None:
    block = encode_extensions(Extensions(content_type=CONTENT_TELEPHONE_EVENT))
    assert block == bytes([3, EXT_CONTENT_TYPE, 1, CONTENT_TELEPHONE_EVENT])
    assert parse_extensions(block[1:]).content_type == CONTENT_TELEPHONE_EVENT
    assert with_content_type(b"", 1) == block
    with pytest.raises(MalformedFrame):
        parse_extensions(bytes([EXT_CONTENT_TYPE, 1, 0]))  # audio is the absence of the extension
    with pytest.raises(MalformedFrame):
        parse_extensions(bytes([EXT_CONTENT_TYPE, 2, 1, 1]))
    with pytest.raises(ValueError):
        with_content_type(b"", 0)


@pytest.mark.parametrize(
    "params",
    [
        SendParams(),
        SendParams(per_frame_keys=True),
        SendParams(frame_suite=FrameSuite.AES256_GCM_128, frames_per_key=3),
    ],
)
def test_events_share_the_audio_sequence_and_open_only_as_events(params: SendParams) -> None:
    alice, bob = _pair(params)
    now = T0
    ev = encode_sealed(1234, TelephoneEvent(5, False, 10, 400))
    seen: list[int] = []
    for i in range(40):
        now += 0.02
        if i % 7 == 3:
            frame = alice.seal_event(ev, now)
            assert split_frame(frame)[1] is not None  # the content type rides in the authenticated block
            assert bob.open_event(frame, now) == ev
        else:
            frame = alice.seal(b"opus frame %d" % i, now)
            assert bob.open(frame, now) == b"opus frame %d" % i
        seen.append(bob.last_index)
    assert seen == list(range(40))  # one counter sequence: events took their numbers from the audio's
    assert bob.stats.refused == {}


def test_relabelled_frames_are_refused_both_ways_and_change_nothing() -> None:
    alice, bob = _pair()
    now = T0 + 0.02
    audio = alice.seal(b"audio", now)
    event = alice.seal_event(encode_sealed(1, TelephoneEvent(1, False, 10, 400)), now)
    with pytest.raises(WrongContent):
        bob.open_event(audio, now)  # audio relabelled as telephone-event: no digit
    with pytest.raises(WrongContent):
        bob.open(event, now)  # a digit relabelled as audio: never decoded as Opus
    assert bob.opener.opened == 0
    assert bob.open(audio, now) == b"audio"  # neither refusal consumed the counter
    assert bob.open_event(event, now)[:4] == (1).to_bytes(4, "big")
    with pytest.raises(ReplayedFrame):
        bob.open_event(event, now)
    assert bob.stats.refused["wrong-content"] == 2


def test_stripping_or_forging_the_content_type_fails_the_tag() -> None:
    alice, bob = _pair()
    now = T0 + 0.02
    alice.seal(b"x", now)  # frames 0-2 announce the ratchet key; frame 4 below has a bare header
    frames = [alice.seal(b"z", now) for _ in range(3)]
    event = alice.seal_event(encode_sealed(1, TelephoneEvent(1, False, 10, 400)), now)
    # Strip the extension: clear X and drop the 4-byte block -> claims to be audio.
    word = int.from_bytes(event[:4], "big") & ~(1 << 30)
    stripped = word.to_bytes(4, "big") + event[8:]
    with pytest.raises(TamperedFrame):
        bob.open(stripped, now)
    # Add a content type to an audio frame -> claims to be an event.
    audio = frames[2]
    assert split_frame(audio)[1] is None
    word = int.from_bytes(audio[:4], "big") | (1 << 30)
    forged = word.to_bytes(4, "big") + bytes([3, EXT_CONTENT_TYPE, 1, 1]) + audio[4:]
    with pytest.raises(TamperedFrame):
        bob.open_event(forged, now)


def test_events_during_a_dh_step_and_announcements_still_open() -> None:
    alice, bob = _pair(dh=1.0)
    now = T0
    opened_events = 0
    for i in range(400):
        now += 0.02
        a2b = alice.seal_event(encode_sealed(i, TelephoneEvent(i % 16, False, 10, 400)), now) if i % 5 == 0 else None
        if a2b is not None:
            assert decode_sealed(bob.open_event(a2b, now))[0] == i
            opened_events += 1
        else:
            assert bob.open(alice.seal(b"a%d" % i, now), now) == b"a%d" % i
        assert alice.open(bob.seal(b"b%d" % i, now), now) == b"b%d" % i
    assert alice.stats.local_epoch >= 3 and bob.stats.peer_epoch == alice.stats.local_epoch
    assert opened_events == 80 and bob.stats.refused == {}


def test_an_event_frame_changes_no_other_frame() -> None:
    """Audio frames around an event are byte-identical to those of a stream that sent audio in its place."""
    from tests.vectors.gen_frames import _keygen

    def session() -> MediaSession:
        ko, _ka = make_pair(interval_ms=2000, seed=b"same")
        gen = _keygen("x")
        return MediaSession(ko, T0, MediaConfig(dh_interval_s=0), keygen=lambda: next(gen))

    plain, mixed = session(), session()
    for i in range(40):
        now = T0 + 0.02 * i
        a = plain.seal(b"frame %d" % i, now)
        b = mixed.seal_event(b"event %d" % i, now) if i in (0, 5, 17) else mixed.seal(b"frame %d" % i, now)
        assert (a == b) == (i not in (0, 5, 17))
