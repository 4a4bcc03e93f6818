"""The SAS oracle of an auto-answering softphone (issue 13): a man in the middle that calls ``voipgw listen
--auto-answer`` and gives up as soon as it can compute the SAS learns it only from calls the listener answered
(each one an answered call in its log and history), never from one it could abort unseen."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.phones import SPEECH, start_listener
from tests.support.requires import requires
from tests.support.sas_prober import ATTACKER_HOST, SasProber
from tests.testbed.ports import reserve_block
from voipgw.config import PhoneConfig

pytestmark = [pytest.mark.integration, requires("sox")]

ATTEMPTS = 4


def test_every_sas_a_prober_learns_from_an_auto_answering_listener_costs_an_answered_call(tmp_path: Path) -> None:
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), once=False, record=False, tap=False)
    block = reserve_block(1)
    config = PhoneConfig(aor="alice@127.0.0.1", listen_host=ATTACKER_HOST, listen_port=block[0], transport="udp")

    async def probe() -> list:  # type: ignore[type-arg]
        async with SasProber(config) as prober:
            return [await prober.attempt(f"sip:bob@127.0.0.1:{bob.sip_port}", patience_s=3.0) for _ in range(ATTEMPTS)]

    try:
        attempts = asyncio.run(probe())
    finally:
        block.release()
        bob.stop()
    log = bob.log()
    print(attempts)
    assert all(p.early for p in attempts), attempts  # the key exchange ran in each 183
    learned = [p for p in attempts if p.sas is not None]
    assert learned, attempts
    assert all(p.answered for p in learned), learned  # no SAS without an answered call
    # ... and the listener shows each of those SAS on an established call, which its user sees and its history keeps
    for p in learned:
        assert f"established | secure, unverified | alice@127.0.0.1 | SAS {p.sas}" in log, (p, log)
    assert log.count("-> alice@127.0.0.1: ended") >= len(learned), log
