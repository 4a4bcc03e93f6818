"""The SIP statuses the gateway answers an INVITE with: their reason phrases, and which status an outside leg's
failure becomes for the inside phone. Data and mapping only: it never sends anything."""

from __future__ import annotations

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
