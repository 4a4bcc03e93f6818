"""The SIP statuses the gateway answers an INVITE with: their reason phrases, and which status an outside leg's
failure becomes for the inside phone. Data and mapping only: it never sends anything."""

from __future__ import annotations

from voipgw.ops.metrics import handshake_failure_reason

SIP_PHRASES = {
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    600: "Busy Everywhere",
    603: "Decline",
}


def code_of(reason: str) -> int:
    """The SIP status an outside failure maps to for the inside phone (488 for a policy refusal)."""
    head = reason[:3]
    if head.isdigit() and 400 <= int(head) <= 699:
        return int(head)
    return 488


NOT_VOIPGW_CODES = frozenset({415, 488, 606})
"""What a far end without voipgw answers our secure offer with: it finds no common codec (our secure offer is Opus
only, most desk phones speak G.711 alone) or does not know the voipgw attribute."""


def outside_failure_warning(reason: str) -> str:
    """The inside phone's Warning text for an outside leg that failed with ``reason``. A codec/offer refusal that
    carries no voipgw reason came from an endpoint without voipgw (a voipgw peer always says why, in a Warning
    naming voipgw): the text says so, so the caller learns the far end cannot take a secure call."""
    text = f"voipgw gateway: outside leg: {reason}"
    head = reason[:3]
    if head.isdigit() and int(head) in NOT_VOIPGW_CODES and "voipgw" not in reason.lower():
        text += ": the far end has no voipgw (no key exchange; its refusal carries no voipgw reason)"
    return text


def refusal_reason(text: str) -> str:
    """A refused call's short reason for the books (``gateway status``): the key exchange's typed reason
    (``bad-signature``, ``no_key_exchange``...), else the SIP status it was refused with (``sip-486``)."""
    return handshake_failure_reason(text) or f"sip-{code_of(text)}"
