"""SIP signalling for voipgw over UDP, TCP and TLS: the only package that imports sippy (the rest of voipgw
imports this).

It carries SDP as opaque strings; it never builds, parses or rewrites SDP and never touches media.
"""

from voipgw.sip.events import (
    Answered,
    CallEvent,
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
    SipStackStateError,
    Trying,
)
from voipgw.sip.guard import SipStats
from voipgw.sip.mainthread import MainThreadReactor
from voipgw.sip.stack import IncomingCall, OutgoingCall, Registration, SipCall, SipStack
from voipgw.sip.tcp import TcpOptions, TcpStats
from voipgw.sip.tls import TlsConfigError, TlsOptions

__all__ = [
    "Answered",
    "CallEvent",
    "CallStateError",
    "Confirmed",
    "Ended",
    "Failed",
    "IncomingCall",
    "MainThreadReactor",
    "OutgoingCall",
    "ReAnswered",
    "ReOffer",
    "ReOfferRejected",
    "Registration",
    "RegistrationFailed",
    "RegistrationState",
    "Ringing",
    "SipCall",
    "SipError",
    "SipStack",
    "SipStackStateError",
    "SipStats",
    "TcpOptions",
    "TcpStats",
    "TlsConfigError",
    "TlsOptions",
    "Trying",
]
