"""The life cycle of every call leg, in one place: states, the events that move them, the security state each
state allows, and the state of a gateway bridge derived from its two legs. Pure data: no I/O, no clock.

Theory of operation. A leg (a softphone call, a gateway's outside leg, a gateway's inside leg) is driven by
three kinds of input: SIP events (from ``voipgw.sip``), the handshake and trust verdicts (``voipgw.negotiate``)
and local actions (hang up, timeout). Every transition is in ``TRANSITIONS``; anything else raises
:class:`CallTransitionError` naming the state and the event. The security state changes only through the record
(``apply(event, security=...)`` or ``secure_as``), checked against ``ALLOWED_SECURITY``, so a combination such as
an established call that is "refused" cannot be represented. This module does not know which role a leg plays.

The early dialog (a 183 carrying the SDP answer and the key exchange, before anyone answers) is the state
``EARLY``: the keys are agreed and sealed early media may flow, but the call is not answered; it becomes
ESTABLISHED only when a person (or ``--auto-answer``) answers, and a call that ends from EARLY is FAILED (never
answered) while keeping the security its early dialog had.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from voipgw.media_health import MediaHealth


class CallState(enum.Enum):
    CALLING = "calling"
    """We sent an INVITE."""
    INCOMING = "incoming"
    """We received an INVITE and have not answered yet."""
    RINGING = "ringing"
    """Ringing (either side), no key exchange settled yet (a plain call, or a 180 before the 183)."""
    EARLY = "early"
    """Early dialog: the security is settled, not answered yet. The 183 with the key exchange was sent (callee) or
    accepted (caller); or, for a plain call under ``opportunistic``, the callee rings NOT SECURE (no early media)."""
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


class KeyExchange(enum.Enum):
    """Where the call's key exchange travelled (docs/PROTOCOL.md §C.6)."""

    NONE = "none"
    """None (yet): a plain call, or keys not agreed."""
    SDP = "sdp"
    """``a=voipgw`` in the offer and answer SDP."""
    MEDIA = "media"
    """In the media path: a PBX rebuilt the SDP; the Call-ID is not bound (§C.7)."""


class CallEvent(enum.Enum):
    SEND_INVITE = "send-invite"
    RECEIVE_INVITE = "receive-invite"
    RINGING = "ringing"
    EARLY_MEDIA = "early-media"
    """The security settled before the answer: the key exchange in a 183 (sent by the callee, accepted by the
    caller), or a plain call the callee rings NOT SECURE."""
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
    (_S.CALLING, _E.EARLY_MEDIA): _S.EARLY,
    (_S.INCOMING, _E.EARLY_MEDIA): _S.EARLY,
    (_S.RINGING, _E.EARLY_MEDIA): _S.EARLY,
    (_S.EARLY, _E.RINGING): _S.EARLY,  # a 180 after the 183: still the same early dialog
    (_S.EARLY, _E.ANSWERED): _S.ESTABLISHED,
    (_S.EARLY, _E.REFUSED): _S.FAILED,
    (_S.EARLY, _E.HUNG_UP): _S.FAILED,
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
ANSWERED_STATES = frozenset({CallState.ESTABLISHED, CallState.ENDED})
"""A leg in one of these was answered (it may have ended since)."""

SETTLED = frozenset({Security.SECURE_UNVERIFIED, Security.SECURE_VERIFIED, Security.KEY_CHANGED, Security.NOT_SECURE})
"""What an answered leg's media runs under."""
ALLOWED_SECURITY: dict[CallState | None, frozenset[Security]] = {
    None: frozenset({Security.PENDING}),
    _S.CALLING: frozenset({Security.PENDING}),
    _S.INCOMING: frozenset({Security.PENDING}),
    _S.RINGING: frozenset({Security.PENDING}),
    _S.EARLY: SETTLED,
    _S.ESTABLISHED: SETTLED,
    _S.ENDED: SETTLED | {Security.REFUSED},  # REFUSED: refused after the answer (e.g. the SAS reveal)
    _S.FAILED: SETTLED | {Security.PENDING, Security.REFUSED},  # SETTLED: an early dialog that was never answered
}
"""The security states each call state can hold; ``CallRecord`` refuses any other pair."""


class CallTransitionError(RuntimeError):
    def __init__(self, state: CallState | None, event: CallEvent, security: Security | None = None) -> None:
        what = f" with security {security.value!r}" if security is not None else ""
        super().__init__(f"event {event.value!r}{what} is not allowed in state {state.value if state else 'new'!r}")
        self.state = state
        self.event = event
        self.security = security


class CallSecurityError(CallTransitionError):
    """A security change the call's state does not allow (e.g. REFUSED on an established call)."""


