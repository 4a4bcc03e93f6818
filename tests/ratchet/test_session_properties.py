"""Property tests of the media ratchet against an independent model of what must open.

Random schedules mix loss (0-30%, with bursts), reordering, duplication and frequent DH steps; the model says,
for each delivery, whether it must open or which refusal it must get. Any single flipped bit is refused
without changing state, and random bytes only ever raise FrameError subclasses.
"""

from __future__ import annotations

import heapq
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratchet import errors
from ratchet.params import SendParams
from ratchet.session import MediaConfig, MediaSession
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

    # sent[k] = (epoch, (announced epoch, key) or None, frame)
    sent: list[tuple[int, tuple[int, bytes] | None, bytes]] = []
    deliveries: list[tuple[float, int, int]] = []  # (arrival time, tiebreak, index into sent)
    in_burst = False

    # The model: what the receiver must do with each delivery, in arrival order. It holds the chains of the last
    # max_recv_chains epochs it saw in use and at most one pending next epoch, learnt from an opened frame of the
    # current epoch announcing it; the header carries the epoch mod 8, so a frame of an unknown epoch that aliases
    # a held chain fails its key check (KeyDesync) instead of UnknownEpoch.
    known = [0]
    pending: tuple[int, bytes] | None = None
    highest = -1
    opened: set[int] = set()

    def deliver(until: float) -> None:
        nonlocal known, pending, highest
        while deliveries and deliveries[0][0] <= until:
            arrival, _, counter = heapq.heappop(deliveries)
            epoch, announced, frame = sent[counter]
            key = announced_keys.get(epoch)
            if counter in opened or counter <= highest - WINDOW:
                expected: type[Exception] | None = errors.ReplayedFrame
            elif epoch in known or (pending is not None and pending[0] == epoch and key == pending[1]):
                expected = None
            elif any(k % 8 == epoch % 8 for k in known) or (pending is not None and pending[0] % 8 == epoch % 8):
                expected = errors.KeyDesync
            else:
                expected = errors.UnknownEpoch
            try:
                payload = bob.open(frame, arrival)
            except errors.FrameError as exc:
                assert expected is not None and isinstance(exc, expected), (counter, epoch, exc, expected)
                continue
            assert expected is None, (counter, epoch, "opened but the model expected", expected)
            assert payload == b"a%d" % counter
            if epoch not in known:
                known = [*known, epoch][-cfg.max_recv_chains :]
                pending = None
            if announced is not None and epoch == known[-1] and announced[0] == epoch + 1:
                pending = announced
            opened.add(counter)
            highest = max(highest, counter)

    announced_keys: dict[int, bytes] = {}  # the key alice finally switched to, per epoch
    for k in range(frames):
        now = T0 + k * FRAME_S
        deliver(now)
        # bob -> alice is clean, so alice always knows bob's newest ratchet key and hears bob's acks at once
        alice.open(bob.seal(b"b%d" % k, now), now)
        before = alice.stats.announcements_sent
        frame = alice.seal(b"a%d" % k, now)
        epoch = alice.sealer.epoch
        pend = alice.sealer._pending
        announced = None
        if alice.stats.announcements_sent > before and pend is not None:
            announced = (pend.epoch, pend.public)
        announced_keys[epoch] = alice.sealer._state.own_public.get(epoch, b"") if epoch else b""
        sent.append((epoch, announced, frame))
        in_burst = rng.random() < (0.5 if in_burst else burst)
        if in_burst or rng.random() < loss:
            continue
        copies = 2 if rng.random() < dup else 1
        for _ in range(copies):
            arrival = now + rng.randint(0, max_delay) * FRAME_S
            heapq.heappush(deliveries, (arrival, rng.randrange(1 << 30), k))
    deliver(T0 + (frames + max_delay + 1) * FRAME_S)
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
    frames = [alice.seal(bytes(range(60)), T0 + k * FRAME_S) for k in range(3)]  # frame 0 reveals, 1 announces
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


