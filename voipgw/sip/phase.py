"""The phases of one SIP dialog (INVITE to BYE) and the table of moves between them; nothing else changes a phase.

Pure: no sippy, no threads. The call's life cycle above SIP (ringing, handshake, secure...) is ``voipgw.call``.

Theory of operation
-------------------
A dialog starts in SETUP (INVITE sent or received). The caller moves to UP when its INVITE is answered; the callee
moves to ANSWERING when it sends its 200 and to UP when the ACK arrives. Any terminal outcome (a final error, a
BYE, a CANCEL, our hang-up, the stack stopping) moves it to ENDED, from which nothing moves. Which side may send
what in a phase (only the callee rings or answers, only the caller cancels) is decided by the dialog, not here.
"""

from __future__ import annotations

import enum

from voipgw.sip.events import SipError


class DialogPhase(enum.Enum):
    SETUP = "setup"
    """INVITE sent or received, no final answer yet (provisional replies keep it here)."""
    ANSWERING = "answering"
    """Callee only: our 200 OK is sent, its ACK not yet received."""
    UP = "up"
    """The dialog is established (re-INVITEs happen here)."""
    ENDED = "ended"
    """Over; events and actions are ignored from now on."""


class DialogEvent(enum.Enum):
    ANSWERED = "answered"
    """Caller: a 2xx answered our INVITE."""
    ANSWER_SENT = "answer_sent"
    """Callee: we sent 200 OK."""
    ACKNOWLEDGED = "acknowledged"
    """Callee: the ACK for our 200 OK arrived."""
    TERMINATED = "terminated"
    """Failed or Ended was reported: final error, BYE, CANCEL, our hang-up or rejection, no answer, shutdown."""


_P, _E = DialogPhase, DialogEvent
TRANSITIONS: dict[tuple[DialogPhase, DialogEvent], DialogPhase] = {
    (_P.SETUP, _E.ANSWERED): _P.UP,
    (_P.SETUP, _E.ANSWER_SENT): _P.ANSWERING,
    (_P.ANSWERING, _E.ACKNOWLEDGED): _P.UP,
    (_P.SETUP, _E.TERMINATED): _P.ENDED,
    (_P.ANSWERING, _E.TERMINATED): _P.ENDED,
    (_P.UP, _E.TERMINATED): _P.ENDED,
}
"""Every legal move; anything else is a bug in the dialog and raises DialogPhaseError."""


class DialogPhaseError(SipError):
    """A dialog was asked to make a move the table does not have."""

    def __init__(self, phase: DialogPhase, event: DialogEvent) -> None:
        super().__init__(f"dialog event {event.name} is not allowed in phase {phase.name}")
        self.phase = phase
        self.event = event


def advance(phase: DialogPhase, event: DialogEvent) -> DialogPhase:
    """The phase after ``event`` in ``phase``; raises DialogPhaseError for a move the table does not have."""
    try:
        return TRANSITIONS[phase, event]
    except KeyError:
        raise DialogPhaseError(phase, event) from None
