"""SIP signalling for voipgw over UDP, TCP and TLS: the only package that imports sippy (the rest of voipgw
imports this).

Calls, registrations (with recovery), an inside registrar with digest auth; SDP stays opaque, media untouched.

Early dialogs: the callee's ``IncomingCall.progress(sdp)`` sends the SDP answer in a 183 that is repeated until the
caller proves it arrived (``progress_acknowledged()``), a PRACK (when the INVITE offered 100rel) or a final response;
``ring()`` and ``reject(cause=)`` work after it. The caller reports each early dialog once as ``Ringing(dialog=
<To-tag>)`` (a forking proxy's branches have distinct tags), the winning 2xx as ``Answered(dialog=...)``, a final
error as ``Failed(code, cause=<Reason text>)`` with the far end's own status; a later fork's 2xx is ACKed and BYEd.
Details in ``dialog.py`` and ``sippy_glue.py``.
"""

from voipgw.logutil import RateLimitedLog
from voipgw.sip.digest import DigestError, DigestParseError
from voipgw.sip.events import (
    Answered,
    CallStateError,
    Confirmed,
    Ended,
    Failed,
    ReAnswered,
    RegistrationFailed,
    RegistrationState,
    ReOffer,
    ReOfferRejected,
    Ringing,
    SipError,
    SipEvent,
    SipStackStateError,
    Trying,
)
from voipgw.sip.guard import SipStats
from voipgw.sip.mainthread import MainThreadReactor
from voipgw.sip.registrar import Binding, Registrar
from voipgw.sip.stack import IncomingCall, InviteAuthPredicate, OutgoingCall, Registration, SipCall, SipStack
from voipgw.sip.tcp import TcpOptions, TcpStats
from voipgw.sip.tls import TlsConfigError, TlsOptions
from voipgw.sip.zone import Refusal, RequestFacts, Zone

__all__ = [
    "Answered",
    "Binding",
    "CallStateError",
    "Confirmed",
    "DigestError",
    "DigestParseError",
    "Ended",
    "Failed",
    "IncomingCall",
    "InviteAuthPredicate",
    "MainThreadReactor",
    "OutgoingCall",
    "RateLimitedLog",
    "ReAnswered",
    "ReOffer",
    "ReOfferRejected",
    "Refusal",
    "Registrar",
    "Registration",
    "RegistrationFailed",
    "RegistrationState",
    "RequestFacts",
    "Ringing",
    "SipCall",
    "SipError",
    "SipEvent",
    "SipStack",
    "SipStackStateError",
    "SipStats",
    "TcpOptions",
    "TcpStats",
    "TlsConfigError",
    "TlsOptions",
    "Trying",
    "Zone",
]
