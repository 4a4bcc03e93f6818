"""The one life-cycle table (voipgw.call) walked row by row for each kind of leg: a softphone call, a gateway's
outside leg and a gateway's inside leg; illegal moves and impossible security states raise; a bridge's state is
derived from its two legs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from voipgw.call import (
    ALLOWED_SECURITY,
    TRANSITIONS,
    BridgeState,
    CallEvent,
    CallRecord,
    CallSecurityError,
    CallState,
    CallTransitionError,
    Security,
    bridge_state,
)
from voipgw.gateway.model import Bridge, InsideUser
from voipgw.leg import ActiveCall

ALICE = InsideUser("alice", "sip:alice@127.0.0.1:5062", "alice@example.org")


def _phone_call() -> CallRecord:
    return CallRecord(direction="outgoing", local_aor="alice@example.org", remote_aor="bob@example.org")


def _outside_leg() -> CallRecord:
    return ActiveCall(CallRecord(direction="incoming", local_aor="alice@example.org")).record


def _inside_leg() -> CallRecord:
    return Bridge(ALICE, "inbound", "carol@example.org").inside


LEG_KINDS: dict[str, Callable[[], CallRecord]] = {
    "phone": _phone_call,
    "gateway-outside": _outside_leg,
    "gateway-inside": _inside_leg,
}

SECURITY_WITH = {CallEvent.ANSWERED: Security.SECURE_UNVERIFIED, CallEvent.EARLY_MEDIA: Security.SECURE_UNVERIFIED}
"""The security an event brings when the table needs one (an answer or a 183's key exchange settles it)."""


def _path_to(state: CallState | None) -> list[CallEvent]:
    """The shortest sequence of events from a new record to ``state`` (breadth-first over the table)."""
    paths: dict[CallState | None, list[CallEvent]] = {None: []}
    frontier: list[CallState | None] = [None]
    while frontier:
        nxt: list[CallState | None] = []
        for src in frontier:
            for (s, ev), dst in TRANSITIONS.items():
                if s == src and dst not in paths:
                    paths[dst] = [*paths[src], ev]
                    nxt.append(dst)
        frontier = nxt
    return paths[state]


def _drive(rec: CallRecord, events: list[CallEvent]) -> None:
    for ev in events:
        rec.apply(ev, security=SECURITY_WITH.get(ev))


@pytest.mark.parametrize("kind", LEG_KINDS)
@pytest.mark.parametrize(("row", "target"), list(TRANSITIONS.items()), ids=lambda v: str(v))
def test_every_row_of_the_table_moves_every_kind_of_leg(
    kind: str, row: tuple[CallState | None, CallEvent], target: CallState
) -> None:
    state, event = row
    rec = LEG_KINDS[kind]()
    _drive(rec, _path_to(state))
    assert rec.state is state
    assert rec.apply(event, security=SECURITY_WITH.get(event)) is target
    assert rec.state is target and rec.history[-1] == (target, event)
    assert rec.security in ALLOWED_SECURITY[target]
    assert rec.finished is (target in (CallState.ENDED, CallState.FAILED))


@pytest.mark.parametrize("kind", LEG_KINDS)
def test_every_move_not_in_the_table_raises_and_changes_nothing(kind: str) -> None:
    for state in [None, *CallState]:
        for event in CallEvent:
            if (state, event) in TRANSITIONS:
                continue
            rec = LEG_KINDS[kind]()
            _drive(rec, _path_to(state))
            before = (rec.state, rec.security, len(rec.history))
            with pytest.raises(CallTransitionError) as err:
                rec.apply(event, security=SECURITY_WITH.get(event))
            assert err.value.state is state and err.value.event is event
            assert (rec.state, rec.security, len(rec.history)) == before


def test_an_established_call_cannot_be_refused_or_unsecured() -> None:
    rec = _phone_call()
    _drive(rec, [CallEvent.SEND_INVITE])
    with pytest.raises(CallSecurityError):
        rec.apply(CallEvent.ANSWERED)  # an answer settles the security: PENDING is not allowed
    with pytest.raises(CallSecurityError):
        rec.apply(CallEvent.ANSWERED, security=Security.REFUSED)
    with pytest.raises(CallSecurityError):
        rec.apply(CallEvent.REFUSED, security=Security.SECURE_VERIFIED)
    assert rec.state is CallState.CALLING and rec.security is Security.PENDING
    rec.apply(CallEvent.ANSWERED, security=Security.SECURE_UNVERIFIED)
    rec.secure_as(Security.SECURE_VERIFIED)  # the user compared the SAS
    for bad in (Security.REFUSED, Security.PENDING):
        with pytest.raises(CallSecurityError):
            rec.secure_as(bad)
    assert rec.security is Security.SECURE_VERIFIED
    rec.apply(CallEvent.HUNG_UP)
    assert (rec.state, rec.security) == (CallState.ENDED, Security.SECURE_VERIFIED)
    with pytest.raises(CallSecurityError):
        rec.secure_as(Security.SECURE_UNVERIFIED)  # over: nothing changes any more


def test_a_refusal_makes_the_security_refused() -> None:
    rec = _inside_leg()
    _drive(rec, [CallEvent.SEND_INVITE, CallEvent.RINGING, CallEvent.REFUSED])
    assert (rec.state, rec.security) == (CallState.FAILED, Security.REFUSED)


def test_an_early_dialog_is_not_an_answer_and_keeps_its_security() -> None:
    """The 183's key exchange settles the security, not the answer: an early call the far phone never answers is
    FAILED (never answered) and stays "secure" as it was; answering keeps the early security."""
    rec = _phone_call()
    _drive(rec, [CallEvent.SEND_INVITE, CallEvent.RINGING])
    with pytest.raises(CallSecurityError):
        rec.apply(CallEvent.EARLY_MEDIA)  # a key exchange settles the security: PENDING is not allowed
    rec.apply(CallEvent.EARLY_MEDIA, security=Security.KEY_CHANGED)
    assert rec.state is CallState.EARLY and not rec.answered and not rec.finished
    assert rec.apply(CallEvent.RINGING) is CallState.EARLY  # a 180 after the 183
    rec.apply(CallEvent.HUNG_UP)  # the far phone was busy / the caller gave up
    assert (rec.state, rec.security, rec.answered) == (CallState.FAILED, Security.KEY_CHANGED, False)
    answered = _phone_call()
    _drive(answered, [CallEvent.SEND_INVITE, CallEvent.EARLY_MEDIA, CallEvent.ANSWERED])
    assert (answered.state, answered.security) == (CallState.ESTABLISHED, Security.SECURE_UNVERIFIED)


def _leg(*events: CallEvent) -> CallRecord:
    rec = _phone_call()
    _drive(rec, list(events))
    return rec


NEW = ()
RINGING = (CallEvent.SEND_INVITE, CallEvent.RINGING)
UP = (CallEvent.SEND_INVITE, CallEvent.ANSWERED)
ENDED = (*UP, CallEvent.HUNG_UP)
FAILED = (CallEvent.SEND_INVITE, CallEvent.REFUSED)


@pytest.mark.parametrize(
    ("inside", "outside", "failed", "over", "state"),
    [
        (NEW, None, False, False, BridgeState.SETUP),
        (RINGING, RINGING, False, False, BridgeState.SETUP),
        (NEW, UP, False, False, BridgeState.ONE_LEG_UP),
        (RINGING, UP, False, False, BridgeState.ONE_LEG_UP),
        (UP, UP, False, False, BridgeState.BRIDGED),
        (UP, ENDED, False, False, BridgeState.BRIDGED),  # tearing down: still shown up until it is over
        (ENDED, ENDED, False, True, BridgeState.ENDED),
        (NEW, None, False, True, BridgeState.ENDED),
        (FAILED, None, False, False, BridgeState.FAILED),
        (RINGING, FAILED, False, False, BridgeState.FAILED),
        (UP, UP, True, False, BridgeState.FAILED),  # e.g. an internal error while up
        (ENDED, ENDED, True, True, BridgeState.FAILED),
    ],
)
def test_the_bridge_state_is_derived_from_its_legs(
    inside: tuple[CallEvent, ...], outside: tuple[CallEvent, ...] | None, failed: bool, over: bool, state: BridgeState
) -> None:
    out = _leg(*outside) if outside is not None else None
    assert bridge_state(_leg(*inside), out, failed=failed, over=over) is state


def test_the_status_strings_are_unchanged() -> None:
    assert [s.status for s in BridgeState] == ["setup", "setup", "up", "ended", "failed"]
    bridge = Bridge(ALICE, "outbound", "bob@example.org")
    assert bridge.snapshot()["state"] == "setup" and bridge.inside.direction == "incoming"
    bridge.fail("refused")
    assert bridge.state is BridgeState.FAILED and bridge.snapshot()["state"] == "failed"
