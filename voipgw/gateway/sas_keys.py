"""The inside phone's SAS keys during a sealed gateway call: ``*1`` (the SAS the gateway spoke matched what the far
end sees) and ``*0`` (it did not), picked out of the digits the phone sends; every other digit is relayed.

Theory of operation. A pure state machine over one input, a digit (or ``EXPIRE``, the timer that flushes a lone
``*``), whose whole behaviour is the ``TRANSITIONS`` table: each row gives the next state, the action for the
gateway and the digits to relay to the far end, in order. A ``*`` is held until the next digit says whether it
was ours; ``*1`` and ``*0`` never reach the far end. No I/O, no clock (the caller runs the timer).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

PREFIX = "*"
CONFIRM_DIGIT = "1"
MISMATCH_DIGIT = "0"
EXPIRE = "expire"
"""Input: the held ``*`` waited ``HOLD_S`` for a second digit; it was not ours, so it is relayed."""
HOLD_S = 2.0
"""How long a ``*`` is held for the digit after it (a far-end IVR waiting for a lone ``*`` gets it this late)."""
DIGITS = "0123456789*#ABCD"


class KeyState(enum.Enum):
    IDLE = "idle"
    """No digit held."""
    STAR = "star"
    """A ``*`` is held: the next digit decides."""


class SasAction(enum.Enum):
    NONE = "none"
    CONFIRM = "confirm"
    """``*1``: the SAS matched; the contact becomes verified."""
    MISMATCH = "mismatch"
    """``*0``: the SAS did not match; the call is hung up and a warning recorded."""


@dataclass(frozen=True)
class Step:
    state: KeyState
    action: SasAction
    relay: str
    """Digits to send on to the far end now, in order."""


_I, _S, _N = KeyState.IDLE, KeyState.STAR, SasAction.NONE
TRANSITIONS: dict[tuple[KeyState, str], Step] = {
    (_I, PREFIX): Step(_S, _N, ""),
    (_I, EXPIRE): Step(_I, _N, ""),
    (_S, CONFIRM_DIGIT): Step(_I, SasAction.CONFIRM, ""),
    (_S, MISMATCH_DIGIT): Step(_I, SasAction.MISMATCH, ""),
    (_S, PREFIX): Step(_S, _N, PREFIX),  # "**": the first one was not ours, the second may be
    (_S, EXPIRE): Step(_I, _N, PREFIX),
    **{(_I, d): Step(_I, _N, d) for d in DIGITS if d != PREFIX},
    **{(_S, d): Step(_I, _N, PREFIX + d) for d in DIGITS if d not in (PREFIX, CONFIRM_DIGIT, MISMATCH_DIGIT)},
}


class UnknownDigit(ValueError):
    reason = "dtmf-bad-digit"


def step(state: KeyState, digit: str) -> Step:
    """The table's row for ``digit`` (or ``EXPIRE``) in ``state``; UnknownDigit for anything else."""
    row = TRANSITIONS.get((state, digit))
    if row is None:
        raise UnknownDigit(f"{digit!r} is not a DTMF digit")
    return row


class SasKeys:
    """The machine's state for one call: ``feed`` a digit, get the step (its state is kept)."""

    def __init__(self) -> None:
        self.state = KeyState.IDLE

    def feed(self, digit: str) -> Step:
        row = step(self.state, digit)
        self.state = row.state
        return row
