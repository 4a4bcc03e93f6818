"""The sealer's fast path (docs/PROTOCOL.md §B.9) changes no byte: one two-way call scripted twice, with the fast
path on and forced off, seals identical frames and predicts identical control sizes, across chain-step, interval
and epoch boundaries, unpadded (content lengths varying), padded CBR, padded with short and oversize contents,
with telephone events, notices, a late SAS reveal, lost acks and a degraded (unacked) DH step. The fast path must
also have sealed most frames, or the comparison proves nothing."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ratchet.errors import FrameError
from ratchet.events import Degradation, MediaDegraded, Notice
from ratchet.frame import HEADER_LEN
from ratchet.media_state import next_repeat, next_reveal_repeat, repeats, reveal_repeats
from ratchet.params import FrameSuite, SendParams
from ratchet.sealer import FrameSealer
from ratchet.session import MediaConfig, MediaSession
from tests.support.ratchet_pairs import make_pair

FRAME_S = 0.02
T0 = 1_700_000_000.0
CONFIG = MediaConfig(dh_interval_s=1.0, peer_dh_timeout_s=3.0)


def _keygen(tag: bytes) -> Callable[[], X25519PrivateKey]:
    counter = itertools.count()
    return lambda: X25519PrivateKey.from_private_bytes(hashlib.sha256(tag + bytes([next(counter) % 256])).digest())


def _content(k: int, mode: str, budget: int) -> bytes:
    if mode == "unpadded":
        return bytes([k & 0xFF]) * (20 + k % 3 * 17)  # three lengths: VBR-like
    if mode == "cbr":
        return bytes([k & 0xFF]) * budget
    # padded, content not filling the budget: short (cached prefixes per length) and now and then oversize
    return bytes([k & 0xFF]) * (budget - 7 if k % 11 else 95)


def _script(fast: bool, mode: str, params: SendParams) -> tuple[list[tuple[int, bytes]], int, list[object]]:
    """Seal a 24 s two-way call; returns (control size, frame) of every a->b and b->a frame, how many frames took
    the general path, and a's events."""
    ko, ka = make_pair(interval_ms=1000, offerer_params=params, answerer_params=params, seed=b"fast-path")
    a = MediaSession(ko, T0, CONFIG, keygen=_keygen(b"a"))
    b = MediaSession(ka, T0, CONFIG, keygen=_keygen(b"b"))
    general = [0]
    for s in (a, b):
        if mode != "unpadded":
            s.set_payload_size(80)
    with _general_path_counted(fast, general):
        out, events = _call(a, b, mode)
    assert a.stats.local_steps >= 10 and b.stats.local_steps >= 10
    return out, general[0], events


@contextlib.contextmanager
def _general_path_counted(fast: bool, general: list[int]) -> Iterator[None]:
    """FrameSealer (slotted: patched on the class) with its fast path on or off, counting general-path seals."""
    inner = FrameSealer.__dict__["_seal"]

    def counting(self: FrameSealer, payload: bytes, now: float, event: bytes | None) -> bytes:
        general[0] += 1
        return inner(self, payload, now, event)  # type: ignore[no-any-return]

    FrameSealer._seal = counting  # type: ignore[method-assign]
    FrameSealer.fast_path = fast
    try:
        yield
    finally:
        FrameSealer._seal = inner  # type: ignore[method-assign]
        FrameSealer.fast_path = True


def _call(a: MediaSession, b: MediaSession, mode: str) -> tuple[list[tuple[int, bytes]], list[object]]:
    out: list[tuple[int, bytes]] = []
    events: list[object] = []
    now = T0
    for k in range(1200):
        if k == 150:
            b.reveal_sas()  # a late reveal: the answerer's ring point
        if k == 400:
            a.send_notice(Notice.KEY_CHANGE_SEEN)
        event = k.to_bytes(8, "big") if k % 97 in (5, 6, 7) else None
        for sender, receiver, ev in ((a, b, event), (b, a, None)):
            if sender is b and (k % 5 == 0 or 600 <= k < 800):
                continue  # b->a loss (acks repeat), then 4 s of silence: a's step goes unacked, degraded
            # Unpadded, seal alone (control_size would re-check the fast path's bounds first and hide a miss).
            size = 0 if mode == "unpadded" else sender.control_size(now, event=ev is not None)
            frame = sender.seal(_content(k, mode, 80 - size), now, ev)
            out.append((size, frame))
            try:
                receiver.open(frame, now)
            except FrameError:
                pass
        while (e := a.next_event()) is not None:
            events.append(e)
        now += FRAME_S
    return out, events


@pytest.mark.parametrize("mode", ["unpadded", "cbr", "padded-uneven"])
@pytest.mark.parametrize(
    "params",
    [SendParams(frames_per_key=7), SendParams(frame_suite=FrameSuite.AES256_GCM_128)],
    ids=["ccm-fpk7", "gcm-fpk50"],
)
def test_the_fast_path_seals_the_same_bytes_as_the_general_path(mode: str, params: SendParams) -> None:
    fast, general_fast, events_fast = _script(True, mode, params)
    slow, general_slow, events_slow = _script(False, mode, params)
    assert len(fast) == len(slow) == general_slow
    for i, (f, s) in enumerate(zip(fast, slow, strict=True)):
        assert f == s, f"frame {i} differs"
    assert events_fast == events_slow
    assert any(isinstance(e, MediaDegraded) and e.reason is Degradation.OWN_STEP_UNACKED for e in events_fast)
    assert len(fast) - general_fast > 800  # the fast path sealed many frames (a DH step every second: many do not)
    if mode == "cbr":
        tag = 10 if params.frame_suite is FrameSuite.AES256_CCM_80 else 16
        assert {len(frame) for _, frame in fast} == {HEADER_LEN + 1 + 80 + tag}


def test_next_repeat_is_the_first_scheduled_frame() -> None:
    """Where the fast path hands over: the first frame at or after ``rel`` that the schedules fill."""
    for rel in range(400):
        assert next_repeat(rel) == next(r for r in itertools.count(rel) if repeats(r))
        assert next_reveal_repeat(rel) == next(r for r in itertools.count(rel) if reveal_repeats(r))
