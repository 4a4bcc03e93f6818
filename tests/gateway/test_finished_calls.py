"""A finished gateway call is kept for ``gateway status`` as the snapshot taken at its end, not as the call: its
bridge, media, sockets and ratchet state are released at once (issue 17), and the status still lists it with its
reason. The gateway runs in this process (so its objects can be looked at), between a real inside baresip and a
real outside voipgw phone, on loopback."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import pytest

from tests.support.gateway_inproc import call_through, inside_gateway
from tests.support.requires import requires
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from voipgw.ops.control import render_status

pytestmark = [pytest.mark.integration, requires("baresip")]


def test_a_finished_call_keeps_its_snapshot_and_releases_the_call(tmp_path: Path) -> None:
    clip = speech.make_variant(tmp_path / "clip48k.wav", 48000, seconds=2.0)
    inside_clip = speech.make_variant(tmp_path / "clip8k.wav", 8000)

    async def scenario(bob_port: int) -> tuple[list[weakref.ref[object]], dict[str, object], str]:
        gateway = inside_gateway(tmp_path, bob_port)
        await gateway.start()
        try:
            bridge = await call_through(gateway, tmp_path, clip)
            assert bridge.outside is not None and bridge.outside.session is not None
            assert bridge.outside.media is not None and bridge.inside_media is not None
            refs: list[weakref.ref[object]] = [
                weakref.ref(bridge),
                weakref.ref(bridge.outside),
                weakref.ref(bridge.outside.session),
                weakref.ref(bridge.outside.media),
                weakref.ref(bridge.inside_media),
            ]
            del bridge
            await asyncio.sleep(0.2)  # let the legs' last callbacks run
            gc.collect()
            snapshot = gateway.snapshot()
            return [r for r in refs if r() is not None], snapshot, render_status(snapshot)
        finally:
            await gateway.stop()

    with Baresip(tmp_path, user="bob", play=inside_clip, codecs=("PCMU",)) as bob:
        alive, snapshot, status = asyncio.run(scenario(bob.sip_port))
    assert alive == [], f"still referenced after the call ended: {[type(r()).__name__ for r in alive]}"
    assert snapshot["calls"] == []
    finished = snapshot["finished"]
    assert isinstance(finished, list) and len(finished) == 1
    call = finished[0]
    assert call["state"] == "ended" and call["direction"] == "inbound", call
    assert call["reason"].startswith("outside:"), call  # carol hung up
    assert call["security"] == "secure, unverified" and call["outside_frames_sealed"] > 0, call
    assert "Recently finished (1)" in status and call["reason"] in status, status
