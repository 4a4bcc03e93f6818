"""Registration that recovers: a PBX (real Kamailio with digest auth) that is down at start, restarts and
loses its location table, or refuses our password; keep_trying, backoff, on_change and no retry storm."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from pathlib import Path

import pytest

import voipgw.sip.registration as sip_registration
from tests.support.requires import requires
from tests.support.restartable_kamailio import RestartableKamailio
from tests.testbed.kamailio import Kamailio
from tests.testbed.sip_peer import running_stack
from voipgw.sip import Registration, RegistrationState

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.interop, requires("kamailio")]

USERS = {"alice": "alicepw"}
AOR = "sip:alice@127.0.0.1"
WIRE = "voipgw.sip.wire"
WAIT_S = 15.0


def options_via(pbx: Kamailio, user: str, wait: float = 3.0) -> int | None:
    """Status code of an OPTIONS to sip:user@<pbx> sent through the PBX: it looks the user up in its location
    table and relays to the registered contact (our stack answers 200), or answers 404 itself."""
    tag = secrets.token_hex(4)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        lport = s.getsockname()[1]
        msg = (
            f"OPTIONS sip:{user}@127.0.0.1:{pbx.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{tag}\r\n"
            f"From: <sip:probe@127.0.0.1>;tag={tag}\r\nTo: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: loc-{tag}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        s.settimeout(wait)
        s.sendto(msg.encode(), pbx.addr)
        try:
            while True:
                data = s.recv(65535).decode("utf-8", "replace")
                code = int(data.split(" ", 2)[1])
                if code >= 200:
                    return code
        except TimeoutError:
            return None


class Changes:
    """Collects on_change callbacks; lets a test await a condition on them."""

    def __init__(self) -> None:
        self.seen: list[RegistrationState] = []
        self._cond = asyncio.Condition()
        self._loop = asyncio.get_running_loop()

    def __call__(self, state: RegistrationState) -> None:
        assert asyncio.get_running_loop() is self._loop  # called on the asyncio loop, not the reactor
        self.seen.append(state)
        self._loop.create_task(self._notify())

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def until(self, registered: bool, timeout: float = WAIT_S) -> RegistrationState:
        async def wait() -> RegistrationState:
            async with self._cond:
                await self._cond.wait_for(lambda: bool(self.seen) and self.seen[-1].registered is registered)
                return self.seen[-1]

        return await asyncio.wait_for(wait(), timeout)


def test_backoff_doubles_from_one_second_to_a_sixty_second_cap_with_jitter() -> None:
    for step, base in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 32.0), (6, 60.0), (40, 60.0), (10**6, 60.0)]:
        delays = [sip_registration._backoff_delay(step) for _ in range(200)]
        assert all(base * 0.8 <= d <= base * 1.2 for d in delays), (step, min(delays), max(delays))
        assert max(delays) - min(delays) > base * 0.1  # jittered, so a fleet of phones does not retry in step


def test_keep_trying_registers_once_the_pbx_comes_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sip_registration, "REGISTER_ATTEMPT_TIMEOUT_S", 1.0)
    pbx = RestartableKamailio(tmp_path, users=USERS, auth=True)

    async def main() -> None:
        changes = Changes()
        async with running_stack() as stack:
            reg: Registration = await stack.register(
                pbx.reserve(), AOR, "alice", "alicepw", expires=60, timeout_s=2.0, keep_trying=True,
                on_change=changes,
            )  # fmt: skip
            # Nothing listens yet: no exception; the host's ICMP port unreachable ends the attempt at once (503).
            assert not reg.registered
            assert reg.state.code == 503 and "ICMP port unreachable" in reg.state.reason, reg.state
            assert [s.code for s in changes.seen] == [503]
            await asyncio.to_thread(pbx.start)
            state = await changes.until(registered=True)
            assert state.code == 200 and state.granted_expires == 60 and reg.registered
            assert await asyncio.to_thread(options_via, pbx, "alice") == 200

    try:
        asyncio.run(asyncio.wait_for(main(), 40.0))
    finally:
        pbx.stop()


def test_pbx_restart_loses_the_location_table_and_the_refresh_restores_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sip_registration, "REGISTER_ATTEMPT_TIMEOUT_S", 1.0)
    pbx = RestartableKamailio(tmp_path, users=USERS, auth=True)
    pbx.start()

    async def main() -> None:
        changes = Changes()
        async with running_stack() as stack:
            # 3 s granted: refreshed every 1.8 s, so the outage is noticed within about 3 s.
            reg = await stack.register(pbx.addr, AOR, "alice", "alicepw", expires=3, on_change=changes)
            assert reg.registered and reg.state.granted_expires == 3
            assert await asyncio.to_thread(options_via, pbx, "alice") == 200

            await asyncio.to_thread(pbx.halt)
            down = await changes.until(registered=False)
            assert down.code == 503 and "ICMP port unreachable" in down.reason and not reg.registered

            await asyncio.to_thread(pbx.start)  # same port, empty location table
            up = await changes.until(registered=True)
            assert up.code == 200 and reg.registered
            assert await asyncio.to_thread(options_via, pbx, "alice") == 200
            assert [s.registered for s in changes.seen] == [True, False, True]
            await reg.unregister()
            assert await asyncio.to_thread(options_via, pbx, "alice") == 404

    try:
        asyncio.run(asyncio.wait_for(main(), 40.0))
    finally:
        pbx.stop()


def test_quick_pbx_restart_between_refreshes_is_repaired_by_the_next_refresh(tmp_path: Path) -> None:
    pbx = RestartableKamailio(tmp_path, users=USERS, auth=True)
    pbx.start()

    async def main() -> None:
        async with running_stack() as stack:
            reg = await stack.register(pbx.addr, AOR, "alice", "alicepw", expires=4)
            assert reg.registered
            await asyncio.to_thread(pbx.halt)
            await asyncio.to_thread(pbx.start)
            # The restart lost the binding (and the nonce our Authorization carried) ...
            assert await asyncio.to_thread(options_via, pbx, "alice") == 404
            # ... and the refresh at 60 % of 4 s re-authenticates and restores it.
            for _ in range(100):
                if await asyncio.to_thread(options_via, pbx, "alice", 1.0) == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the refresh never restored the binding")
            assert reg.registered

    try:
        asyncio.run(asyncio.wait_for(main(), 40.0))
    finally:
        pbx.stop()


def test_wrong_password_reports_401_and_backs_off_without_a_storm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=WIRE)
    window_s = 4.5

    async def main() -> Registration:
        with Kamailio(tmp_path, users=USERS, auth=True) as pbx:
            async with running_stack() as stack:
                reg = await stack.register(pbx.addr, AOR, "alice", "wrong", expires=60, keep_trying=True)
                assert not reg.registered and reg.state.code == 401, reg.state
                await asyncio.sleep(window_s)
                assert not reg.registered and reg.state.code == 401
                return reg

    asyncio.run(asyncio.wait_for(main(), 30.0))
    sent = [r.getMessage() for r in caplog.records if r.name == WIRE and r.getMessage().startswith("SENDING")]
    registers = [m for m in sent if "\nREGISTER " in m]
    # Attempts at about 0, 1 and 3 s (1 s, 2 s backoff +-20 %), each two REGISTERs (plain, then credentials:
    # refused without stale=true, so not tried again); no unregister at stop (never granted).
    assert 4 <= len(registers) <= 8, len(registers)
    assert "Authorization:" not in registers[0]
