"""Web phone logins and sessions: checks an inside user's password (the same ``inside_password`` its SIP phone's
digest uses), hands out a random session token good for ``ttl_s``, and throttles guessing. Pure bookkeeping: no
I/O, time is an argument.

One live page per user: a newer login or resume replaces the older page's connection (it is told why), so a
second tab or a reload never leaves two pages answering the same calls.
"""

from __future__ import annotations

import enum
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

TOKEN_BYTES = 32
MAX_FAILURES = 5
"""Failed logins from one source within ``FAILURE_WINDOW_S`` before it must wait."""
FAILURE_WINDOW_S = 60.0


class LoginRefusal(enum.Enum):
    BAD_CREDENTIALS = "bad-credentials"
    """Unknown user or wrong password (not told apart: that would reveal the user names)."""
    TOO_MANY_ATTEMPTS = "too-many-attempts"
    SESSION_EXPIRED = "session-expired"
    SESSION_UNKNOWN = "session-unknown"
    """A token this gateway never gave, or revoked (logout, gateway restart)."""


class LoginRefused(Exception):
    def __init__(self, reason: LoginRefusal) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass
class Session:
    user: str
    token: str = field(repr=False)
    expires_at: float

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


@dataclass
class _Failures:
    first_at: float
    count: int = 0


class Sessions:
    """``login(user, password, source, now)`` or ``resume(token, now)`` -> Session, else LoginRefused;
    ``logout(token)``; ``expire(now)`` drops and returns the sessions whose time is up."""

    def __init__(self, passwords: Mapping[str, str], ttl_s: float) -> None:
        self._passwords = dict(passwords)
        self.ttl_s = ttl_s
        self._by_token: dict[str, Session] = {}
        self._failures: dict[str, _Failures] = {}
        self.refused: dict[str, int] = {}
        """Refused logins and resumes by reason (for the status and the tests)."""

    def _refuse(self, reason: LoginRefusal) -> LoginRefused:
        self.refused[reason.value] = self.refused.get(reason.value, 0) + 1
        return LoginRefused(reason)

    def login(self, user: str, password: str, source: str, now: float) -> Session:
        f = self._failures.get(source)
        if f is not None and now - f.first_at >= FAILURE_WINDOW_S:
            del self._failures[source]
            f = None
        if f is not None and f.count >= MAX_FAILURES:
            raise self._refuse(LoginRefusal.TOO_MANY_ATTEMPTS)
        expected = self._passwords.get(user)
        # Compared in constant time, and against a dummy for an unknown user, so timing tells no user names.
        ok = hmac.compare_digest((expected or "\0" * 16).encode(), password.encode()) and bool(expected)
        if not ok:
            f = self._failures.setdefault(source, _Failures(now))
            f.count += 1
            raise self._refuse(LoginRefusal.BAD_CREDENTIALS)
        self._failures.pop(source, None)
        session = Session(user, secrets.token_urlsafe(TOKEN_BYTES), now + self.ttl_s)
        self._by_token[session.token] = session
        return session

    def resume(self, token: str, now: float) -> Session:
        session = self._by_token.get(token)
        if session is None:
            raise self._refuse(LoginRefusal.SESSION_UNKNOWN)
        if session.expired(now):
            del self._by_token[token]
            raise self._refuse(LoginRefusal.SESSION_EXPIRED)
        return session

    def logout(self, token: str) -> None:
        self._by_token.pop(token, None)

    def expire(self, now: float) -> list[Session]:
        gone = [s for s in self._by_token.values() if s.expired(now)]
        for s in gone:
            del self._by_token[s.token]
        return gone

    def __len__(self) -> int:
        return len(self._by_token)
