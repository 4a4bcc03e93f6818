"""The inside phone's SAS keys (voipgw.gateway.sas_keys): the whole table, and digit sequences as a phone sends
them (what is acted on, what is relayed, in order)."""

from __future__ import annotations

import pytest

from voipgw.gateway.sas_keys import (
    DIGITS,
    EXPIRE,
    TRANSITIONS,
    KeyState,
    SasAction,
    SasKeys,
    UnknownDigit,
    step,
)

IDLE, STAR = KeyState.IDLE, KeyState.STAR
N, C, M = SasAction.NONE, SasAction.CONFIRM, SasAction.MISMATCH

ROWS = [
    # state, input, next state, action, relayed
    (IDLE, "*", STAR, N, ""),
    (IDLE, "1", IDLE, N, "1"),
    (IDLE, "0", IDLE, N, "0"),
    (IDLE, "#", IDLE, N, "#"),
    (IDLE, "D", IDLE, N, "D"),
    (IDLE, EXPIRE, IDLE, N, ""),
    (STAR, "1", IDLE, C, ""),
    (STAR, "0", IDLE, M, ""),
    (STAR, "*", STAR, N, "*"),
    (STAR, "2", IDLE, N, "*2"),
    (STAR, "#", IDLE, N, "*#"),
    (STAR, EXPIRE, IDLE, N, "*"),
]


@pytest.mark.parametrize(("state", "digit", "after", "action", "relay"), ROWS)
def test_table_rows(state: KeyState, digit: str, after: KeyState, action: SasAction, relay: str) -> None:
    row = step(state, digit)
    assert (row.state, row.action, row.relay) == (after, action, relay)


def test_the_table_covers_every_digit_in_every_state() -> None:
    assert set(TRANSITIONS) == {(s, d) for s in KeyState for d in (*DIGITS, EXPIRE)}


def test_anything_else_is_refused_with_a_reason() -> None:
    with pytest.raises(UnknownDigit) as err:
        step(IDLE, "x")
    assert err.value.reason == "dtmf-bad-digit"


SEQUENCES = [
    # digits pressed, actions taken, digits the far end gets
    ("*1", [C], ""),
    ("*0", [M], ""),
    ("123", [], "123"),
    ("1*1", [C], "1"),
    ("**1", [C], "*"),
    ("*2*1#", [C], "*2#"),
    ("*" + EXPIRE + "1", [], "*1"),  # a lone * that waited too long was the far end's
    ("#*0", [M], "#"),
]


@pytest.mark.parametrize(("pressed", "actions", "relayed"), SEQUENCES)
def test_sequences(pressed: str, actions: list[SasAction], relayed: str) -> None:
    keys = SasKeys()
    got_actions, got_relay = [], ""
    for digit in pressed.replace(EXPIRE, "E"):
        row = keys.feed(EXPIRE if digit == "E" else digit)
        got_relay += row.relay
        if row.action is not SasAction.NONE:
            got_actions.append(row.action)
    assert (got_actions, got_relay) == (actions, relayed)
