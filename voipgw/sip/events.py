"""Typed call events that the SIP adapter hands to asyncio, plus the adapter's failure exceptions.

Pure data: nothing here imports sippy or touches a socket, so callers can match on these classes freely.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Trying:
    """The far side (or a proxy) sent 100 Trying for our INVITE."""


@dataclass(frozen=True, slots=True)
class Ringing:
    """A 18x arrived for our INVITE."""

    code: int
    """180 or 183."""
    remote_sdp: str | None
    """Early-media SDP, if the provisional reply carried one."""
    dialog: str = ""
    """The early dialog it belongs to: the response's To-tag ("" if it had none). A forking proxy gives each
    branch its own tag, so two Ringing events with different tags are two callees ringing."""


@dataclass(frozen=True, slots=True)
class Answered:
    """Our INVITE got a 2xx (the ACK is already on its way)."""

    remote_sdp: str
    """The answer SDP exactly as received."""
    dialog: str = ""
    """The To-tag of the 2xx: which early dialog (fork) won. A later 2xx from another fork is ACKed and BYEd by
    the stack (RFC 3261 13.2.2.4) and never reported."""


@dataclass(frozen=True, slots=True)
class Confirmed:
    """Our 200 OK to an incoming INVITE was acknowledged: the dialog is established."""


@dataclass(frozen=True, slots=True)
class Failed:
    """Call setup failed with a final non-2xx (or a local reason such as our no-answer timeout). Terminal."""

    code: int
    reason: str
    warning: str | None
    """The raw value of the response's ``Warning:`` header (``399 host "text"``), if any."""
    cause: str | None = None
    """The final response's RFC 3326 ``Reason`` header: its ``text="..."`` value, or the whole value when it has no
    text (``SIP;cause=486``); None without one."""


@dataclass(frozen=True, slots=True)
class Ended:
    """An established or ringing call is over. Terminal."""

    reason: str
    by_remote: bool
    """True when the peer sent BYE/CANCEL, False when we did (hang-up, cancel, stack shutdown)."""


@dataclass(frozen=True, slots=True)
class ReOffer:
    """The peer sent a re-INVITE with ``remote_sdp``; our answer came from the call's re-offer handler."""

    remote_sdp: str
    answered: bool
    """False when no handler was set or it refused, so we replied 488."""


@dataclass(frozen=True, slots=True)
class ReAnswered:
    """Our own re-INVITE (``call.reoffer()``) was answered with this SDP."""

    remote_sdp: str


@dataclass(frozen=True, slots=True)
class ReOfferRejected:
    """Our own re-INVITE got a final error; the call may continue (sippy ends it for 408/481)."""

    code: int
    reason: str


SipEvent = Trying | Ringing | Answered | Confirmed | Failed | Ended | ReOffer | ReAnswered | ReOfferRejected
"""Everything a SipCall reports (named apart from ``voipgw.call.CallEvent``, the life-cycle table's input)."""
TERMINAL_EVENTS = (Failed, Ended)


@dataclass(frozen=True, slots=True)
class RegistrationState:
    """Outcome of the last REGISTER exchange for one AOR."""

    aor: str
    registered: bool
    code: int
    """The registrar's final status code; 408 when it did not answer in time, 0 while the first is pending."""
    reason: str
    granted_expires: int
    """Seconds the registrar granted (0 after an unregister or a failure)."""


class SipError(Exception):
    """Base class of the adapter's failures."""


class SipStackStateError(SipError):
    """The stack is not running, already running, or another stack runs in this process."""


class RegistrationFailed(SipError):
    """The registrar refused or never answered a REGISTER."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class CallStateError(SipError):
    """The requested action does not fit the call's current state (e.g. answer after the caller cancelled)."""
