"""Property tests of the media ratchet against an independent model of what must open.

Random schedules mix loss (0-30%, with bursts), reordering, duplication and frequent DH steps; the model says,
for each delivery, whether it must open or which refusal it must get. Any single flipped bit is refused
without changing state, and random bytes only ever raise FrameError subclasses.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratchet import errors
from ratchet.params import SendParams
from ratchet.session import MediaConfig, MediaSession, announces
from tests.support.ratchet_pairs import make_pair

FRAME_S = 0.02
T0 = 1_800_000_000.0
WINDOW = 256


def _run_schedule(seed: int, loss: float, burst: float, dup: float, max_delay: int, frames: int) -> tuple[int, int]:
    """Run one schedule against the model; return (frames opened, the receiver's newest peer epoch)."""
    rng = random.Random(seed)
    cfg = MediaConfig(dh_interval_s=0.4, replay_window=WINDOW)
    params = SendParams(frames_per_key=4)
    ko, ka = make_pair(offerer_params=params, answerer_params=params, seed=seed.to_bytes(8, "big"))
    alice, bob = MediaSession(ko, T0, cfg), MediaSession(ka, T0, cfg)

    sent: list[tuple[int, int, bool, bytes]] = []  # (counter, epoch, carries announcement, frame)
    deliveries: list[tuple[float, int, int]] = []  # (arrival time, tiebreak, index into sent)
    in_burst = False
    for k in range(frames):
        now = T0 + k * FRAME_S
        # bob -> alice is clean, so alice always knows bob's newest ratchet key
        alice.open(bob.seal(b"b%d" % k, now), now)
        frame = alice.seal(b"a%d" % k, now)
        epoch = alice.sealer.epoch
        sent.append((k, epoch, announces(k - alice.sealer._epoch_start_n), frame))
        in_burst = rng.random() < (0.5 if in_burst else burst)
        if in_burst or rng.random() < loss:
            continue
        copies = 2 if rng.random() < dup else 1
        for _ in range(copies):
            arrival = now + rng.randint(0, max_delay) * FRAME_S
            deliveries.append((arrival, rng.randrange(1 << 30), k))
    deliveries.sort()

    # The model: what the receiver must do with each delivery, in arrival order. The receiver keeps the
    # chains of the last max_recv_chains epochs it learned; the header carries the epoch mod 8, so a frame of
    # an unknown epoch that aliases a kept chain fails its key check (KeyDesync) instead of UnknownEpoch.
    known = [0]
    highest = -1
    opened: set[int] = set()
    for arrival, _, idx in deliveries:
        counter, epoch, announced, frame = sent[idx]
        if counter in opened or counter <= highest - WINDOW:
            expected: type[Exception] | None = errors.ReplayedFrame
        elif epoch in known:
            expected = None
        elif epoch == known[-1] + 1 and announced:
            expected = None
            known = [*known, epoch][-cfg.max_recv_chains :]
        elif any(k % 8 == epoch % 8 for k in known):
            expected = errors.KeyDesync
        else:
            expected = errors.UnknownEpoch
        try:
            payload = bob.open(frame, arrival)
        except errors.FrameError as exc:
            assert expected is not None and isinstance(exc, expected), (idx, epoch, exc, expected)
            continue
        assert expected is None, (idx, epoch, "opened but the model expected", expected)
        assert payload == b"a%d" % counter
        opened.add(counter)
        highest = max(highest, counter)
    assert bob.stats.opened == len(opened)
    assert bob.stats.peer_epoch == known[-1]
    return len(opened), known[-1]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    loss=st.floats(0.0, 0.3),
    burst=st.sampled_from([0.0, 0.02, 0.05]),
    dup=st.floats(0.0, 0.2),
    max_delay=st.integers(0, 6),
)
def test_random_loss_reorder_duplication_and_dh_steps_match_the_model(
    seed: int, loss: float, burst: float, dup: float, max_delay: int
) -> None:
    _run_schedule(seed, loss, burst, dup, max_delay, frames=300)


def test_long_lossy_call_keeps_stepping_and_opening() -> None:
    opened, peer_epoch = _run_schedule(seed=7, loss=0.3, burst=0.02, dup=0.1, max_delay=5, frames=1500)
    assert peer_epoch >= 50  # 30 s of call with a DH step every 0.4 s: the receiver followed them all
    assert opened >= 0.5 * 1500


@settings(max_examples=200, deadline=None)
@given(index=st.integers(0, 2), bit=st.integers(0, 8 * 120))
def test_any_single_flipped_bit_is_refused_and_changes_nothing(index: int, bit: int) -> None:
    ko, ka = make_pair(seed=b"bitflip")
    alice, bob = MediaSession(ko, T0), MediaSession(ka, T0)
    frames = [alice.seal(bytes(range(60)), T0 + k * FRAME_S) for k in range(3)]  # frame 0 announces
    frame = frames[index]
    bit %= 8 * len(frame)
    flipped = bytearray(frame)
    flipped[bit // 8] ^= 1 << (bit % 8)
    for k in range(index):
        bob.open(frames[k], T0 + k * FRAME_S)
    try:
        bob.open(bytes(flipped), T0 + index * FRAME_S)
    except errors.FrameError:
        pass
    else:
        raise AssertionError(f"bit {bit} of frame {index} flipped and the frame still opened")
    assert bob.open(frame, T0 + index * FRAME_S) == bytes(range(60))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_only_raise_frame_errors(data: bytes) -> None:
    _, ka = make_pair(seed=b"junk")
    bob = MediaSession(ka, T0)
    try:
        bob.open(data, T0)
    except errors.FrameError:
        return
    raise AssertionError("random bytes opened")
