"""Location service for inside phones: decides REGISTER replies and keeps each user's contact bindings.

Pure (no sippy, no sockets; clock injected): ``SipStack(registrar=...)`` feeds it parsed REGISTERs.
Never stores or logs passwords beyond the ``users`` mapping it was given.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from voipgw.sip.digest import DEFAULT_ALGORITHMS, Authenticated, Challenge, DigestAuthenticator, Forbidden

DEFAULT_EXPIRES = 3600
"""Granted when a REGISTER names no expiry (then clamped to [min_expires, max_expires])."""
MAX_CONTACTS_PER_USER = 10
"""A phone (or an attacker with its password) cannot grow the table without bound."""


@dataclass(frozen=True, slots=True)
class Binding:
    """One registered contact of a user."""

    user: str
    contact_uri: str
    """The Contact URI exactly as the phone sent it (without the angle brackets and header params)."""
    source: tuple[str, int]
    """Where the REGISTER came from (UDP source): behind NAT this, not ``contact_uri``, reaches the phone."""
    expires_at: float
    """On the registrar's clock."""
    user_agent: str | None
    stream: bool = False
    """Registered over TCP/TLS: ``source`` is that connection's port, which changes whenever the phone reconnects
    (after an idle close, say), so the phone is known by its IP address alone."""

    def sent_from(self, source: tuple[str, int]) -> bool:
        """Whether a request from ``source`` comes from where this binding was registered."""
        return source[0] == self.source[0] if self.stream else source == self.source


@dataclass(frozen=True, slots=True)
class ContactSpec:
    """One Contact of a REGISTER: its URI and its ``expires`` parameter, if any."""

    uri: str
    expires: int | None


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """What the registrar needs of a REGISTER (the stack extracts it; a malformed Contact never gets here)."""

    user: str
    """The To header's user part (the AOR being registered)."""
    contacts: tuple[ContactSpec, ...]
    """Empty for a query; ignored when ``wildcard``."""
    wildcard: bool
    """``Contact: *``."""
    expires_header: int | None
    authorization: tuple[str, ...]
    source: tuple[str, int]
    user_agent: str | None
    method: str = "REGISTER"
    call_id: str = ""
    cseq: int = 0
    """With ``call_id``, orders REGISTERs of one phone (RFC 3261 §10.3 step 7): an older one is refused."""
    stream: bool = False
    """Arrived over TCP/TLS (see ``Binding.stream``)."""


