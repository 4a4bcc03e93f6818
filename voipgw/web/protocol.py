"""The web phone's messages (docs/PROTOCOL.md Part D): each WebSocket text frame is one JSON object with a
``type``. ``parse`` turns a client's frame into a typed message or raises :class:`BadMessage` with the reason;
``refusal``/``closing`` build the gateway's error frames. Pure: no I/O.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

MAX_MESSAGE_BYTES = 16 * 1024
MAX_FIELD_CHARS = 256


class ErrorReason(enum.Enum):
    """The ``reason`` of an ``error`` frame (a login refusal's reasons are ``sessions.LoginRefusal``'s)."""

    BAD_JSON = "bad-json"
    NOT_AN_OBJECT = "not-an-object"
    UNKNOWN_TYPE = "unknown-type"
    BAD_FIELD = "bad-field"
    NOT_LOGGED_IN = "not-logged-in"
    CALLS_UNAVAILABLE = "calls-unavailable"
    """This web server has no gateway to place calls through (a server started on its own, as in tests)."""
    BUSY = "busy"
    """The page already has a call."""
    NO_CALL = "no-call"
    """answer, hangup or a SAS button without a call it applies to."""
    CALL_FAILED = "call-failed"
    """The page's WebRTC offer could not be answered (the message says why)."""


class CloseReason(enum.Enum):
    """Why the gateway ends a page's connection (the ``closed`` frame's ``reason``)."""

    REPLACED = "session-replaced"
    """The same user logged in or resumed on another page (a second tab, a reload)."""
    EXPIRED = "session-expired"
    LOGGED_OUT = "logged-out"
    SHUTDOWN = "gateway-shutdown"


class BadMessage(ValueError):
    def __init__(self, reason: ErrorReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Login:
    user: str
    password: str


@dataclass(frozen=True)
class Resume:
    token: str


@dataclass(frozen=True)
class Logout:
    pass


@dataclass(frozen=True)
class Dial:
    to: str
    """An extension or AOR, as a SIP phone would dial it at the gateway."""
    sdp: str = field(repr=False)
    """The page's WebRTC offer (ICE candidates gathered: no trickle)."""


@dataclass(frozen=True)
class Answer:
    sdp: str = field(repr=False)
    """The page's WebRTC offer for the ringing call (the page offers in both directions)."""


class CallCommand(enum.Enum):
    HANGUP = "hangup"
    SAS_MATCHES = "sas-matches"
    SAS_MISMATCH = "sas-mismatch"


ClientMessage = Login | Resume | Logout | Dial | Answer | CallCommand


def _text(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD_CHARS:
        raise BadMessage(ErrorReason.BAD_FIELD, f"{key}: expected a non-empty string of at most {MAX_FIELD_CHARS}")
    return value


def _offer(obj: dict[str, Any]) -> str:
    sdp = obj.get("sdp")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise BadMessage(ErrorReason.BAD_FIELD, "sdp: expected the page's WebRTC offer")
    return sdp


def parse(frame: str | bytes) -> ClientMessage:
    """One client frame -> its message; BadMessage(reason) for anything else."""
    if isinstance(frame, bytes):
        raise BadMessage(ErrorReason.BAD_JSON, "binary frames are not part of the protocol")
    try:
        obj = json.loads(frame)
    except (ValueError, RecursionError):
        raise BadMessage(ErrorReason.BAD_JSON, "not JSON") from None
    if not isinstance(obj, dict):
        raise BadMessage(ErrorReason.NOT_AN_OBJECT, "a message is a JSON object")
    kind = obj.get("type")
    if kind == "login":
        return Login(_text(obj, "user"), _text(obj, "password"))
    if kind == "resume":
        return Resume(_text(obj, "token"))
    if kind == "logout":
        return Logout()
    if kind == "dial":
        return Dial(_text(obj, "to"), _offer(obj))
    if kind == "answer":
        return Answer(_offer(obj))
    for command in CallCommand:
        if kind == command.value:
            return command
    raise BadMessage(ErrorReason.UNKNOWN_TYPE, f"unknown type {str(kind)[:40]!r}")


def error(reason: str, message: str) -> str:
    return json.dumps({"type": "error", "reason": reason, "message": message})


def closing(reason: CloseReason, message: str) -> str:
    return json.dumps({"type": "closed", "reason": reason.value, "message": message})