def _receiver_state(s: MediaSession) -> tuple[object, ...]:
    """Everything a refused frame must leave as it was (the chain look-ahead aside: it only caches what the
    chain key determines, so it never changes what opens)."""
    o, st_ = s.opener, s._state
    chains = tuple(
        (c.epoch, c.start, bytes(c.ck), c.next_step, c.cur is None, c.superseded_at)
        for c in sorted(o._chains.values(), key=lambda c: c.epoch)
    )
    pend = o._pending
    pending = None if pend is None else (pend.chain.epoch, pend.public, pend.chain.start, bytes(pend.chain.ck))
    return (
        o._replay.highest,
        o._replay.bits,
        o._current,
        pending,
        chains,
        tuple(o._keys),
        bytes(o._root),
        o.sas,
        o.sas_failed,
        o.last_index,
        o.opened,
        o.peer_epoch,
        o._offset,
        o._learn_until,
        o._last_auth_at,
        len(st_.events),
        st_.ack,
        st_.ack_rel,
        dict(st_.peer_acks),
        st_.peer_current,
        frozenset(st_.degraded),
    )


def _mid_call() -> tuple[MediaSession, MediaSession, list[bytes], float]:
    """Bob mid-call: several peer epochs behind him, alice's next key pending at bob (announced, acked, not yet
    in use), and alice's recent frames."""
    cfg = MediaConfig(dh_interval_s=1.0, max_skip_steps=64)
    p = SendParams(frames_per_key=2)
    ko, ka = make_pair(offerer_params=p, answerer_params=p, seed=b"refused")
    alice, bob = MediaSession(ko, T0, cfg), MediaSession(ka, T0, cfg)
    frames: list[bytes] = []
    now = T0
    while True:
        frame = alice.seal(b"a" * 50, now)
        frames.append(frame)
        bob.open(frame, now)
        if alice.stats.local_epoch >= 3 and bob.opener._pending is not None:
            break
        alice.open(bob.seal(b"b" * 50, now), now)
        now += FRAME_S
    return alice, bob, frames, now


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["random", "flip", "header", "next-epoch"]),
    data=st.binary(min_size=0, max_size=120),
    pick=st.integers(0, 40),
    bit=st.integers(0, 8 * 200),
    counter=st.integers(0, (1 << 14) - 1),
)
def test_a_refused_frame_changes_nothing_and_costs_bounded_work(
    kind: str, data: bytes, pick: int, bit: int, counter: int
) -> None:
    alice, bob, frames, now = _mid_call()
    genuine = frames[-1 - pick % len(frames)]
    if kind == "random":
        frame = data
    elif kind == "flip":
        b = bytearray(genuine)
        b[(bit // 8) % len(b)] ^= 1 << (bit % 8)
        frame = bytes(b)
    else:
        word = int.from_bytes(genuine[:4], "big")
        if kind == "next-epoch":
            word = (word & ~(7 << 28)) | (((word >> 28) + 1) % 8 << 28)
        word = (word & ~(((1 << 14) - 1) << 14)) | (counter << 14)
        frame = word.to_bytes(4, "big") + data
    before = _receiver_state(bob)
    kdf_before, dh_before = bob.opener.derivations, bob.opener.dh_computations
    try:
        bob.open(frame, now)
    except errors.FrameError:
        pass
    else:
        assert frame == genuine or frame in frames  # only a genuine, not yet opened frame may open
        return
    assert _receiver_state(bob) == before
    assert bob.opener.dh_computations == dh_before  # never a DH for a refused frame
    assert bob.opener.derivations - kdf_before <= 64 + 2  # max_skip_steps: the time bound is 3 steps here
    # ...and the stream goes on as if the frame had never come.
    nxt = alice.seal(b"a" * 50, now + FRAME_S)
    assert bob.open(nxt, now + FRAME_S) == b"a" * 50