@dataclass
class CallRecord:
    """What a user (status line, summary, JSON) needs to know about one call."""

    call_id: str = ""
    direction: str = "outgoing"
    local_aor: str = ""
    remote_aor: str = ""
    state: CallState | None = None
    """Changed only by :meth:`apply`."""
    security: Security = Security.PENDING
    """Changed only by :meth:`apply` and :meth:`secure_as` (checked against ``ALLOWED_SECURITY``)."""
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
    answered_by: str | None = None
    """A caller's: the AOR that signed the answer, when it is not the one dialled (``accept_any_callee``)."""
    called_as: str | None = None
    """A callee's: the AOR the caller signed its offer for, when it is not ours (the call was forwarded here)."""
    peer_saw_key_change: bool = False
    """The peer told us, inside the encryption (NOTICE), that it saw a changed identity key for us and went on
    without verifying it (its ``warn`` policy)."""
    key_exchange: KeyExchange = KeyExchange.NONE
    call_id_bound: bool | None = None
    """Whether the handshake bound the SIP Call-ID (None: no keys). False in the media path and behind a B2BUA
    with ``bind_call_id = false`` (docs/PROTOCOL.md §C.7 says what that mode binds instead)."""
    health: MediaHealth = field(default_factory=MediaHealth)
    """What of the call's protection is degraded now, and what ever was (``voipgw.media_health``)."""

    def apply(self, event: CallEvent, security: Security | None = None) -> CallState:
        """Move by ``event`` (a REFUSED event makes the security REFUSED; ``security`` sets it with the move,
        e.g. the answer's). Raises CallTransitionError, and changes nothing, if the table has no such move."""
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise CallTransitionError(self.state, event)
        if event is CallEvent.REFUSED:
            if security not in (None, Security.REFUSED):
                raise CallSecurityError(self.state, event, security)
            security = Security.REFUSED
        elif security is Security.REFUSED:
            raise CallSecurityError(self.state, event, security)
        sec = self.security if security is None else security
        if sec not in ALLOWED_SECURITY[new]:
            raise CallSecurityError(self.state, event, sec)
        self.state, self.security = new, sec
        self.history.append((new, event))
        return new

    def secure_as(self, security: Security) -> None:
        """Change the security of an answered call (the user verified the SAS); never to or from REFUSED."""
        if self.state is not CallState.ESTABLISHED or security not in SETTLED:
            raise CallSecurityError(self.state, CallEvent.ANSWERED, security)
        self.security = security

    @property
    def party(self) -> str:
        """The AOR of the party actually on the line (the signed one): what verification and the contact store
        are about. The dialled AOR unless the call was answered by another (``answered_by``)."""
        return self.answered_by or self.remote_aor

    @property
    def forwarding(self) -> str | None:
        """``forwarded: bob@x -> mallory@y`` when the party on the line is not the one the user meant, else None."""
        if self.answered_by is not None:
            return f"forwarded: {self.remote_aor} -> {self.answered_by}"
        if self.called_as is not None:
            return f"forwarded: {self.remote_aor} called {self.called_as}, answered here as {self.local_aor}"
        return None

    @property
    def key_exchange_note(self) -> str:
        """What the security label adds about the key exchange's path ("" for the usual SDP exchange)."""
        if self.key_exchange is KeyExchange.MEDIA:
            return "key exchange in the media path"
        if self.key_exchange is KeyExchange.SDP and self.call_id_bound is False:
            return "Call-ID not bound"
        return ""

    @property
    def answered(self) -> bool:
        """Established, or ended after being established."""
        return self.state in ANSWERED_STATES

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    @property
    def secure(self) -> bool:
        return self.security in (Security.SECURE_UNVERIFIED, Security.SECURE_VERIFIED, Security.KEY_CHANGED)


class BridgeState(enum.Enum):
    """A gateway call as a whole, derived from its two legs' records (see :func:`bridge_state`)."""

    SETUP = "setup"
    ONE_LEG_UP = "one leg up"
    """One leg answered, the other not yet (inbound: the inside phone rings after the outside answer)."""
    BRIDGED = "up"
    ENDED = "ended"
    FAILED = "failed"

    @property
    def status(self) -> str:
        """The state string of the status table and snapshot (ONE_LEG_UP shows as setup, as it always has)."""
        return BridgeState.SETUP.value if self is BridgeState.ONE_LEG_UP else self.value


def bridge_state(inside: CallRecord, outside: CallRecord | None, *, failed: bool, over: bool) -> BridgeState:
    """The bridge's state from its legs' records and two bridge-level facts: ``failed`` (refused, cancelled,
    given up, or an internal error: the bridge as a whole did not do its job) and ``over`` (it is finished)."""
    legs = (inside,) if outside is None else (inside, outside)
    if failed or any(r.state is CallState.FAILED for r in legs):
        return BridgeState.FAILED
    if over:
        return BridgeState.ENDED
    answered = sum(r.answered for r in legs)
    if answered == 2:
        return BridgeState.BRIDGED
    return BridgeState.ONE_LEG_UP if answered else BridgeState.SETUP
