"""The two trust zones a gateway's SIP stack listens in, and the screening verdict the stack applies to an
out-of-dialog request before any dialog or registration state exists. The policy itself (who may send what on
which listener) belongs to the gateway (``voipgw.gateway.zones``); this module only names the pieces."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class Zone(enum.Enum):
    """Which listener a request arrived on. A stack with one listener (the softphone) has only OUTSIDE."""

    INSIDE = "inside"
    """The phones' side: the gateway's registrar and the calls its users place."""
    OUTSIDE = "outside"
    """The PBX's side: calls to fronted users and the gateway's own registrations."""


@dataclass(frozen=True)
class Refusal:
    """Refuse a request with ``code`` and a Warning saying ``why``; ``reason`` is the counter's key."""

    code: int
    reason: str
    why: str


@dataclass(frozen=True)
class RequestFacts:
    """What screening reads of an out-of-dialog request."""

    zone: Zone
    method: str
    source: tuple[str, int]
    from_user: str
    to_user: str


Screen = Callable[[RequestFacts], Refusal | None]
"""Runs on the reactor thread for each out-of-dialog REGISTER and INVITE: None lets it through."""
