"""The opener's fast path (in-order frames of the current step, and the frame that starts the next step) changes
nothing the general path would not: one scripted two-way call (chain steps, intervals, DH steps, control TLVs,
losses, late and replayed frames, and forged copies of the very frame the fast path expects next) is opened with
the fast path on and forced off, and every frame's outcome, every event and the opener's counters and retained
keys are identical. The fast path must also have opened most frames, or the comparison proves nothing."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ratchet.errors import FrameError
from ratchet.frame import HEADER_LEN
from ratchet.opener import FrameOpener
from ratchet.params import FrameSuite, SendParams
from ratchet.session import MediaConfig, MediaSession
from tests.support.ratchet_pairs import make_pair

FRAME_S = 0.02
T0 = 1_700_000_000.0
CONFIG = MediaConfig(dh_interval_s=1.0, peer_dh_timeout_s=3.0)


def _keygen(tag: bytes) -> Callable[[], X25519PrivateKey]:
    counter = itertools.count()
    return lambda: X25519PrivateKey.from_private_bytes(hashlib.sha256(tag + bytes([next(counter) % 256])).digest())


def _state(o: FrameOpener) -> tuple[object, ...]:
    return (
        o.opened,
        o.last_index,
        dict(o.refused),
        o.derivations,
        o.dh_computations,
        o.peer_epoch,
        o._replay.highest,
        o._replay.bits,
        sorted(o._keys),
        {e: (c.next_step, len(c.ahead), c.cur is not None, sorted(c.kcvs)) for e, c in o._chains.items()},
        o._tks.derived,
        o._state.version,  # bumped by every frame whose control may change what the sealer's fast path assumed
    )


def _script(fast: bool, params: SendParams, slow_clock: float) -> tuple[list[object], int]:
    ko, ka = make_pair(interval_ms=1000, offerer_params=params, answerer_params=params, seed=b"open-fast")
    a = MediaSession(ko, T0, CONFIG, keygen=_keygen(b"a"))
    b = MediaSession(ka, T0, CONFIG, keygen=_keygen(b"b"))
    general = [0]
    with _general_path_counted(fast, general):
        out = _call(a, b, slow_clock)
    return out, general[0]


@contextlib.contextmanager
def _general_path_counted(fast: bool, general: list[int]) -> Iterator[None]:
    """FrameOpener (slotted: patched on the class) with its fast path on or off, counting general-path opens."""
    inner = FrameOpener.__dict__["_open"]

    def counting(self: FrameOpener, frame: bytes, now: float) -> bytes:
        general[0] += 1
        return inner(self, frame, now)  # type: ignore[no-any-return]

    FrameOpener._open = counting  # type: ignore[method-assign]
    FrameOpener.fast_path = fast
    try:
        yield
    finally:
        FrameOpener._open = inner  # type: ignore[method-assign]
        FrameOpener.fast_path = True


def _call(a: MediaSession, b: MediaSession, slow_clock: float) -> list[object]:
    b.reveal_sas()
    out: list[object] = []
    late: list[tuple[MediaSession, bytes]] = []
    now = T0
    for k in range(1500):
        event = k.to_bytes(8, "big") if k % 97 in (5, 6, 7) or k % 50 == 0 else None
        clock = {a: now, b: T0 + (now - T0) * (1 - slow_clock)}  # b's clock may run slow: frames drift out
        for sender, receiver, ev in ((a, b, event), (b, a, None)):
            frame = sender.seal(bytes([k & 0xFF]) * (20 + k % 3), clock[sender], ev)
            out.append(frame)  # what the sealer does depends on what the opener applied (acks, keys)
            if sender is b and (k % 7 == 0 or 900 <= k < 1000):
                continue  # lost (and a silence: a's step goes unacked)
            deliveries = [frame]
            if k % 50 in (0, 1, 23):  # a forged copy of this very frame first (at and after step and interval starts)
                deliveries.insert(0, frame[:HEADER_LEN] + bytes([frame[HEADER_LEN] ^ 1]) + frame[HEADER_LEN + 1 :])
            if k % 50 in (0, 2, 7):  # and a truncated one (refused before anything is derived)
                deliveries.insert(0, frame[: HEADER_LEN + 3])
            if k % 31 == 0:
                late.append((receiver, frame))  # delivered again a few frames on (a replay)
                if k % 62 == 0:
                    deliveries = []  # ... and only then (reordered)
            if k % 31 == 4:
                deliveries += [f for r, f in late if r is receiver]
                late = [(r, f) for r, f in late if r is not receiver]
            for d in deliveries:
                try:
                    out.append(receiver.open(d, clock[receiver]))
                except FrameError as exc:
                    out.append(type(exc).__name__)
                out.append(receiver.opener.derivations)  # a refused frame derives nothing the general path would not
        for s in (a, b):
            while (e := s.next_event()) is not None:
                out.append(e)
        if k % 100 == 99:
            # The fast path expires retained keys lazily (they are used only by the general path, which expires
            # first): expire both now, as the next general-path frame would, then compare.
            a.opener._expire(clock[a])
            b.opener._expire(clock[b])
            out.append((_state(a.opener), _state(b.opener)))
        now += FRAME_S
    assert a.stats.peer_steps >= 3 and b.stats.peer_steps >= 3
    return out


@pytest.mark.parametrize("slow_clock", [0.0, 0.12], ids=["same-clock", "drifting"])
@pytest.mark.parametrize(
    "params",
    [SendParams(frames_per_key=7), SendParams(), SendParams(frame_suite=FrameSuite.AES256_GCM_128)],
    ids=["ccm-fpk7", "ccm-fpk50", "gcm-fpk50"],
)
def test_the_opener_fast_path_opens_exactly_what_the_general_path_opens(params: SendParams, slow_clock: float) -> None:
    """``drifting``: b's clock runs 12 % slow, so after the start-offset learning the two ends' intervals drift
    apart until frames fall out of the window (refused as future or stale frames, both ways, fast path or not)."""
    fast, general_fast = _script(True, params, slow_clock)
    slow, general_slow = _script(False, params, slow_clock)
    assert len(fast) == len(slow)
    for i, (f, s) in enumerate(zip(fast, slow, strict=True)):
        assert f == s, f"item {i} differs"
    assert general_slow - general_fast > 1200  # the fast path opened many frames (junk frames and losses: general)
