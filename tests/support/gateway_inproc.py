"""Test helper: a gateway B2BUA in the test's own process (so a test can look at its objects), fronting an inside
baresip and called by an outside voipgw phone process (one SIP stack per process: the gateway's): all real, on
loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ratchet.identity import IdentityKey
from tests.support.phones import start_caller
from voipgw.gateway import B2buaSettings, Bridge, Gateway, InsideUser

CALL_TIMEOUT_S = 25.0


def inside_gateway(home: Path, bob_sip_port: int) -> Gateway:
    """A flag-mode gateway (any free port) for the inside phone ``bob`` at ``bob_sip_port``; no spoken SAS."""
    bob = InsideUser("bob", f"sip:bob@127.0.0.1:{bob_sip_port}", "bob@127.0.0.1")
    settings = B2buaSettings(home=home, users=(bob,), listen_port=0, speak_sas=False)
    return Gateway(settings, {"bob": IdentityKey.generate()})


async def call_through(gateway: Gateway, workdir: Path, clip: Path, name: str = "carol") -> Bridge:
    """An outside voipgw phone calls bob at the gateway, plays ``clip`` and hangs up; returns the bridge the gateway
    ran, once the gateway has finished it (and the caller process has exited)."""
    done_before = len(gateway.finished)
    uri = f"sip:bob@127.0.0.1:{gateway.port}"
    caller = start_caller(workdir, name, uri, "--play", str(clip), "--duration", "3", record=False, tap=False)
    try:
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while not gateway.bridges:
            if time.monotonic() > deadline or caller.proc.poll() is not None:
                raise AssertionError(f"no call reached the gateway: {caller.log()}")
            await asyncio.sleep(0.05)
        bridge = gateway.bridges[0]
        await asyncio.wait_for(bridge.done.wait(), CALL_TIMEOUT_S)
        while len(gateway.finished) == done_before:  # kept in the same step that set done: never long
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(caller.wait, CALL_TIMEOUT_S) == 0, caller.log()
        return bridge
    finally:
        caller.stop()
