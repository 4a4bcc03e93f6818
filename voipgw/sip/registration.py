"""Client registration: keeps one AOR registered at a registrar (digest auth, refresh, 423, jittered backoff).

Replaces sippy's SipRegistrationAgent. ``Registration`` is the asyncio-side handle, ``RegCore`` its reactor-side
client; both reach the stack only through the ``Reactor`` protocol, never by importing it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sippy.SipAddress import SipAddress
from sippy.SipFrom import SipFrom
from sippy.SipHeader import SipHeader
from sippy.SipRequest import SipRequest
from sippy.SipTo import SipTo
from sippy.SipTransactionManager import RINGING, TRYING
from sippy.Time.Timeout import Timeout

from voipgw.sip.events import RegistrationFailed, RegistrationState
from voipgw.sip.reactor import Reactor
from voipgw.sip.sippy_glue import parse_sip_url
from voipgw.sip.uri import aor as aor_of

log = logging.getLogger("voipgw.sip")

REGISTER_REFRESH_FRACTION = 0.6
"""Refresh a registration at this share of the granted expiry (sippy's own agent waits for 100 %)."""
REGISTER_MAX_AUTH_TRIES = 2
REGISTER_ATTEMPT_TIMEOUT_S = 8.0
"""Give up on one REGISTER transaction after this (sippy's own Timer F is 32 s) and go to the backoff."""
REGISTER_BACKOFF_FIRST_S = 1.0
REGISTER_BACKOFF_CAP_S = 60.0
REGISTER_BACKOFF_JITTER = 0.2
"""Retries after a refused or unanswered REGISTER wait 1 s, 2 s, 4 s ... 60 s, each +-20 %."""
REGISTER_MAX_MIN_EXPIRES = 86400
"""A 423's Min-Expires above this is not followed (a registrar asking for days is misconfigured)."""

_jitter = random.Random()


class Registration:
    """One AOR kept registered at a registrar; refreshed before expiry until ``unregister()``.

    ``state`` is the latest outcome (``code`` 0 and ``reason`` "pending" before the first reply). A refused or
    unanswered attempt is retried with backoff (see ``register``); ``on_change`` runs on the asyncio
    loop whenever ``registered`` flips or the status code changes.
    """

    def __init__(
        self, reactor: Reactor, aor: str, on_change: Callable[[RegistrationState], None] | None = None
    ) -> None:
        self._reactor = reactor
        self.aor = aor
        self.on_change = on_change
        self._state = RegistrationState(aor, False, 0, "pending", 0)
        self._core: RegCore | None = None

    @property
    def state(self) -> RegistrationState:
        return self._state

    @property
    def registered(self) -> bool:
        return self._state.registered

    def _update(self, state: RegistrationState) -> None:
        """asyncio side: record ``state`` and tell ``on_change`` if it differs in a way callers act on."""
        old, self._state = self._state, state
        if self.on_change is None or (old.registered, old.code) == (state.registered, state.code):
            return
        try:
            self.on_change(state)
        except Exception:
            log.exception("registration on_change callback failed for %s", self.aor)

    async def unregister(self, timeout_s: float = 5.0) -> RegistrationState:
        waiter: concurrent.futures.Future[RegistrationState] = concurrent.futures.Future()
        self._reactor.post(self._start_unregister, waiter)
        try:
            state = await asyncio.wait_for(asyncio.wrap_future(waiter), timeout_s)
        except TimeoutError:
            raise RegistrationFailed(408, "registrar did not answer the unregister") from None
        self._update(state)
        return state

    def _start_unregister(self, waiter: concurrent.futures.Future[RegistrationState]) -> None:
        # reactor thread
        if self._core is None:
            waiter.set_result(RegistrationState(self.aor, False, 0, "not registered", 0))
            return
        self._core.start_unregister(waiter)

    def _close(self) -> None:
        # reactor thread
        if self._core is not None:
            self._core.close()

    def __repr__(self) -> str:
        return f"Registration({self.aor!r}, registered={self.registered}, code={self._state.code})"


def _challenge_is_stale(resp: Any, code: int) -> bool:
    name = "www-authenticate" if code == 401 else "proxy-authenticate"
    return any("stale=true" in str(hf.body).lower().replace(" ", "").replace('"', "") for hf in resp.getHFs(name))


def _backoff_delay(step: int) -> float:
    """Retry delay after ``step`` consecutive failures: 1 s doubling to the cap, +-20 % jitter."""
    base = min(REGISTER_BACKOFF_CAP_S, REGISTER_BACKOFF_FIRST_S * (2.0 ** min(step, 30)))
    return base * _jitter.uniform(1.0 - REGISTER_BACKOFF_JITTER, 1.0 + REGISTER_BACKOFF_JITTER)


@dataclass(eq=False)
class RegCore:
    """Reactor-side REGISTER client; replaces sippy's SipRegistrationAgent (no refresh margin, 407 bug).

    Each attempt is one sippy client transaction plus our own deadline (sippy's Timer F is 32 s); replies to
    an attempt that is no longer current (``gen``) are ignored, so an unregister can overtake a refresh.
    """

    reactor: Reactor
    handle: Registration
    rmsg: Any
    username: str | None
    password: str | None = field(repr=False)
    expires: int
    keep_trying: bool = False
    waiter: concurrent.futures.Future[RegistrationState] | None = None
    timer: Any = None
    deadline: Any = None
    tx: Any = None
    gen: int = 0
    auth_tries: int = 0
    interval_tries: int = 0
    failures: int = 0
    granted: int = 0
    ever_registered: bool = False
    unregistering: bool = False
    closed: bool = False

    def send(self) -> None:
        self.timer = None
        if self.closed:
            return
        self._end_attempt()
        contact = self.rmsg.getHFBody("contact")
        # setParam, not params[...]: sippy serializes only names listed in params_order, which is why its own
        # registration agent never sends the expiry it was given (registrars then grant their default).
        contact.address.setParam("expires", str(0 if self.unregistering else self.expires))
        self.gen += 1
        gen = self.gen
        self.tx = self.reactor.new_transaction(self.rmsg, lambda resp: self.on_reply(resp, gen))
        self.deadline = Timeout(self._attempt_timed_out, REGISTER_ATTEMPT_TIMEOUT_S, 1, gen)
        self.rmsg.getHFBody("via").genBranch()
        self.rmsg.getHFBody("cseq").incCSeqNum()

    def _end_attempt(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        tx, self.tx = self.tx, None
        if tx is not None and getattr(tx, "teB", None) is not None and tx.state in (TRYING, RINGING):
            self.gen += 1  # the 408 that timerB hands to the callback below is then recognised as stale
            # Stop sippy retransmitting a request we gave up on.
            tx.teB.cancel()
            tx.teB = None
            with contextlib.suppress(Exception):
                self.reactor.time_out_transaction(tx)

    def _attempt_timed_out(self, gen: int) -> None:
        self.deadline = None
        if gen != self.gen or self.closed:
            return
        self._end_attempt()
        self._failed(408, "registrar did not answer")

    def on_reply(self, resp: Any, gen: int) -> None:
        if self.closed or gen != self.gen:
            return
        code, reason = resp.getSCode()
        if code < 200:
            return
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.tx = None
        if (
            code in (401, 407)
            and self.username is not None
            and self.password is not None
            and self.auth_tries < REGISTER_MAX_AUTH_TRIES
            # Credentials refused without stale=true: the password is wrong, another try cannot help.
            and (self.auth_tries == 0 or _challenge_is_stale(resp, code))
            and self._add_credentials(resp, code)
        ):
            self.auth_tries += 1
            self.send()
            return
        if code == 423 and not self.unregistering and self.interval_tries < 1 and self._raise_expires(resp):
            self.interval_tries += 1
            self.send()
            return
        self.auth_tries = 0
        self.interval_tries = 0
        if 200 <= code < 300:
            self.failures = 0
            self.granted = 0 if self.unregistering else self._granted(resp)
            state = RegistrationState(self.handle.aor, not self.unregistering, code, reason, self.granted)
            if self.unregistering:
                self.closed = True
            else:
                self.ever_registered = True
                delay = max(1.0, self.granted * REGISTER_REFRESH_FRACTION)
                self.timer = Timeout(self.send, delay)
                log.info("registered %s for %d s; refreshing in %.0f s", self.handle.aor, self.granted, delay)
            self._settle(state)
            return
        self._failed(code, reason)

    def _failed(self, code: int, reason: str) -> None:
        self.auth_tries = 0
        self.granted = 0
        state = RegistrationState(self.handle.aor, False, code, reason, 0)
        if self.unregistering:
            self.closed = True
            log.warning("un-REGISTER %s failed: %d %s", self.handle.aor, code, reason)
        elif self.keep_trying or self.ever_registered:
            delay = _backoff_delay(self.failures)
            self.failures += 1
            self.timer = Timeout(self.send, delay)
            log.warning("REGISTER %s failed: %d %s; retrying in %.1f s", self.handle.aor, code, reason, delay)
        else:
            log.warning("REGISTER %s failed: %d %s", self.handle.aor, code, reason)
        self._settle(state)

    def _settle(self, state: RegistrationState) -> None:
        self.reactor.deliver(self.handle._update, state)
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(state)

    def _raise_expires(self, resp: Any) -> bool:
        """423 Interval Too Brief: ask again with the registrar's Min-Expires (once)."""
        for hf in resp.getHFs("min-expires"):
            text = str(hf.body).strip()
            if text.isdigit() and self.expires < int(text) <= REGISTER_MAX_MIN_EXPIRES:
                self.expires = int(text)
                return True
        return False

    def _add_credentials(self, resp: Any, code: int) -> bool:
        chn = "www-authenticate" if code == 401 else "proxy-authenticate"
        if resp.countHFs(chn) == 0:
            return False
        challenge = None
        qop = None
        for i in range(resp.countHFs(chn)):
            candidate = resp.getHFBody(chn, i)
            supported, qop = candidate.supportedAlgorithm()
            if supported:
                challenge = candidate
                break
        if challenge is None:
            return False
        auth = challenge.genAuthHF(self.username, self.password, "REGISTER", str(self.rmsg.ruri), qop=qop)
        for name in ("authorization", "proxy-authorization"):
            for hf in self.rmsg.getHFs(name):
                self.rmsg.removeHeader(hf)
        # The header name comes from the credential class, so a 407 gets Proxy-Authorization (sippy's own
        # registration agent sends Authorization for both).
        self.rmsg.appendHeader(SipHeader(body=auth))
        return True

    def _granted(self, resp: Any) -> int:
        ours = self.rmsg.getHFBody("contact").getUrl()
        fallback: int | None = None
        for c in resp.getHFBodys("contact") if resp.countHFs("contact") else []:
            if c.asterisk or "expires" not in c.address.params:
                continue
            url = c.getUrl()
            value = int(c.address.params["expires"])
            if url.host == ours.host and int(url.port or 5060) == int(ours.port or 5060):
                return value
            fallback = value if fallback is None else fallback
        if fallback is not None:
            return fallback
        if resp.countHFs("expires") > 0:
            return int(resp.getHFBody("expires").getNum())
        return self.expires

    def start_unregister(self, waiter: concurrent.futures.Future[RegistrationState] | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.closed:
            if waiter is not None and not waiter.done():
                waiter.set_result(RegistrationState(self.handle.aor, False, 0, "not registered", 0))
            return
        self.unregistering = True
        self.waiter = waiter
        self.auth_tries = 0
        self.send()

    def close(self) -> None:
        self.closed = True
        self.gen += 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._end_attempt()


async def register(
    reactor: Reactor,
    registrar: tuple[str, int],
    aor: str,
    username: str | None,
    password: str | None,
    *,
    expires: int,
    timeout_s: float,
    keep_trying: bool,
    on_change: Callable[[RegistrationState], None] | None,
    transport: str,
) -> Registration:
    """``SipStack.register`` (which documents it), once the stack is known to be running."""
    aor_url = parse_sip_url(aor)
    reg_transport = reactor.pick_transport(transport, aor_url)
    handle = Registration(reactor, aor_of(aor_url.username, aor_url.host, aor_url.port), on_change)
    waiter: concurrent.futures.Future[RegistrationState] = concurrent.futures.Future()
    reactor.post(
        _start_register, reactor, handle, aor_url, (registrar, reg_transport), username, password, expires,
        keep_trying, waiter,
    )  # fmt: skip
    try:
        state = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(waiter)), timeout_s)
    except TimeoutError:
        if keep_trying:
            return handle
        reactor.post(handle._close)
        raise RegistrationFailed(408, "registrar did not answer") from None
    if handle.state.code == 0:
        # Normally already applied: the reactor queues the update before it resolves the waiter. Never
        # overwrite a newer outcome with this first one.
        handle._update(state)
    if not state.registered and not keep_trying:
        reactor.post(handle._close)
        raise RegistrationFailed(state.code, state.reason)
    return handle


def _start_register(
    reactor: Reactor,
    handle: Registration,
    aor_url: Any,
    registrar: tuple[tuple[str, int], str],
    username: str | None,
    password: str | None,
    expires: int,
    keep_trying: bool,
    waiter: concurrent.futures.Future[RegistrationState],
) -> None:
    # reactor thread
    try:
        ruri = aor_url.getCopy()
        ruri.username = None
        addr = SipAddress(url=aor_url.getCopy())
        fr0m = SipFrom(address=addr.getCopy())
        fr0m.genTag()
        rmsg = SipRequest(
            method="REGISTER",
            ruri=ruri,
            fr0m=fr0m,
            to=SipTo(address=addr),
            contact=reactor.contact(aor_url.username),
            target=(tuple(registrar[0]), registrar[1]),
        )
        core = RegCore(reactor, handle, rmsg, username, password, expires, keep_trying=keep_trying, waiter=waiter)
        handle._core = core
        reactor.registration_started(core)
        core.send()
    except BaseException as exc:
        waiter.set_exception(exc)
