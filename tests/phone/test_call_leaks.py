"""Fifty secure calls in a row from one process leave no file descriptors, tasks or memory behind."""

from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc
from pathlib import Path

import pytest

from ratchet.identity import IdentityKey
from tests.support.phones import SPEECH, start_listener
from voipgw.audio.sources import MemorySink, ToneSource
from voipgw.call import CallState
from voipgw.config import PhoneConfig
from voipgw.phone import Phone

pytestmark = pytest.mark.integration

CALLS = 50
WARMUP = 5
MAX_GROWTH_BYTES = 1_500_000


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _one_call(phone: Phone, uri: str) -> None:
    call = await phone.place_call(uri, source=ToneSource(seconds=1.0), sink=MemorySink())
    assert call.record.state is CallState.ESTABLISHED, call.record.reason
    assert call.record.security.value == "secure, unverified"
    await asyncio.sleep(0.25)
    call.hangup()
    await asyncio.wait_for(call.done.wait(), 10)
    assert call.record.state is CallState.ENDED
    assert call.stats()["frames_sent"] > 0


def test_fifty_calls_in_one_process_leak_nothing(tmp_path: Path) -> None:
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), record=False, tap=False, once=False)
    uri = f"sip:bob@127.0.0.1:{bob.sip_port}"

    async def main() -> tuple[int, int, int, int, int]:
        phone = Phone(PhoneConfig(aor="alice@127.0.0.1", listen_port=0), IdentityKey.generate())
        await phone.start()
        try:
            for _ in range(WARMUP):
                await _one_call(phone, uri)
            gc.collect()
            fds, tasks = _fds(), len(asyncio.all_tasks())
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(CALLS - WARMUP):
                await _one_call(phone, uri)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            return fds, _fds(), tasks, len(asyncio.all_tasks()), after - before
        finally:
            await phone.stop()

    try:
        fds_before, fds_after, tasks_before, tasks_after, growth = asyncio.run(main())
    finally:
        bob.stop()
    print(f"fds {fds_before}->{fds_after} tasks {tasks_before}->{tasks_after} traced growth {growth} B")
    assert fds_after == fds_before
    assert tasks_after == tasks_before
    assert growth < MAX_GROWTH_BYTES, f"{growth} bytes retained over {CALLS - WARMUP} calls"
    assert bob.log().count("incoming call from") == CALLS
