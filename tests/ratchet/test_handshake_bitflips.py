"""Malformed input never escapes as anything but a typed HandshakeError; every single-bit flip is refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratchet.errors import HandshakeError
from ratchet.handshake import AnswerMessage, OfferMessage, decode_attribute
from ratchet.params import Suite
from tests.support.handshake_fixtures import CLASSICAL, HYBRID, T0, answer, flip_bit, make_offerer
from voipgw.sdp import SdpError, build_sdp, opus_codec, parse_sdp

pytestmark = pytest.mark.hardening

SUITES = {"x25519": CLASSICAL, "hybrid": HYBRID}
# The hybrid suite's messages are ten times longer: flipping each of their bits takes seconds.
SUITE_PARAMS = ["x25519", pytest.param("hybrid", marks=pytest.mark.integration)]


@pytest.mark.parametrize("suite", SUITE_PARAMS)
def test_every_bit_flip_in_an_offer_is_refused(suite: str) -> None:
    offer = make_offerer(SUITES[suite]).offer_bytes
    for bit in range(len(offer) * 8):
        with pytest.raises(HandshakeError):
            answer(flip_bit(offer, bit))


@pytest.mark.parametrize("suite", SUITE_PARAMS)
def test_every_bit_flip_in_an_answer_is_refused(suite: str) -> None:
    offerer = make_offerer(SUITES[suite])
    wire, _ = answer(offerer.offer_bytes)
    for bit in range(len(wire) * 8):
        with pytest.raises(HandshakeError):
            offerer.accept_answer(flip_bit(wire, bit), T0 + 0.2)
    keys = offerer.accept_answer(wire, T0 + 0.2)  # none of the refusals consumed the offer
    assert keys.suite is (Suite.X25519_MLKEM768 if suite == "hybrid" else Suite.X25519)


_OFFERER = make_offerer(HYBRID)
_OFFER = _OFFERER.offer_bytes
_ANSWER, _ = answer(_OFFER)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1600))
def test_random_bytes_raise_only_handshake_errors(data: bytes) -> None:
    for call in (
        lambda: OfferMessage.parse(data),
        lambda: AnswerMessage.parse(data),
        lambda: answer(data),
        lambda: _OFFERER.accept_answer(data, T0 + 0.2),
    ):
        try:
            call()
        except HandshakeError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([_OFFER, _ANSWER]), st.data())
def test_random_splices_raise_only_handshake_errors(wire: bytes, data: st.DataObject) -> None:
    """Valid prefixes with random tails reach the deep parser branches (strings, ML-KEM fields)."""
    cut = data.draw(st.integers(0, len(wire)))
    tail = data.draw(st.binary(max_size=64))
    mutated = wire[:cut] + tail + wire[cut + len(tail) :]
    for call in (
        lambda: answer(mutated),
        lambda: _OFFERER.accept_answer(mutated, T0 + 0.2),
    ):
        try:
            call()
        except HandshakeError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_attribute_text_raises_only_handshake_errors(text: str) -> None:
    try:
        decode_attribute(text)
    except HandshakeError:
        pass
    # The production path: voipgw.sdp finds the line (or refuses the SDP), ratchet decodes the value.
    try:
        found = parse_sdp(build_sdp("127.0.0.1", 4000, [opus_codec()], handshake=text)).handshake
        if found is not None:
            decode_attribute(found)
    except (SdpError, HandshakeError):
        pass
