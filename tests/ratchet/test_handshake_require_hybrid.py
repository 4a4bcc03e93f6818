"""``HandshakeConfig.require_hybrid``: a side that requires the post-quantum hybrid refuses a session on x25519
alone, in either role, with the typed reason ``hybrid-required``; with both sides hybrid it changes nothing."""

from __future__ import annotations

import pytest

from ratchet import errors
from ratchet.handshake import HandshakeConfig
from ratchet.params import Suite
from tests.support.handshake_fixtures import CLASSICAL, HYBRID, T0, answer, make_offerer


def test_answerer_requiring_the_hybrid_refuses_a_classical_offer() -> None:
    offer = make_offerer(CLASSICAL).offer_bytes
    with pytest.raises(errors.HybridRequired, match="X25519_MLKEM768") as caught:
        answer(offer, suites=HYBRID, require_hybrid=True)
    assert caught.value.reason == "hybrid-required"
    assert isinstance(caught.value, errors.UnsupportedSuite)  # a caller mapping UnsupportedSuite still matches
    answer(offer, suites=HYBRID)  # the same offer without the policy: accepted, on x25519


def test_offerer_requiring_the_hybrid_refuses_a_classical_answerer() -> None:
    offerer = make_offerer(HYBRID, require_hybrid=True)
    wire, _ = answer(offerer.offer_bytes, suites=CLASSICAL)
    with pytest.raises(errors.HybridRequired, match="chose X25519"):
        offerer.accept_answer(wire, T0 + 0.2)


@pytest.mark.parametrize("offerer_requires", [True, False])
@pytest.mark.parametrize("answerer_requires", [True, False])
def test_both_hybrid_settle_on_the_hybrid_whoever_requires_it(offerer_requires: bool, answerer_requires: bool) -> None:
    offerer = make_offerer(HYBRID, require_hybrid=offerer_requires)
    wire, bob = answer(offerer.offer_bytes, suites=HYBRID, require_hybrid=answerer_requires)
    alice = offerer.accept_answer(wire, T0 + 0.2)
    assert alice.suite is bob.suite is Suite.X25519_MLKEM768


def test_requiring_the_hybrid_without_offering_it_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="require_hybrid"):
        HandshakeConfig(suites=CLASSICAL, require_hybrid=True)
