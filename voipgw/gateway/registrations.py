"""Keeps each fronted user's outside AOR registered at the PBX (digest auth, refresh, retry with backoff) and
removes the registrations on shutdown. It owns only REGISTER state: it never touches calls or logs a password."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voipgw.sip import Registration, RegistrationState, SipStack

log = logging.getLogger(__name__)

FIRST_WAIT_S = 2.0
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
    stopped: str = ""
    """Set at shutdown: what the unregister did."""
    changed_at: float = field(default_factory=time.monotonic)


class Registrations:
    """``await start()`` registers every account (waiting at most ``first_wait_s`` for the PBX's first answers:
    start-up never blocks on it); ``status()`` for the control socket; ``registered_count()`` for the metrics;
    ``await stop()`` unregisters.

    The SIP stack keeps each registration (``keep_trying``): refreshed at 60 % of the granted time, a refused or
    unanswered attempt retried with backoff (1 s doubling to 60 s, +-20 %), so a PBX restart or outage heals by
    itself. ``on_change`` runs (on the event loop) whenever a user becomes registered or stops being registered,
    or its last status code changes.
    """

    def __init__(
        self,
        stack: SipStack,
        registrar: tuple[str, int],
        accounts: list[OutsideAccount],
        *,
        expires: int = 300,
        on_change: Callable[[], None] | None = None,
        transport: str = "udp",
        first_wait_s: float = FIRST_WAIT_S,
    ) -> None:
        self.stack = stack
        self.registrar = registrar
        self.expires = expires
        self.on_change = on_change
        self.transport = transport
        self.first_wait_s = first_wait_s
        self._entries = {a.user: _Entry(a) for a in accounts}

    async def start(self) -> None:
        async def one(entry: _Entry) -> None:
            entry.handle = await self.stack.register(
                self.registrar,
                f"sip:{entry.account.aor}",
                entry.account.username,
                entry.account.password or None,
                expires=self.expires,
                timeout_s=self.first_wait_s,
                keep_trying=True,
                on_change=functools.partial(self._changed, entry),
                transport=self.transport,
            )
            if entry.handle.state.code == 0:  # on_change reported any answer already
                self._log(entry, entry.handle.state)

        await asyncio.gather(*(one(e) for e in self._entries.values()))
        self._notify()

    def _changed(self, entry: _Entry, state: RegistrationState) -> None:
        entry.changed_at = time.monotonic()
        self._log(entry, state)
        self._notify()

    def _log(self, entry: _Entry, st: RegistrationState) -> None:
        where = f"{self.registrar[0]}:{self.registrar[1]}"
        if st.registered:
            log.info("registered %s at %s for %d s", entry.account.aor, where, st.granted_expires)
        elif st.code == 0:
            log.warning("registration of %s at %s: no answer yet; retrying with backoff", entry.account.aor, where)
        else:
            log.warning(
                "registration of %s at %s failed: %d %s; retrying with backoff",
                entry.account.aor, where, st.code, st.reason,
            )  # fmt: skip

    def _notify(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def stop(self) -> dict[str, str]:
        """Unregister every registered user (``Expires: 0``), in parallel and bounded; returns user -> outcome.
        Retries of users that never registered end when the SIP stack stops."""

        async def one(entry: _Entry) -> None:
            handle = entry.handle
            if handle is None or not handle.registered:
                entry.stopped = "was not registered"
                return
            try:
                st = await handle.unregister(UNREGISTER_TIMEOUT_S)
                entry.stopped = f"unregistered ({st.code} {st.reason})"
            except Exception as exc:  # the PBX being gone must not stop the shutdown
                entry.stopped = f"unregister failed: {exc}"

        await asyncio.gather(*(one(e) for e in self._entries.values()))
        for entry in self._entries.values():
            log.info("registration of %s: %s", entry.account.aor, entry.stopped)
        self._notify()
        return {e.account.user: e.stopped for e in self._entries.values()}

    def registered_count(self) -> int:
        return sum(1 for e in self._entries.values() if e.handle is not None and e.handle.registered and not e.stopped)

    def status(self) -> list[dict[str, Any]]:
        """Rows for ``voipgw gateway status`` (``RegistrationStatus`` in voipgw.ops.control)."""
        rows: list[dict[str, Any]] = []
        now = time.monotonic()
        for e in self._entries.values():
            st = e.handle.state if e.handle is not None else None
            row: dict[str, Any] = {"user": e.account.user, "aor": e.account.aor}
            if e.stopped:
                row["state"] = "unregistered" if e.stopped.startswith("unregistered") else "stopped"
            elif st is None or (not st.registered and st.code == 0):
                row["state"] = "registering"
            else:
                row["state"] = "registered" if st.registered else "failed"
            if st is not None and st.registered:
                row["granted_s"] = st.granted_expires
            if st is not None and not st.registered and st.code:
                row["last_error"] = f"{st.code} {st.reason}"
            row["since_s"] = round(now - e.changed_at, 1)
            rows.append(row)
        return rows