@dataclass(frozen=True, slots=True)
class RegisterReply:
    """The response to send: code, reason, current bindings as (uri, seconds left), extra headers."""

    code: int
    reason: str
    contacts: tuple[tuple[str, int], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    authenticated_user: str | None = None
    refusal: str | None = None
    """Why a refused REGISTER was refused (a counter's key), None otherwise."""


@dataclass
class _UserState:
    bindings: dict[str, Binding] = field(default_factory=dict)
    order: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Contact URI -> (Call-ID, CSeq) of the REGISTER that last changed it."""


class Registrar:
    """In-memory registrar for the ``users`` it was given (user name -> inside password, None without auth).

    ``auth=True`` challenges every REGISTER with digest (``authenticator`` is then set and the stack also uses
    it for INVITEs); unknown users always get 403. Thread-safe: the stack calls ``handle_register`` on the
    reactor thread while asyncio code calls ``lookup``/``bindings``.
    """

    def __init__(
        self,
        users: Mapping[str, str | None],
        realm: str = "voipgw",
        auth: bool = False,
        min_expires: int = 60,
        max_expires: int = 3600,
        clock: Callable[[], float] = time.monotonic,
        *,
        algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS,
    ) -> None:
        if not 0 < min_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= max_expires")
        if auth:
            missing = sorted(u for u, pw in users.items() if not pw)
            if missing:
                raise ValueError(f"auth=True needs a password for every user; missing for {missing}")
        self._users = dict(users)
        self.realm = realm
        self.auth = auth
        self.min_expires = min_expires
        self.max_expires = max_expires
        self._clock = clock
        self._state: dict[str, _UserState] = {}
        self._lock = threading.Lock()
        self.authenticator: DigestAuthenticator | None = (
            DigestAuthenticator(realm, self._password_for, algorithms=algorithms, clock=clock) if auth else None
        )

    def __repr__(self) -> str:
        return f"Registrar(users={sorted(self._users)}, realm={self.realm!r}, auth={self.auth})"

    def _password_for(self, user: str) -> str | None:
        return self._users.get(user)

    def knows(self, user: str) -> bool:
        return user in self._users

    # queries -----------------------------------------------------------------------------------------------
    def lookup(self, user: str) -> Binding | None:
        """The most recently refreshed live binding of ``user`` (None if none or all expired)."""
        now = self._clock()
        with self._lock:
            st = self._state.get(user)
            live = [b for b in st.bindings.values() if b.expires_at > now] if st else []
        return max(live, key=lambda b: b.expires_at) if live else None

    def bindings(self) -> list[Binding]:
        """Every live binding, by user then contact."""
        now = self._clock()
        with self._lock:
            out = [b for st in self._state.values() for b in st.bindings.values() if b.expires_at > now]
        return sorted(out, key=lambda b: (b.user, b.contact_uri))

    def _held_elsewhere(self, user: str, source: tuple[str, int], stream: bool = False) -> Binding | None:
        """A live binding of ``user`` registered from another source than ``source``, if any."""
        now = self._clock()
        with self._lock:
            st = self._state.get(user)
            bindings = list(st.bindings.values()) if st else []
        # Over TCP/TLS on both sides, only the IP address is the phone's (its next connection has another port).
        held = [
            b
            for b in bindings
            if b.expires_at > now and b.source != source and not (stream and b.stream and b.sent_from(source))
        ]
        return held[0] if held else None

    # REGISTER ----------------------------------------------------------------------------------------------
    def handle_register(self, req: RegisterRequest) -> RegisterReply:
        """Decide the reply to one REGISTER and apply it to the bindings (RFC 3261 §10.3)."""
        if req.user not in self._users:
            return RegisterReply(403, "Forbidden", refusal="register_unknown_user")
        authenticated: str | None = None
        if self.authenticator is not None:
            verdict = self.authenticator.verify(list(req.authorization), req.method, req.user)
            if isinstance(verdict, Challenge):
                return RegisterReply(
                    401, "Unauthorized", headers=tuple(("WWW-Authenticate", h) for h in verdict.headers)
                )
            if isinstance(verdict, Forbidden):
                return RegisterReply(403, "Forbidden", refusal="register_bad_credentials")
            assert isinstance(verdict, Authenticated)
            authenticated = verdict.user
        held = self._held_elsewhere(req.user, req.source, req.stream)
        if held is not None:
            # Never silently: a REGISTER from elsewhere (even with the password) would move the user's calls
            # there. The phone that holds the binding keeps it; a phone that really moved waits for it to lapse.
            left = max(1, math.ceil(held.expires_at - self._clock()))
            warning = f'399 voipgw "{req.user} is registered from another address for {left} s more"'
            return RegisterReply(403, "Forbidden", headers=(("Warning", warning),), refusal="binding_other_source")
        if req.wildcard:
            if req.expires_header != 0 or req.contacts:
                return RegisterReply(
                    400, "Bad Request", headers=(("Warning", '399 voipgw "Contact: * needs Expires: 0"'),)
                )
            with self._lock:
                st = self._state.setdefault(req.user, _UserState())
                if req.call_id:
                    for uri in st.bindings:
                        st.order[uri] = (req.call_id, req.cseq)
                st.bindings.clear()
            return RegisterReply(200, "OK", authenticated_user=authenticated)
        wanted: list[tuple[str, int]] = []
        for c in req.contacts:
            asked = c.expires if c.expires is not None else req.expires_header
            if asked is None:
                asked = DEFAULT_EXPIRES
            if asked < 0:
                return RegisterReply(400, "Bad Request")
            if 0 < asked < self.min_expires:
                return RegisterReply(423, "Interval Too Brief", headers=(("Min-Expires", str(self.min_expires)),))
            wanted.append((c.uri, min(asked, self.max_expires)))
        now = self._clock()
        with self._lock:
            st = self._state.setdefault(req.user, _UserState())
            if req.call_id and any(
                st.order.get(uri, ("", -1))[0] == req.call_id and req.cseq <= st.order[uri][1] for uri, _ in wanted
            ):
                # A late, reordered REGISTER (e.g. an old refresh arriving after the phone's unregister).
                return RegisterReply(500, "Server Internal Error", headers=(("Retry-After", "1"),))
            for uri, secs in wanted:
                if req.call_id:
                    st.order[uri] = (req.call_id, req.cseq)
                if secs == 0:
                    st.bindings.pop(uri, None)
                else:
                    st.bindings[uri] = Binding(req.user, uri, req.source, now + secs, req.user_agent, req.stream)
            for uri in [u for u, b in st.bindings.items() if b.expires_at <= now]:
                del st.bindings[uri]
            while len(st.bindings) > MAX_CONTACTS_PER_USER:
                oldest = min(st.bindings.values(), key=lambda b: b.expires_at)
                del st.bindings[oldest.contact_uri]
            for uri in [u for u in st.order if u not in st.bindings][: -MAX_CONTACTS_PER_USER or None]:
                del st.order[uri]
            # Rounded before ceil: (now + 120) - now can be 120.00000000001, which granted 121 s (a flaky test).
            current = tuple(
                (b.contact_uri, max(1, math.ceil(round(b.expires_at - now, 6)))) for b in st.bindings.values()
            )
        return RegisterReply(200, "OK", contacts=current, authenticated_user=authenticated)


__all__ = ["Binding", "ContactSpec", "RegisterReply", "RegisterRequest", "Registrar"]
