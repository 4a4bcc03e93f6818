"""The SIP dialog phase table (voipgw.sip.phase): every row walked, every other move refused by name."""

from __future__ import annotations

import itertools

import pytest

from voipgw.sip.events import SipError
from voipgw.sip.phase import TRANSITIONS, DialogEvent, DialogPhase, DialogPhaseError, advance


@pytest.mark.parametrize(("move", "after"), list(TRANSITIONS.items()), ids=lambda v: getattr(v, "name", str(v)))
def test_every_row(move: tuple[DialogPhase, DialogEvent], after: DialogPhase) -> None:
    phase, event = move
    assert advance(phase, event) is after


ILLEGAL = [m for m in itertools.product(DialogPhase, DialogEvent) if m not in TRANSITIONS]


@pytest.mark.parametrize(("phase", "event"), ILLEGAL, ids=lambda v: v.name)
def test_every_other_move_is_refused_with_phase_and_event(phase: DialogPhase, event: DialogEvent) -> None:
    with pytest.raises(DialogPhaseError) as info:
        advance(phase, event)
    assert info.value.phase is phase and info.value.event is event
    assert phase.name in str(info.value) and event.name in str(info.value)
    assert isinstance(info.value, SipError)


def test_ended_is_final_and_reachable_from_every_other_phase() -> None:
    assert not [m for m in TRANSITIONS if m[0] is DialogPhase.ENDED]
    for phase in DialogPhase:
        if phase is not DialogPhase.ENDED:
            assert advance(phase, DialogEvent.TERMINATED) is DialogPhase.ENDED


@pytest.mark.parametrize(
    ("events", "final"),
    [
        ([DialogEvent.ANSWERED, DialogEvent.TERMINATED], DialogPhase.ENDED),  # caller: 200, later BYE
        ([DialogEvent.ANSWER_SENT, DialogEvent.ACKNOWLEDGED], DialogPhase.UP),  # callee: 200 sent, ACK in
        ([DialogEvent.ANSWER_SENT, DialogEvent.TERMINATED], DialogPhase.ENDED),  # callee: no ACK, hung up
        ([DialogEvent.TERMINATED], DialogPhase.ENDED),  # refused, cancelled or unanswered
    ],
)
def test_dialog_paths(events: list[DialogEvent], final: DialogPhase) -> None:
    phase = DialogPhase.SETUP
    for event in events:
        phase = advance(phase, event)
    assert phase is final
