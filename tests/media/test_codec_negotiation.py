"""SDP codec negotiation: secure offers are Opus only; plain ones prefer Opus, then PCMU, then PCMA, and the
answer reuses the offer's payload type numbers (RFC 3264)."""

from __future__ import annotations

from voipgw.sdp import (
    PCMA_CODEC,
    PCMU_CODEC,
    PLAIN_CODECS,
    SECURE_CODECS,
    Codec,
    build_sdp,
    choose_codec,
    offer_codecs,
    opus_codec,
    parse_sdp,
)


def test_our_offers_list_opus_alone_when_secure_and_then_g711_when_plain() -> None:
    secure = parse_sdp(build_sdp("127.0.0.1", 4000, offer_codecs(SECURE_CODECS), handshake="AAAA"))
    plain = parse_sdp(build_sdp("127.0.0.1", 4000, offer_codecs(PLAIN_CODECS)))
    assert [(c.name, c.payload_type, c.clock_rate) for c in secure.codecs] == [("opus", 111, 48000)]
    assert [(c.name, c.payload_type, c.clock_rate) for c in plain.codecs] == [
        ("opus", 111, 48000),
        ("pcmu", 0, 8000),
        ("pcma", 8, 8000),
    ]


def test_answerer_prefers_opus_then_pcmu_then_pcma_whatever_the_offer_order() -> None:
    te = Codec("telephone-event", 101, 8000)
    assert choose_codec((PCMA_CODEC, PCMU_CODEC, opus_codec(96), te), PLAIN_CODECS) == opus_codec(96)
    assert choose_codec((PCMA_CODEC, te, PCMU_CODEC), PLAIN_CODECS) == PCMU_CODEC
    assert choose_codec((te, PCMA_CODEC), PLAIN_CODECS) == PCMA_CODEC
    assert choose_codec((te, Codec("g722", 9, 8000)), PLAIN_CODECS) is None
    assert choose_codec((PCMU_CODEC, PCMA_CODEC), SECURE_CODECS) is None


def test_the_answer_reuses_the_offers_dynamic_payload_type() -> None:
    offer = "\r\n".join(
        [
            "v=0",
            "o=- 1 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "m=audio 5000 RTP/AVP 98 0 101",
            "a=rtpmap:98 opus/48000/2",
            "a=rtpmap:101 telephone-event/8000",
            "",
        ]
    )
    chosen = choose_codec(parse_sdp(offer).codecs, PLAIN_CODECS)
    assert chosen == Codec("opus", 98, 48000)
    answer = parse_sdp(build_sdp("127.0.0.1", 6000, [chosen]))
    assert answer.codecs == (Codec("opus", 98, 48000),) and answer.handshake is None
