"""SDP hold directions and RFC 4733 telephone-event lines: parsing real-world shapes (session- and media-level
attributes, RFC 2543 ``c=0.0.0.0`` hold, several telephone-event clock rates), writing them, round trips, and
the guarantee that default arguments keep our SDP byte-identical."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voipgw.sdp import (
    DIRECTIONS,
    Codec,
    SdpError,
    answer_direction,
    build_sdp,
    hold_direction,
    opus_codec,
    parse_sdp,
    telephone_event_codec,
)

# What build_sdp wrote before directions and telephone-event existed (pinned: vectors and sizes rely on it).
LEGACY = (
    "v=0\r\no=voipgw 7 1 IN IP4 127.0.0.1\r\ns=voipgw\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=20;useinbandfec=0\r\n"
    "a=ptime:20\r\na=sendrecv\r\na=voipgw:AAAA\r\n"
)


def _sdp(*body: str, c: str = "c=IN IP4 192.0.2.1") -> str:
    return "\r\n".join(["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", c, "t=0 0", *body]) + "\r\n"


def test_default_arguments_keep_the_output_byte_identical() -> None:
    assert build_sdp("127.0.0.1", 4000, [opus_codec()], handshake="AAAA", session_id=7) == LEGACY


def test_telephone_event_is_written_after_the_audio_codecs_and_read_back() -> None:
    text = build_sdp("127.0.0.1", 4000, [opus_codec()], session_id=7, telephone_event_pt=101)
    assert "m=audio 4000 RTP/AVP 111 101\r\n" in text
    assert "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n" in text
    desc = parse_sdp(text)
    assert desc.telephone_event == Codec("telephone-event", 101, 8000)
    assert desc.find("opus") == opus_codec()
    assert desc.direction == "sendrecv"


def test_a_telephone_event_codec_in_the_list_is_not_written_twice() -> None:
    text = build_sdp("127.0.0.1", 4000, [opus_codec(), telephone_event_codec(100)], telephone_event_pt=100)
    assert text.count("telephone-event") == 1 and text.count("a=fmtp:100 0-16") == 1
    assert "RTP/AVP 111 100\r\n" in text


def test_bad_build_arguments_are_refused() -> None:
    with pytest.raises(SdpError) as e:
        build_sdp("127.0.0.1", 4000, [opus_codec()], direction="hold")
    assert e.value.reason == "sdp-bad-direction"
    with pytest.raises(SdpError) as e:
        build_sdp("127.0.0.1", 4000, [opus_codec()], telephone_event_pt=111)
    assert e.value.reason == "sdp-bad-payload-type"
    with pytest.raises(SdpError):
        build_sdp("127.0.0.1", 4000, [opus_codec()], telephone_event_pt=8)


def test_only_the_8000_hz_telephone_event_is_used() -> None:
    text = _sdp(
        "m=audio 5000 RTP/AVP 111 110 101",
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:110 telephone-event/48000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
    )
    assert parse_sdp(text).telephone_event == Codec("telephone-event", 101, 8000)
    only_48k = _sdp("m=audio 5000 RTP/AVP 111 110", "a=rtpmap:111 opus/48000/2", "a=rtpmap:110 telephone-event/48000")
    assert parse_sdp(only_48k).telephone_event is None
    assert parse_sdp(_sdp("m=audio 5000 RTP/AVP 0", "a=sendrecv")).telephone_event is None


@pytest.mark.parametrize(
    ("session", "media", "expected"),
    [
        (None, None, "sendrecv"),
        ("sendonly", None, "sendonly"),
        (None, "recvonly", "recvonly"),
        ("sendonly", "sendrecv", "sendrecv"),  # the media-level attribute wins
        ("inactive", "recvonly", "recvonly"),
        ("recvonly", "inactive", "inactive"),
    ],
)
def test_session_level_direction_is_overridden_by_the_media_level_one(
    session: str | None, media: str | None, expected: str
) -> None:
    body = ([f"a={session}"] if session else []) + ["m=audio 5000 RTP/AVP 0"] + ([f"a={media}"] if media else [])
    assert parse_sdp(_sdp(*body)).direction == expected


def test_a_later_stream_direction_does_not_leak_into_ours() -> None:
    text = _sdp("m=audio 5000 RTP/AVP 0", "m=video 5002 RTP/AVP 96", "a=inactive")
    assert parse_sdp(text).direction == "sendrecv"


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        (None, "sendonly"),
        ("sendrecv", "sendonly"),
        ("sendonly", "sendonly"),
        ("recvonly", "inactive"),
        ("inactive", "inactive"),
    ],
)
def test_rfc2543_null_address_hold_reads_as_sendonly(attr: str | None, expected: str) -> None:
    body = ["m=audio 5000 RTP/AVP 0"] + ([f"a={attr}"] if attr else [])
    desc = parse_sdp(_sdp(*body, c="c=IN IP4 0.0.0.0"))
    assert desc.direction == expected
    assert not desc.receives


def test_media_level_null_address_counts_too() -> None:
    text = _sdp("m=audio 5000 RTP/AVP 0", "c=IN IP4 0.0.0.0")
    assert parse_sdp(text).direction == "sendonly"


@pytest.mark.parametrize(
    ("offered", "hold", "expected"),
    [
        ("sendrecv", False, "sendrecv"),
        ("sendonly", False, "recvonly"),
        ("recvonly", False, "sendonly"),
        ("inactive", False, "inactive"),
        ("sendrecv", True, "recvonly"),
        ("sendonly", True, "recvonly"),
        ("recvonly", True, "inactive"),
    ],
)
def test_answer_direction_mirrors_the_offer(offered: str, hold: bool, expected: str) -> None:
    assert answer_direction(offered, local_hold=hold) == expected


def test_hold_direction_for_re_offers() -> None:
    assert hold_direction(False) == "sendrecv"
    assert hold_direction(True) == "sendonly"
    assert hold_direction(False, True) == "recvonly"
    assert hold_direction(True, True) == "inactive"


@given(
    direction=st.sampled_from(DIRECTIONS),
    te_pt=st.none() | st.integers(96, 127).filter(lambda p: p != 111),
    port=st.integers(0, 65535),
    host=st.sampled_from(["127.0.0.1", "192.0.2.7", "::1", "2001:db8::5"]),
)
def test_build_then_parse_round_trips(direction: str, te_pt: int | None, port: int, host: str) -> None:
    desc = parse_sdp(build_sdp(host, port, [opus_codec()], direction=direction, telephone_event_pt=te_pt))
    assert desc.direction == direction
    assert desc.rtp_address == (host, port)
    assert desc.telephone_event == (None if te_pt is None else telephone_event_codec(te_pt))
    assert desc.sends == (direction in ("sendrecv", "sendonly"))
    assert desc.receives == (direction in ("sendrecv", "recvonly"))
    # Our own answer to our own offer is consistent: whoever receives, the other sends.
    ans = answer_direction(direction)
    assert (ans in ("sendrecv", "sendonly")) == desc.receives
    assert (ans in ("sendrecv", "recvonly")) == desc.sends


@given(
    st.lists(
        st.sampled_from(
            [*(f"a={d}" for d in DIRECTIONS), "a=ptime:20", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16"]
        ),
        max_size=8,
    )
)
def test_any_mix_of_direction_attributes_parses_to_one_direction(attrs: list[str]) -> None:
    desc = parse_sdp(_sdp("m=audio 5000 RTP/AVP 0 101", *attrs))
    dirs = [a[2:] for a in attrs if a[2:] in DIRECTIONS]
    assert desc.direction == (dirs[-1] if dirs else "sendrecv")
