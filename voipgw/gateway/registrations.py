"""Keeps each fronted user's outside AOR registered at the PBX (digest auth, refresh, retry with backoff) and
removes the registrations on shutdown. It owns only REGISTER state: it never touches calls or logs a password."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voipgw.sip import Registration, RegistrationFailed, SipStack

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
REGISTER_TIMEOUT_S = 8.0
UNREGISTER_TIMEOUT_S = 4.0


@dataclass(frozen=True)
class OutsideAccount:
    """One fronted user's account at the PBX."""

    user: str
    aor: str
    """``alice@pbx.example.org`` (registered as ``sip:<aor>``)."""
    username: str
    password: str = field(default="", repr=False)


@dataclass
class _Entry:
    account: OutsideAccount
    handle: Registration | None = None
    state: str = "registering"
    last_error: str = ""
    expires_at: float | None = None
    attempts: int = 0
    seen: object | None = None
    """The last RegistrationState looked at: the stack replaces it with a new one at each REGISTER answer."""
    task: asyncio.Task[None] | None = None


class Registrations:
    """``await start()`` registers every account in the background (it never blocks start-up on the PBX);
    ``status()`` for the control socket; ``registered_count()`` for the metrics; ``await stop()`` unregisters.

    A refused or unanswered REGISTER is retried with exponential backoff (1 s doubling to 60 s) until it
    succeeds; a registration the stack reports lost at refresh time (a PBX restart that forgot it answers the
    refresh, one that is down does not) is picked up again the same way. ``on_change`` is called (on the event
    loop) whenever a user's state changes.
    """

    def __init__(
        self,
        stack: SipStack,
        registrar: tuple[str, int],
        accounts: list[OutsideAccount],
        *,
        expires: int = 300,
        on_change: Callable[[], None] | None = None,
        backoff_first_s: float = BACKOFF_FIRST_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.stack = stack
        self.registrar = registrar
        self.expires = expires
        self.on_change = on_change
        self.backoff_first_s = backoff_first_s
        self.backoff_max_s = backoff_max_s
        self._entries = {a.user: _Entry(a) for a in accounts}
        self._stopping = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for entry in self._entries.values():
            entry.task = loop.create_task(self._keep(entry), name=f"register-{entry.account.user}")

    async def _keep(self, entry: _Entry) -> None:
        delay = self.backoff_first_s
        while not self._stopping:
            if entry.handle is None:
                entry.attempts += 1
                try:
                    entry.handle = await self.stack.register(
                        self.registrar,
                        f"sip:{entry.account.aor}",
                        entry.account.username,
                        entry.account.password,
                        expires=self.expires,
                        timeout_s=REGISTER_TIMEOUT_S,
                    )
                except RegistrationFailed as exc:
                    self._set(entry, "failed", f"{exc.code} {exc.reason}")
                    log.warning(
                        "registration of %s at %s failed (%d %s); retrying in %.0f s",
                        entry.account.aor, _fmt(self.registrar), exc.code, exc.reason, delay,
                    )  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.backoff_max_s)
                    continue
                entry.seen = entry.handle.state
                granted = entry.handle.state.granted_expires if entry.handle.state else self.expires
                entry.expires_at = time.monotonic() + granted
                delay = self.backoff_first_s
                self._set(entry, "registered", "")
                log.info("registered %s at %s for %d s", entry.account.aor, _fmt(self.registrar), granted)
            # The stack refreshes by itself and updates handle.state from its reactor; look at it about as often
            # as a refresh can happen, so a lost registration (refresh refused or unanswered) is noticed.
            await asyncio.sleep(min(5.0, max(1.0, self.expires / 10)))
            self._follow(entry)

    def _follow(self, entry: _Entry) -> None:
        handle = entry.handle
        if handle is None or handle.state is None or self._stopping:
            return
        st = handle.state
        if st.registered:
            if entry.state != "registered":
                self._set(entry, "registered", "")
            if st is not entry.seen:
                entry.seen = st
                entry.expires_at = time.monotonic() + st.granted_expires
            return
        # The stack keeps retrying a failed refresh itself; we show it, and start over when the PBX expired us.
        self._set(entry, "failed", f"{st.code} {st.reason}")
        if entry.expires_at is not None and time.monotonic() > entry.expires_at:
            log.warning("registration of %s lost (%d %s); registering again", entry.account.aor, st.code, st.reason)
            self._drop(entry)

    def _drop(self, entry: _Entry) -> None:
        handle, entry.handle = entry.handle, None
        entry.expires_at = None
        if handle is not None and handle._core is not None:
            core = handle._core
            with contextlib.suppress(Exception):
                self.stack._post(core.close)

    def _set(self, entry: _Entry, state: str, error: str) -> None:
        changed = (entry.state, entry.last_error) != (state, error)
        entry.state, entry.last_error = state, error
        if changed and self.on_change is not None:
            self.on_change()

    async def stop(self) -> dict[str, str]:
        """Unregister every user (``Expires: 0``), bounded; returns user -> outcome for the log."""
        self._stopping = True
        for entry in self._entries.values():
            if entry.task is not None:
                entry.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await entry.task
        outcomes: dict[str, str] = {}

        async def one(entry: _Entry) -> None:
            if entry.handle is None or entry.state != "registered":
                outcomes[entry.account.user] = "was not registered"
                self._set(entry, "unregistered", entry.last_error)
                return
            try:
                st = await entry.handle.unregister(UNREGISTER_TIMEOUT_S)
                outcomes[entry.account.user] = f"unregistered ({st.code} {st.reason})"
                self._set(entry, "unregistered", "")
            except Exception as exc:  # the PBX being gone must not stop the shutdown
                outcomes[entry.account.user] = f"unregister failed: {exc}"
                self._set(entry, "unregistered", str(exc))

        await asyncio.gather(*(one(e) for e in self._entries.values()))
        for user, outcome in outcomes.items():
            log.info("registration of %s: %s", self._entries[user].account.aor, outcome)
        return outcomes

    def registered_count(self) -> int:
        return sum(1 for e in self._entries.values() if e.state == "registered")

    def state_of(self, user: str) -> str | None:
        entry = self._entries.get(user)
        return None if entry is None else entry.state

    def status(self) -> list[dict[str, Any]]:
        """Rows for ``voipgw gateway status`` (``RegistrationStatus`` in voipgw.ops.control)."""
        now = time.monotonic()
        rows: list[dict[str, Any]] = []
        for e in self._entries.values():
            row: dict[str, Any] = {"user": e.account.user, "aor": e.account.aor, "state": e.state}
            if e.state == "registered" and e.expires_at is not None:
                row["expires_in_s"] = max(0.0, round(e.expires_at - now, 1))
            if e.last_error:
                row["last_error"] = e.last_error
            row["attempts"] = e.attempts
            rows.append(row)
        return rows


def _fmt(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"
