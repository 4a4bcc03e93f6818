"""The gateway role: a B2BUA that bridges plain inside phones (PCMU/PCMA/G.722/Opus) to secure voipgw calls
outside, on one SIP stack, with one identity per fronted user. It never sends an inside phone's audio outside unless
the outside leg is a verified, sealed voipgw call (policy ``require``)."""

from voipgw.gateway.b2bua import Gateway
from voipgw.gateway.labels import LabelKind, shown_for
from voipgw.gateway.model import B2buaSettings, Bridge, InsideUser
from voipgw.gateway.pipes import PIPE_MAX_FRAMES, OpusRelay, PcmPipe, switch_codec

__all__ = [
    "PIPE_MAX_FRAMES",
    "B2buaSettings",
    "Bridge",
    "Gateway",
    "InsideUser",
    "LabelKind",
    "OpusRelay",
    "PcmPipe",
    "shown_for",
    "switch_codec",
]
