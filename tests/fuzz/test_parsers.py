"""Every parser that sees network or file bytes, fed random and mutated inputs: only typed rejections escape.

The targets (tests/fuzz/targets.py) also check that a rejection names a specific reason and that a refused
frame leaves a live receiver able to open the next genuine one. ``make fuzz`` runs the same targets for longer.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.strategies import inputs
from tests.fuzz.targets import TARGETS, run, seeds

pytestmark = pytest.mark.hardening

SEEDS = seeds()
EXAMPLES = int(os.environ.get("VOIPGW_FUZZ_EXAMPLES", "150"))
"""Per property; make fuzz raises it for a long run."""


def test_every_target_has_a_seed() -> None:
    assert set(SEEDS) == set(TARGETS)
    assert all(SEEDS[name] for name in TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_are_accepted_inputs(name: str) -> None:
    for data in SEEDS[name]:
        run(name, data)


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_and_mutated_inputs_raise_only_typed_errors(name: str, data: st.DataObject) -> None:
    run(name, data.draw(inputs(SEEDS[name]), label="input"))
