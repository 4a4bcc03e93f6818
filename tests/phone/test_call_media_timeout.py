"""A peer that dies without a BYE (SIGKILL) is noticed: the phone hangs up after ``media_timeout_s`` without an
authenticated frame, with the reason, instead of sealing audio into the void for ever."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from ratchet.identity import IdentityKey
from tests.support.phones import SPEECH, start_listener
from voipgw.audio.sources import MemorySink, ToneSource
from voipgw.call import CallState
from voipgw.config import ConfigError, PhoneConfig, phone_config_from_mapping
from voipgw.phone import Phone

pytestmark = pytest.mark.integration

TIMEOUT_S = 1.5


def test_a_killed_peer_is_hung_up_after_the_media_timeout(tmp_path: Path) -> None:
    bob = start_listener(tmp_path, "bob", "--play", str(SPEECH), record=False, tap=False, once=False)

    async def main() -> tuple[str, int, int]:
        cfg = PhoneConfig(aor="alice@127.0.0.1", listen_port=0, media_timeout_s=TIMEOUT_S)
        phone = Phone(cfg, IdentityKey.generate())
        await phone.start()
        try:
            call = await phone.place_call(
                f"sip:bob@127.0.0.1:{bob.sip_port}", source=ToneSource(seconds=60.0), sink=MemorySink()
            )
            assert call.record.state is CallState.ESTABLISHED, call.record.reason
            await asyncio.sleep(0.5)
            heard = call.stats()["frames_opened"]
            bob.signal(signal.SIGKILL)
            await asyncio.wait_for(call.done.wait(), TIMEOUT_S + 20)
            assert isinstance(heard, int)
            return call.record.reason, heard, int(str(call.stats()["frames_sent"]))
        finally:
            await phone.stop()

    try:
        reason, heard, sent = asyncio.run(main())
    finally:
        bob.stop()
    assert heard > 0, "the call carried no audio before the peer died"
    assert f"no media from the peer for {TIMEOUT_S:g} s" in reason
    assert sent > 0


def test_media_timeout_must_be_a_finite_non_negative_number() -> None:
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="media_timeout_s"):
            phone_config_from_mapping({"aor": "alice@example.org", "media_timeout_s": bad})
    assert phone_config_from_mapping({"aor": "alice@example.org", "media_timeout_s": 0}).media_timeout_s == 0
