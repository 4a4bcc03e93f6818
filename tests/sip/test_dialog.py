"""SIP dialogs driven without a stack or a socket: a fake Reactor and a fake sippy UA stand in for them.

This is the narrow interface in use (voipgw.sip.reactor): a dialog needs nothing else from the stack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sippy.CCEvents import CCEventConnect, CCEventDisconnect, CCEventFail, CCEventRing
from sippy.MsgBody import MsgBody

from voipgw.sip.dialog import CallCore, IncomingCall, OutgoingCall, SipCall
from voipgw.sip.events import Answered, Confirmed, Ended, Failed, ReOfferRejected, Ringing, SipEvent, Trying
from voipgw.sip.phase import DialogPhase


class FakeReactor:
    local_host = "192.0.2.1"

    def __init__(self) -> None:
        self.ended: list[object] = []
        self.counted: list[str] = []

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)

    def deliver(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)

    def contact(self, username: str | None) -> Any:
        raise AssertionError("dialogs never build contacts")

    def pick_transport(self, transport: str | None, target: Any) -> str:
        raise AssertionError("dialogs never pick transports")

    def new_transaction(self, msg: Any, on_reply: Callable[[Any], None]) -> Any:
        raise AssertionError("dialogs never start transactions")

    def time_out_transaction(self, tx: Any) -> None:
        raise AssertionError("dialogs never time out transactions")

    def dialog_ended(self, core: Any) -> None:
        self.ended.append(core)

    def count(self, counter: str) -> None:
        self.counted.append(counter)

    def registration_started(self, core: Any) -> None:
        raise AssertionError("dialogs never register")


class FakeUA:
    last_warning: str | None = None
    last_to_tag: str | None = None

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def recvEvent(self, event: Any) -> None:
        self.sent.append(event)

    def isDead(self) -> bool:
        return False


def _dialog(call: SipCall, reactor: FakeReactor) -> tuple[CallCore, FakeUA]:
    core = CallCore(reactor, call)
    ua = FakeUA()
    core.ua = ua
    return core, ua


def _events(call: SipCall) -> list[SipEvent]:
    out: list[SipEvent] = []
    while not call.events.empty():
        out.append(call.events.get_nowait())
    return out


def test_caller_rings_is_answered_and_hangs_up() -> None:
    reactor = FakeReactor()
    call = OutgoingCall(reactor, "c1", outgoing=True)
    core, ua = _dialog(call, reactor)
    core.on_event(CCEventRing((100, "Trying", None)))
    core.on_event(CCEventRing((180, "Ringing", None)))
    assert core.phase is DialogPhase.SETUP
    core.on_event(CCEventConnect((200, "OK", MsgBody("v=0 answer"))))
    assert core.phase is DialogPhase.UP
    call.hangup("bye now")
    assert core.phase is DialogPhase.ENDED and reactor.ended == [core]
    assert isinstance(ua.sent[-1], CCEventDisconnect)
    assert _events(call) == [
        Trying(),
        Ringing(code=180, remote_sdp=None),
        Answered(remote_sdp="v=0 answer"),
        Ended(reason="local hangup", by_remote=False),
    ]
    call.hangup()  # a finished call ignores actions
    assert _events(call) == []


def test_callee_answers_and_is_confirmed_by_the_ack() -> None:
    reactor = FakeReactor()
    call = IncomingCall(reactor, "c2", "sip:a@h", "sip:b@h", None, "v=0 offer", ("192.0.2.9", 5060))
    core, _ua = _dialog(call, reactor)
    call.answer("v=0 answer")
    assert core.phase is DialogPhase.ANSWERING
    call.reoffer("v=0 again")  # not yet a stable dialog
    core.on_event(CCEventConnect((200, "OK", None)))
    assert core.phase is DialogPhase.UP
    core.on_event(CCEventDisconnect())
    assert core.phase is DialogPhase.ENDED
    assert _events(call) == [
        ReOfferRejected(code=491, reason="not in a stable dialog"),
        Confirmed(),
        Ended(reason="remote hangup", by_remote=True),
    ]


def test_callee_rejects_with_a_warning_naming_our_host() -> None:
    reactor = FakeReactor()
    call = IncomingCall(reactor, "c3", "sip:a@h", "sip:b@h", None, None, ("192.0.2.9", 5060))
    core, ua = _dialog(call, reactor)
    call.reject(488, "Not Acceptable Here", "no common suite")
    assert core.phase is DialogPhase.ENDED
    fail = ua.sent[-1]
    assert isinstance(fail, CCEventFail) and fail.getData()[0] == 488
    assert "192.0.2.1" in str(fail.warning.getBody())
    assert _events(call) == [Ended(reason="rejected: 488 Not Acceptable Here", by_remote=False)]


def test_a_refused_invite_fails_with_the_peers_warning() -> None:
    reactor = FakeReactor()
    call = OutgoingCall(reactor, "c4", outgoing=True)
    core, ua = _dialog(call, reactor)
    ua.last_warning = '399 peer "busy elsewhere"'
    core.on_event(CCEventFail((486, "Busy Here")))
    assert core.phase is DialogPhase.ENDED
    assert _events(call) == [Failed(code=486, reason="Busy Here", warning='399 peer "busy elsewhere"')]


def test_caller_reports_each_early_dialog_once_and_names_it_by_to_tag() -> None:
    reactor = FakeReactor()
    call = OutgoingCall(reactor, "c5", outgoing=True)
    core, ua = _dialog(call, reactor)
    for tag, sdp in [("forkA", "v=0 a"), ("forkA", "v=0 a"), ("forkB", "v=0 b"), ("forkA", "v=0 a")]:
        ua.last_to_tag = tag
        core.on_event(CCEventRing((183, "Session Progress", MsgBody(sdp))))
    ua.last_to_tag = "forkA"
    core.on_event(CCEventRing((180, "Ringing", None)))
    assert _events(call) == [
        Ringing(code=183, remote_sdp="v=0 a", dialog="forkA"),
        Ringing(code=183, remote_sdp="v=0 b", dialog="forkB"),
        Ringing(code=180, remote_sdp=None, dialog="forkA"),
    ]
    assert reactor.counted == ["provisional_absorbed", "provisional_absorbed"]
