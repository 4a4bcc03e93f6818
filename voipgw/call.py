"""The life cycle of one call, in one place: states, the events that move them, and the security state.

Theory of operation. A call is driven by three kinds of input: SIP events (from ``voipgw.sip``), the
handshake verdict (from ``ratchet.handshake``) and local actions (hang up, timeout). Every transition is in
``TRANSITIONS``; anything else raises :class:`CallTransitionError` naming the state and the event, so a bug
shows up as a clear error instead of a call in a strange state. This module does not know whether it is a
softphone leg or a gateway leg, and it does no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class CallState(enum.Enum):
    CALLING = "calling"
    """We sent an INVITE."""
    INCOMING = "incoming"
    """We received an INVITE and have not answered yet."""
    RINGING = "ringing"
    """Ringing (either side)."""
    ESTABLISHED = "established"
    """Answered: media runs (secure, or plain under the opportunistic policy)."""
    ENDED = "ended"
    """Terminal: hung up after being established."""
    FAILED = "failed"
    """Terminal: never established (refused, busy, no answer, handshake failure, policy)."""


class Security(enum.Enum):
    PENDING = "pending"
    SECURE_UNVERIFIED = "secure, unverified"
    SECURE_VERIFIED = "secure, verified"
    KEY_CHANGED = "key changed, unverified"
    NOT_SECURE = "NOT SECURE"
    REFUSED = "refused"


class CallEvent(enum.Enum):
    SEND_INVITE = "send-invite"
    RECEIVE_INVITE = "receive-invite"
    RINGING = "ringing"
    ANSWERED = "answered"
    REFUSED = "refused"
    HUNG_UP = "hung-up"


_S, _E = CallState, CallEvent
TRANSITIONS: dict[tuple[CallState | None, CallEvent], CallState] = {
    (None, _E.SEND_INVITE): _S.CALLING,
    (None, _E.RECEIVE_INVITE): _S.INCOMING,
    (_S.CALLING, _E.RINGING): _S.RINGING,
    (_S.INCOMING, _E.RINGING): _S.RINGING,
    (_S.RINGING, _E.RINGING): _S.RINGING,
    (_S.CALLING, _E.ANSWERED): _S.ESTABLISHED,
    (_S.INCOMING, _E.ANSWERED): _S.ESTABLISHED,
    (_S.RINGING, _E.ANSWERED): _S.ESTABLISHED,
    (_S.CALLING, _E.REFUSED): _S.FAILED,
    (_S.INCOMING, _E.REFUSED): _S.FAILED,
    (_S.RINGING, _E.REFUSED): _S.FAILED,
    (_S.CALLING, _E.HUNG_UP): _S.FAILED,
    (_S.INCOMING, _E.HUNG_UP): _S.FAILED,
    (_S.RINGING, _E.HUNG_UP): _S.FAILED,
    (_S.ESTABLISHED, _E.HUNG_UP): _S.ENDED,
    (_S.ESTABLISHED, _E.REFUSED): _S.ENDED,  # e.g. the SAS reveal contradicted its commitment
}
TERMINAL = frozenset({CallState.ENDED, CallState.FAILED})


class CallTransitionError(RuntimeError):
    def __init__(self, state: CallState | None, event: CallEvent) -> None:
        super().__init__(f"event {event.value!r} is not allowed in state {state.value if state else 'new'!r}")
        self.state = state
        self.event = event


@dataclass
class CallRecord:
    """What a user (status line, summary, JSON) needs to know about one call."""

    call_id: str = ""
    direction: str = "outgoing"
    local_aor: str = ""
    remote_aor: str = ""
    state: CallState | None = None
    security: Security = Security.PENDING
    reason: str = ""
    """Why the call failed or ended (SIP code and text, or a handshake/policy reason)."""
    sas: str | None = None
    sas_words: tuple[str, str] | None = None
    safety_number: str | None = None
    remote_identity: bytes | None = None
    local_identity: bytes | None = None
    trust_state: str | None = None
    """first-contact / known / key-changed, from the contact store (None without a store)."""
    trust_warning: str | None = None
    """The loud key-change text (old and new safety numbers, when the old key was first seen)."""
    suite: str | None = None
    codec: str | None = None
    setup_ms: float | None = None
    """INVITE sent (or received) to answer processed, on this side's clock."""
    handshake_ms: float | None = None
    """CPU spent in our handshake code on this side (offer + accept, or verify + answer)."""
    started_at: float | None = None
    ended_at: float | None = None
    history: list[tuple[CallState, CallEvent]] = field(default_factory=list)

    def apply(self, event: CallEvent) -> CallState:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise CallTransitionError(self.state, event)
        self.state = new
        self.history.append((new, event))
        return new

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    @property
    def secure(self) -> bool:
        return self.security in (Security.SECURE_UNVERIFIED, Security.SECURE_VERIFIED, Security.KEY_CHANGED)
