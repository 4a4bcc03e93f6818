"""The gateway's pure pieces, in process: the bridge pipes, the Opus pass-through codec, labels, SIP mapping and
the command line's one-line errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from voipgw.audio.opus import FRAME_SAMPLES, OpusEncoder
from voipgw.audio.pcm import Pcm
from voipgw.cli.cmd_gateway import gateway_config
from voipgw.cli.errors import CliError
from voipgw.gateway import (
    PIPE_MAX_FRAMES,
    B2buaSettings,
    Gateway,
    InsideUser,
    OpusRelay,
    PcmPipe,
    switch_codec,
)
from voipgw.gateway.pipes import Passthrough
from voipgw.gateway.runtime import b2bua_config
from voipgw.gateway.statuses import code_of
from voipgw.ops.config import GatewayConfig
from voipgw.sip.uri import hostport, user_part


def _tone(value: int) -> Pcm:
    return np.full(FRAME_SAMPLES, value, dtype=np.int16)


def test_a_closed_pipe_drops_audio_and_never_ends() -> None:
    pipe = PcmPipe()
    pipe.write_frame(_tone(7))
    frame = pipe.read_frame()
    assert frame is not None and not frame.any()  # silence, never None (None would stop the stream for good)
    pipe.open = True
    pipe.write_frame(_tone(7))
    frame = pipe.read_frame()
    assert frame is not None and int(frame[0]) == 7 and pipe.passed == 1


def test_an_open_pipe_is_bounded_and_keeps_the_newest() -> None:
    pipe = PcmPipe()
    pipe.open = True
    for i in range(PIPE_MAX_FRAMES + 3):
        pipe.write_frame(_tone(i))
    assert pipe.dropped == 3 and len(pipe.frames) == PIPE_MAX_FRAMES
    first = pipe.read_frame()
    assert first is not None and int(first[0]) == 3


def test_switch_codec_passes_opus_through_untouched_only_when_asked() -> None:
    rx, tx, flag = OpusRelay(), OpusRelay(), Passthrough()
    codec = switch_codec(rx, tx, flag)
    enc, dec = codec.new_encoder(), codec.new_decoder()
    payload = OpusEncoder().encode(_tone(1000))
    assert dec.decode(payload).any() and not rx.frames  # transcoding: decoded, nothing relayed
    tx.push(b"not-encoded")
    assert enc.encode(_tone(0)) != b"not-encoded"  # transcoding: the PCM is encoded, the relay ignored
    flag.on = True
    assert not dec.decode(payload).any() and list(rx.frames) == [payload]
    assert enc.encode(_tone(0)) == b"not-encoded" and tx.passed == 1
    assert len(enc.encode(_tone(0))) > 0  # nothing relayed yet: encoded silence keeps the stream paced


def test_sip_mapping() -> None:
    assert code_of("486 Busy Here") == 486
    assert code_of("the peer answered without the voipgw key exchange; hung up (policy: require)") == 488
    assert code_of("200 OK") == 488
    assert hostport("sip:alice@127.0.0.1:5062") == ("127.0.0.1", 5062)
    assert hostport("bob@example.org") == ("example.org", 5060)
    assert user_part("sip:bob@127.0.0.1:5070") == "bob" and user_part("example.org") == ""


def test_gateway_needs_an_identity_per_user(tmp_path: Path) -> None:
    user = InsideUser("alice", "sip:alice@127.0.0.1:5062", "alice@127.0.0.1")
    with pytest.raises(ValueError, match="alice"):
        Gateway(B2buaSettings(home=tmp_path, users=(user,)), identities={})


def _args(
    tmp_path: Path, *users: str, route: tuple[str, ...] = (), listen: str = "127.0.0.1:5070"
) -> argparse.Namespace:
    return argparse.Namespace(
        home=tmp_path,
        listen=listen,
        user=list(users),
        route=list(route),
        proxy=None,
        no_answer_timeout=30.0,
        no_bind_call_id=False,
        speak_sas="off",
    )


def test_cli_flags_map_onto_the_config(tmp_path: Path) -> None:
    cfg = gateway_config(
        _args(tmp_path, "alice=sip:alice@127.0.0.1:5062", "bob=sip:bob@127.0.0.1:5064,bob@example.org",
              route=("carol=sip:carol@127.0.0.1:5090",))
    )  # fmt: skip
    assert isinstance(cfg, GatewayConfig), "flag mode builds the configuration file's type"
    b2bua = b2bua_config(cfg, tmp_path, no_answer_timeout_s=30.0)  # the one translation, as for a file
    assert [u.outside_aor for u in b2bua.users] == ["alice@127.0.0.1", "bob@example.org"]
    assert [u.contact for u in b2bua.users] == ["sip:alice@127.0.0.1:5062", "sip:bob@127.0.0.1:5064"]
    assert b2bua.routes == {"carol": "sip:carol@127.0.0.1:5090"} and b2bua.listen_port == 5070
    assert b2bua.outside_proxy is None and b2bua.bind_call_id and b2bua.home == tmp_path
    assert not b2bua.speak_sas  # --speak-sas off


@pytest.mark.parametrize(
    ("users", "route", "listen", "message"),
    [
        ((), (), "127.0.0.1:5070", "no inside users"),
        (("alice",), (), "127.0.0.1:5070", "expected NAME=sip:CONTACT"),
        (("alice=sip:a@h:1", "alice=sip:a@h:2"), (), "127.0.0.1:5070", "given twice"),
        (("alice=sip:a@h:1",), ("carol",), "127.0.0.1:5070", "expected NAME=sip:URI"),
        (("alice=sip:a@h:1",), (), "127.0.0.1:port", "not a number"),
    ],
)
def test_cli_mistakes_are_one_line_errors(
    tmp_path: Path, users: tuple[str, ...], route: tuple[str, ...], listen: str, message: str
) -> None:
    with pytest.raises(CliError, match=message) as err:
        gateway_config(_args(tmp_path, *users, route=route, listen=listen))
    assert err.value.code == 2 and "\n" not in str(err.value)


def test_a_transcoded_bridges_streams_die_with_it() -> None:
    """The switchable coders must not outlive their streams: a module-level WeakKeyDictionary whose values (the
    coders, their relays) referred back to its keys kept every transcoded call's object graph alive, about 170 KB
    a call at the gateway (found by ``voipgw bench churn``: RSS grew without bound under call churn)."""
    import asyncio
    import gc
    import weakref

    from voipgw.media import MediaStream

    async def one_bridge() -> list[weakref.ref[MediaStream]]:
        inside, outside = await MediaStream.bind(), await MediaStream.bind()
        to_outside, to_inside, flag = OpusRelay(), OpusRelay(), Passthrough()  # transcoding: pass-through stays off
        for stream, (rx, tx) in ((outside, (to_inside, to_outside)), (inside, (to_outside, to_inside))):
            codec = switch_codec(rx, tx, flag)
            codec.new_encoder().attach_stream(stream)  # type: ignore[attr-defined]
            codec.new_decoder().attach_stream(stream)  # type: ignore[attr-defined]
        assert len(inside.codec_parts) == len(outside.codec_parts) == 2
        refs = [weakref.ref(inside), weakref.ref(outside)]
        await inside.stop()
        await outside.stop()
        return refs

    refs = asyncio.run(one_bridge())
    gc.collect()
    assert [r() for r in refs] == [None, None], "a finished call's media streams are still alive"


def test_a_transcoding_bridge_sends_each_frame_on_as_it_arrives() -> None:
    """Issue 17: a transcoded frame used to wait in a jitter buffer (60-120 ms), a pipe (up to 100 ms) and for the
    other leg's tick, in each gateway. Direct: the inside leg decodes each frame in its receive callback and the
    outside leg encodes and sends it at once; the pacing ticks then send nothing of their own while frames flow,
    and the gateway's own frames (a cue) still play first, in order."""
    import asyncio

    from voipgw.audio.codecs import get_codec
    from voipgw.audio.g711 import ulaw_decode, ulaw_encode
    from voipgw.gateway.pipes import transcode_directly
    from voipgw.media import MediaStream, PlainProtector
    from voipgw.rtp.packet import build_rtp, parse_rtp

    frames = 25
    tone = (3000 * np.sin(2 * np.pi * 1000 * np.arange(160) / 8000)).astype(np.int16)

    class Phone(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.got: list[bytes] = []
            self.heard = asyncio.Event()

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.got.append(parse_rtp(data).payload)
            if sum(1 for p in self.got if np.abs(ulaw_decode(p).astype(np.int32)).max() > 1000) >= frames:
                self.heard.set()

    async def bridge() -> None:
        loop = asyncio.get_running_loop()
        caller_tr, _ = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
        callee_tr, callee = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
        inside, outside = await MediaStream.bind(payload_type=0), await MediaStream.bind(payload_type=0)
        to_outside, to_inside = PcmPipe(), PcmPipe()
        pcmu = get_codec("pcmu")
        try:
            for stream, source, sink, remote in (
                (inside, to_inside, to_outside, caller_tr.get_extra_info("sockname")),
                (outside, to_outside, to_inside, callee_tr.get_extra_info("sockname")),
            ):
                await stream.start(
                    PlainProtector(), remote, source=source, sink=sink, allow_insecure=True, codec=pcmu, payload_type=0
                )
            to_outside.frames.append(_tone(5))  # the gateway's own frame (a cue) queued before the pipe opens
            to_inside.open = to_outside.open = True
            transcode_directly(inside, outside, to_outside, to_inside)
            for seq in range(frames):
                caller_tr.sendto(build_rtp(0, seq, seq * 160, 1234, ulaw_encode(tone)), inside.local)
                await asyncio.sleep(0.02)
            await asyncio.wait_for(callee.heard.wait(), 10)
        finally:
            await inside.stop()
            await outside.stop()
            caller_tr.close()
            callee_tr.close()
        assert inside.jitter.stats.received == 0  # nothing waited in a jitter buffer
        assert inside.stats.frames_played == frames and to_outside.passed >= frames
        assert not to_outside.frames  # the cue frame played, nothing of the caller's queued behind it

    asyncio.run(bridge())


def test_a_direct_pipe_plays_the_gateways_own_frames_and_otherwise_skips_ticks() -> None:
    from voipgw.media import SKIP_TICK, MediaStream

    async def check() -> None:
        reader = await MediaStream.bind()
        try:
            pipe = PcmPipe()
            pipe.send_directly(reader)
            assert pipe.read_frame() is not SKIP_TICK  # closed: silence keeps the reading stream paced
            pipe.frames.append(_tone(9))
            pipe.open = True
            pipe.write_frame(_tone(1))  # the gateway's own frame still waits: the far end's is dropped
            assert pipe.dropped == 1
            own = pipe.read_frame()
            assert own is not None and int(own[0]) == 9
            assert pipe.read_frame() is SKIP_TICK
        finally:
            await reader.stop()

    import asyncio

    asyncio.run(check())
