"""The degraded state of a call (issue 14): the SAS-reveal deadline as a table, and raise/clear bookkeeping."""

from __future__ import annotations

import pytest

from ratchet.events import Degradation
from voipgw.media_health import SAS_REVEAL_DEADLINE_S, Degraded, MediaHealth, from_ratchet, sas_reveal_overdue

D = SAS_REVEAL_DEADLINE_S


@pytest.mark.parametrize(
    ("answered_at", "now", "sas_known", "secure", "overdue"),
    [
        (None, 100.0, False, True, False),  # not answered yet: the callee's ring point may be far off
        (100.0, 100.0 + D - 0.01, False, True, False),  # within the deadline
        (100.0, 100.0 + D, False, True, True),
        (100.0, 100.0 + 60, True, True, False),  # the SAS arrived
        (100.0, 100.0 + 60, False, False, False),  # a plain call has no SAS to miss
    ],
)
def test_sas_reveal_overdue(
    answered_at: float | None, now: float, sas_known: bool, secure: bool, overdue: bool
) -> None:
    assert sas_reveal_overdue(answered_at, now, sas_known, secure) is overdue


def test_raised_once_restored_once_and_remembered() -> None:
    h = MediaHealth()
    assert h.summary() == "" and not h.degraded
    assert h.raise_(Degraded.NO_PEER_STEP, 5.0) is True
    assert h.raise_(Degraded.NO_PEER_STEP, 9.0) is False, "raised once: logged and counted once"
    assert h.active[Degraded.NO_PEER_STEP] == 5.0
    assert h.summary() == "DEGRADED: " + Degraded.NO_PEER_STEP.text
    assert h.clear(Degraded.NO_PEER_STEP) is True and h.clear(Degraded.NO_PEER_STEP) is False
    assert h.as_dict() == {"active": [], "seen": ["no-peer-dh-step"]}


def test_every_degradation_has_its_own_text_and_label() -> None:
    assert len({d.text for d in Degraded}) == len({d.value for d in Degraded}) == len(Degraded)


def test_every_ratchet_degradation_has_a_call_level_name() -> None:
    assert {from_ratchet(d) for d in Degradation} <= set(Degraded)
    assert len({from_ratchet(d) for d in Degradation}) == len(Degradation)
