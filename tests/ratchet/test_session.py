"""Behaviour of the media Double Ratchet (wire v3): sealing, opening, DH steps, loss, replay, skew and forged frames."""

from __future__ import annotations

import hmac
import os

import pytest

from ratchet import errors
from ratchet import opener as opener_module
from ratchet import sealer as sealer_module
from ratchet.chain import kdf_ck
from ratchet.events import LocalRatchetStep, PeerRatchetStep, SasCommitmentFailed, SasReady
from ratchet.frame import COUNTER_MOD, COUNTER_SHIFT, EPOCH_MOD, EPOCH_SHIFT, HEADER_LEN
from ratchet.params import FrameSuite, SendParams
from ratchet.session import MediaConfig, MediaSession
from tests.support.ratchet_pairs import make_pair

FRAME_S = 0.02
T0 = 1_700_000_000.0


def sessions(
    config: MediaConfig | None = None, interval_ms: int = 1000, **pair_kwargs: object
) -> tuple[MediaSession, MediaSession]:
    ko, ka = make_pair(interval_ms=interval_ms, **pair_kwargs)  # type: ignore[arg-type]
    return MediaSession(ko, T0, config), MediaSession(ka, T0, config)


def exchange(a: MediaSession, b: MediaSession, frames: int, start: float, payload: bytes = b"x" * 60) -> float:
    """Both sides send ``frames`` frames to each other, losslessly; returns the time after the last frame."""
    now = start
    for _ in range(frames):
        assert b.open(a.seal(payload, now), now) == payload
        assert a.open(b.seal(payload, now), now) == payload
        now += FRAME_S
    return now


def events(s: MediaSession) -> list[object]:
    out = []
    while (ev := s.next_event()) is not None:
        out.append(ev)
    return out


def test_kdf_ck_is_hmac_sha256_with_constants() -> None:
    ck = os.urandom(32)
    assert kdf_ck(ck) == (hmac.digest(ck, b"\x01", "sha256"), hmac.digest(ck, b"\x02", "sha256"))


def test_round_trip_both_directions_and_steady_state_overhead_is_15_bytes() -> None:
    """Header 4, control length 1, tag 10: once the initial keys are acked and the reveal period is over."""
    alice, bob = sessions(MediaConfig(reveal_period_s=0.5))
    bob.reveal_sas()
    now = exchange(alice, bob, 40, T0)
    frame = alice.seal(b"p" * 60, now)
    assert bob.open(frame, now) == b"p" * 60
    assert alice.control_size(now + FRAME_S) == 0
    assert len(frame) - 60 == 15
    assert alice.stats.sealed == 41 and bob.stats.opened == 41


def test_gcm_suite_overhead_is_21_bytes() -> None:
    p = SendParams(frame_suite=FrameSuite.AES256_GCM_128)
    alice, bob = sessions(offerer_params=p, answerer_params=p)
    frames = [alice.seal(b"q" * 60, T0 + k * FRAME_S) for k in range(20)]
    assert [bob.open(f, T0 + k * FRAME_S) for k, f in enumerate(frames)] == [b"q" * 60] * 20
    assert len(frames[-1]) - 60 == 4 + 1 + 16  # frame 19: no scheduled control item (the key repeats every 4th)


def test_sas_matches_after_both_reveals() -> None:
    alice, bob = sessions()
    assert alice.sas is None and bob.sas is None
    now = exchange(alice, bob, 1, T0)
    assert bob.sas is not None and alice.sas is None  # the answerer has r; the offerer still lacks s
    assert any(isinstance(e, SasReady) for e in events(bob))
    bob.reveal_sas()
    exchange(alice, bob, 1, now + FRAME_S)
    assert alice.sas == bob.sas
    assert any(isinstance(e, SasReady) for e in events(alice))


def test_forged_sas_reveal_commitment_is_flagged() -> None:
    ko, ka = make_pair()
    ka.sas_commitment = bytes(16)  # the offer committed to something else
    alice, bob = MediaSession(ko, T0), MediaSession(ka, T0)
    bob.open(alice.seal(b"a", T0), T0)
    assert bob.sas is None and bob.sas_failed and not bob.sas_revealed
    assert any(isinstance(e, SasCommitmentFailed) for e in events(bob))


def test_dh_steps_happen_on_schedule_and_both_sides_follow() -> None:
    cfg = MediaConfig(dh_interval_s=1.0)
    alice, bob = sessions(cfg)
    now = exchange(alice, bob, 5 * 50 + 10, T0)
    assert alice.stats.local_epoch >= 4 and bob.stats.local_epoch >= 4
    assert bob.stats.peer_epoch == alice.stats.local_epoch
    assert alice.stats.peer_epoch == bob.stats.local_epoch
    evs = events(alice)
    assert any(isinstance(e, LocalRatchetStep) for e in evs)
    assert any(isinstance(e, PeerRatchetStep) for e in evs)
    assert sum(alice.stats.refused.values()) == 0
    exchange(alice, bob, 10, now)


def test_epochs_stop_at_the_last_announceable_epoch_and_media_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The announcement carries the epoch as a u16: a sender at the last epoch keeps its chain instead of
    overflowing the field (which raised struct.error and stopped the media). MAX_EPOCH is lowered to reach it."""
    monkeypatch.setattr(sealer_module, "MAX_EPOCH", 3)
    alice, bob = sessions(MediaConfig(dh_interval_s=1.0))
    now = exchange(alice, bob, 8 * 50, T0)  # 8 s: 7 steps' worth of intervals
    assert alice.stats.local_epoch == bob.stats.local_epoch == 3
    assert bob.stats.peer_epoch == 3 and alice.stats.peer_epoch == 3
    exchange(alice, bob, 3 * 50, now)
    assert alice.stats.local_epoch == 3
    assert sum(alice.stats.refused.values()) == sum(bob.stats.refused.values()) == 0


def test_the_next_key_survives_loss_of_its_first_announcements_and_the_switch_waits_for_the_ack() -> None:
    """Alice decides a step at 1 s and announces the key in frames 0-2 after the decision, then every 4th: losing
    the first three costs three frames, not the step. She keeps sealing in the old epoch until Bob's ack arrives."""
    cfg = MediaConfig(dh_interval_s=1.0, reveal_period_s=0)  # no SAS reveal to alternate with
    alice, bob = sessions(cfg)
    now = exchange(alice, bob, 50, T0) + 0.01  # both initial keys acked; alice decides at the next frame
    assert alice.stats.local_epoch == 0
    before = alice.stats.announcements_sent  # the initial key's, until bob acked it
    lost = [alice.seal(b"z", now + k * FRAME_S) for k in range(4)]  # the decision, 3 announcing frames + 1 plain
    assert alice.stats.announcements_sent == before + 3
    t = now + 4 * FRAME_S
    f4 = alice.seal(b"z", t)  # every 4th: announces again
    assert alice.stats.announcements_sent == before + 4
    assert bob.open(f4, t) == b"z"
    assert bob.opener.last_control.ratchet_key is not None and bob.opener.last_control.ratchet_key.epoch == 1
    assert bob.stats.peer_epoch == 0 and alice.stats.local_epoch == 0  # no switch before the ack
    for _ in range(5):  # bob's ack goes in his next frame without a 42-byte item (his own key takes 3 first)
        assert alice.open(bob.seal(b"y", t), t) == b"y"
        if alice.opener.last_control.key_ack is not None:
            break
    assert alice.opener.last_control.key_ack is not None
    f5 = alice.seal(b"z", t + FRAME_S)
    assert alice.stats.local_epoch == 1 and (f5[0] >> 4) & 7 == 1
    assert bob.open(f5, t + FRAME_S) == b"z"
    assert bob.stats.peer_epoch == 1
    assert [type(e) for e in events(bob)].count(PeerRatchetStep) == 1
    with pytest.raises(errors.ReplayedFrame):
        bob.open(f4, t)
    for k, f in enumerate(lost):  # late old-epoch frames still open
        assert bob.open(f, t + FRAME_S) == b"z", k


def test_frames_of_an_epoch_never_announced_are_refused_without_state_change() -> None:
    """A frame whose E names the next epoch before any authenticated announcement of it: no chain, no DH."""
    alice, bob = sessions()
    now = exchange(alice, bob, 10, T0)
    frame = alice.seal(b"w", now)
    word = int.from_bytes(frame[:4], "big")
    forged = ((word & ~((EPOCH_MOD - 1) << EPOCH_SHIFT)) | (1 << EPOCH_SHIFT)).to_bytes(4, "big") + frame[4:]
    with pytest.raises(errors.UnknownEpoch):
        bob.open(forged, now)
    assert bob.opener.dh_computations == 0
    assert bob.open(frame, now) == b"w"


def test_late_frames_of_the_previous_epoch_still_open() -> None:
    cfg = MediaConfig(dh_interval_s=1.0)
    alice, bob = sessions(cfg)
    now = exchange(alice, bob, 40, T0)
    old = alice.seal(b"old", now)
    now = exchange(alice, bob, 30, now + FRAME_S)  # alice steps meanwhile
    assert bob.stats.peer_epoch >= 1
    assert bob.open(old, now) == b"old"


def test_replayed_and_duplicated_frames_are_refused() -> None:
    alice, bob = sessions()
    f = alice.seal(b"once", T0)
    assert bob.open(f, T0) == b"once"
    with pytest.raises(errors.ReplayedFrame):
        bob.open(f, T0)
    frames = [alice.seal(b"n", T0 + k * FRAME_S) for k in range(1, 300)]
    for k, fr in enumerate(frames):
        bob.open(fr, T0 + (k + 1) * FRAME_S)
    with pytest.raises((errors.ReplayedFrame, errors.StaleFrame)):  # 6 s old: its interval is out of the window
        bob.open(f, T0 + 300 * FRAME_S)


def test_reordered_frames_within_the_window_open_exactly_once() -> None:
    alice, bob = sessions()
    frames = [alice.seal(bytes([k]), T0 + k * FRAME_S) for k in range(100)]
    order = list(range(100))
    for i in range(0, 100, 4):
        order[i : i + 4] = reversed(order[i : i + 4])
    opened = [bob.open(frames[i], T0 + i * FRAME_S + 0.1) for i in order]
    assert sorted(opened) == [bytes([k]) for k in range(100)]


def test_clock_skew_inside_window_works_and_outside_is_refused_with_direction() -> None:
    cfg = MediaConfig(max_skew_ms=2000)
    alice, bob = sessions(cfg, interval_ms=500)
    # Bob's call clock is 1.5 s ahead: inside the window.
    assert bob.open(alice.seal(b"a", T0 + 10.0), T0 + 11.5) == b"a"
    # Receiver 3 s ahead of the sender: the frame is stale.
    with pytest.raises(errors.StaleFrame):
        bob.open(alice.seal(b"b", T0 + 20.0), T0 + 23.0)
    # Receiver 3 s behind: the frame comes from the future.
    with pytest.raises(errors.FutureFrame):
        bob.open(alice.seal(b"c", T0 + 30.0), T0 + 27.0)
    assert bob.open(alice.seal(b"d", T0 + 40.0), T0 + 40.1) == b"d"


def test_desynchronised_key_is_told_apart_from_tampering() -> None:
    alice, bob = sessions()
    _, stranger = sessions()
    f = alice.seal(b"secret", T0)
    tampered = f[:-1] + bytes([f[-1] ^ 1])
    with pytest.raises(errors.TamperedFrame):
        bob.open(tampered, T0)
    with pytest.raises(errors.KeyDesync):
        stranger.open(f, T0)
    assert bob.open(f, T0) == b"secret"


def test_forged_huge_counter_costs_bounded_work_and_changes_nothing() -> None:
    alice, bob = sessions(config=MediaConfig(max_skip_steps=8))
    frames = [alice.seal(b"v", T0 + k * FRAME_S) for k in range(3)]
    assert bob.open(frames[0], T0) == b"v"
    word = int.from_bytes(frames[1][:HEADER_LEN], "big")
    forged_word = (word & ~((COUNTER_MOD - 1) << COUNTER_SHIFT)) | (4000 << COUNTER_SHIFT)
    forged = forged_word.to_bytes(4, "big") + frames[1][HEADER_LEN:]
    with pytest.raises(errors.TooFarAhead):
        bob.open(forged, T0)
    assert bob.open(frames[1], T0) == b"v" and bob.open(frames[2], T0) == b"v"


def test_per_frame_keys_and_per_frame_chain_steps() -> None:
    for p in (SendParams(frames_per_key=1), SendParams(frames_per_key=25, per_frame_keys=True)):
        alice, bob = sessions(MediaConfig(dh_interval_s=0.5), offerer_params=p, answerer_params=p)
        exchange(alice, bob, 80, T0)
        assert bob.stats.opened == 80 and alice.stats.opened == 80
        assert bob.stats.peer_epoch >= 1


def test_stored_keys_are_bounded_in_count_and_age() -> None:
    cfg = MediaConfig(max_stored_keys=10, max_key_age_s=1.0)
    p = SendParams(frames_per_key=1)
    alice, bob = sessions(cfg, offerer_params=p, answerer_params=p)
    frames = [alice.seal(b"k", T0 + k * FRAME_S) for k in range(40)]
    assert bob.open(frames[39], T0 + 39 * FRAME_S) == b"k"  # skips 39 steps: keeps only 10
    assert len(bob.opener._keys) <= 10
    with pytest.raises(errors.ExpiredKey):
        bob.open(frames[5], T0 + 39 * FRAME_S)
    assert bob.open(frames[35], T0 + 39 * FRAME_S) == b"k"
    with pytest.raises(errors.ExpiredKey):
        bob.open(frames[36], T0 + 39 * FRAME_S + 1.5)  # aged out


def test_close_wipes_and_refuses() -> None:
    alice, bob = sessions()
    alice.close()
    bob.close()
    with pytest.raises(errors.SealError):
        alice.seal(b"x", T0)
    with pytest.raises(errors.FrameError):
        bob.open(b"\x00" * 30, T0)


def test_malformed_frames_raise_typed_errors() -> None:
    _, bob = sessions()
    for junk in (
        b"",
        b"\x00",
        b"\x40\x00\x00\x00",
        b"\x00\x00\x00\x00" + b"1" * 10,  # one byte short of header, control length and tag
        b"\x00\x00\x00\x00" + b"1" * 11,
    ):
        with pytest.raises(errors.FrameError):
            bob.open(junk, T0)
    assert sum(bob.stats.refused.values()) == 5
    assert bob.stats.refused["malformed-frame"] == 4


def test_frame_of_another_suite_is_refused() -> None:
    alice, bob = sessions()
    frame = bytearray(alice.seal(b"s", T0))
    frame[0] |= 0x80
    with pytest.raises(errors.WrongSuite):
        bob.open(bytes(frame), T0)


def test_an_authenticated_low_order_ratchet_key_is_never_acked_and_the_sender_re_announces() -> None:
    """A buggy (or compromised) sender announcing a low-order point: the receiver's X25519 fails, it counts it,
    keeps its state and sends no ack, so the sender never switches to a key the receiver cannot follow."""
    cfg = MediaConfig(dh_interval_s=0.5, max_skip_steps=8)
    p = SendParams(frames_per_key=1)
    alice, bob = sessions(cfg, offerer_params=p, answerer_params=p)
    now = exchange(alice, bob, 20, T0)
    alice.control_size(now + 0.5)  # alice decides her step now
    pend = alice.sealer._pending
    assert pend is not None
    alice.sealer._pending = __import__("dataclasses").replace(pend, public=bytes(32))
    now = exchange(alice, bob, 4, now + 0.5)
    assert bob.opener.bad_announcements >= 1 and bob.opener.dh_computations == 0
    assert alice.stats.local_epoch == 0 and bob.stats.peer_epoch == 0
    now = exchange(alice, bob, 10, now)  # (n - start) passes max_skip_steps // 2: a fresh key, acked, switched
    assert alice.stats.local_epoch == 1 == bob.stats.peer_epoch
    assert sum(bob.stats.refused.values()) == 0


def _forge(template: bytes, counter: int) -> bytes:
    word = int.from_bytes(template[:HEADER_LEN], "big")
    word = (word & ~((COUNTER_MOD - 1) << COUNTER_SHIFT)) | ((counter % COUNTER_MOD) << COUNTER_SHIFT)
    return word.to_bytes(4, "big") + os.urandom(40)


def test_forged_frames_never_make_the_receiver_derive_a_chain_step_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worst case per forged frame (issue 14, item 3): with one chain step per frame, 300 forged frames claiming
    steps up to max_skip_steps ahead cost at most max_skip_steps derivations in all (each step once), not one
    walk each; the genuine stream then opens every frame, and the steps it needs are not derived again."""
    calls = 0
    real = opener_module.kdf_ck

    def counting(ck: bytes) -> tuple[bytes, bytes]:
        nonlocal calls
        calls += 1
        return real(ck)

    monkeypatch.setattr(opener_module, "kdf_ck", counting)
    cfg = MediaConfig(max_skip_steps=200)
    p = SendParams(frames_per_key=1)
    alice, bob = sessions(cfg, offerer_params=p, answerer_params=p)
    genuine = [alice.seal(b"v" * 40, T0 + k * FRAME_S) for k in range(60)]
    assert bob.open(genuine[0], T0) == b"v" * 40
    calls = 0
    rng = __import__("random").Random(5)
    for _ in range(300):
        with pytest.raises(errors.FrameError):
            bob.open(_forge(genuine[1], rng.randrange(1, 200)), T0)
    assert calls <= 200
    forged_calls = calls
    for k in range(1, 60):
        assert bob.open(genuine[k], T0 + k * FRAME_S) == b"v" * 40
    assert calls == forged_calls  # the genuine frames found their steps already derived
    assert bob.stats.refused == {"tampered": 300} and bob.stats.opened == 60


def test_a_forged_frame_leaves_the_genuine_stream_as_it_was() -> None:
    """Interleaving forged frames (random counters and tags, current epoch) with a genuine stream changes nothing
    the genuine stream can see: every genuine frame opens once, in order or not, and replays are still refused."""
    rng = __import__("random").Random(9)
    p = SendParams(frames_per_key=3)
    alice, bob = sessions(MediaConfig(max_skip_steps=64), offerer_params=p, answerer_params=p)
    frames = [alice.seal(bytes([k % 256]) * 30, T0 + k * FRAME_S) for k in range(120)]
    order = list(range(120))
    for i in range(0, 120, 6):  # mild reordering inside the replay window
        chunk = order[i : i + 6]
        rng.shuffle(chunk)
        order[i : i + 6] = chunk
    for k in order:
        for _ in range(3):
            with pytest.raises(errors.FrameError):
                bob.open(_forge(frames[k], k + rng.randrange(1, 150)), T0 + k * FRAME_S)
        assert bob.open(frames[k], T0 + k * FRAME_S) == bytes([k % 256]) * 30
    with pytest.raises(errors.ReplayedFrame):
        bob.open(frames[100], T0 + 119 * FRAME_S)


def test_in_order_frames_after_a_forged_burst_take_their_steps_from_the_look_ahead() -> None:
    """A forged burst fills the look-ahead; the genuine stream that follows, in order, takes each new chain step
    from it (deriving it again beside the look-ahead left the two a step apart: every later out-of-order frame
    failed, as test_hostile_rtp found)."""
    rng = __import__("random").Random(3)
    p = SendParams(frames_per_key=5)
    alice, bob = sessions(MediaConfig(max_skip_steps=64), offerer_params=p, answerer_params=p)
    frames = [alice.seal(bytes([k % 256]) * 30, T0 + k * FRAME_S) for k in range(200)]
    assert bob.open(frames[0], T0) == bytes(30)
    for _ in range(50):
        with pytest.raises(errors.FrameError):
            bob.open(_forge(frames[7], rng.randrange(1, 300)), T0)
    for k in range(1, 150):
        assert bob.open(frames[k], T0 + k * FRAME_S) == bytes([k % 256]) * 30
    for k in (155, 151, 199, 170, 152):  # out of order, skipping steps: served from the look-ahead
        assert bob.open(frames[k], T0 + k * FRAME_S) == bytes([k % 256]) * 30
    assert bob.stats.opened == 155


def test_a_late_ack_of_a_replaced_key_never_makes_the_sender_switch() -> None:
    """Alice's announcement goes unacked (Bob's frames are held back) until she re-announces a fresh key for the
    same epoch. Bob's held acks then arrive: they name the old key, so she keeps her epoch; Bob's ack of the new
    key makes her switch, and Bob follows with the chain of the key he holds."""
    cfg = MediaConfig(dh_interval_s=0.5, max_skip_steps=16, reveal_period_s=0)
    p = SendParams(frames_per_key=1)
    alice, bob = sessions(cfg, offerer_params=p, answerer_params=p)
    now = exchange(alice, bob, 10, T0) + 0.5  # initial keys acked; alice decides at her next frame
    held = []
    first_key = None
    for k in range(12):  # alice → bob flows, bob → alice is held back
        t = now + k * FRAME_S
        assert bob.open(alice.seal(b"a", t), t) == b"a"
        if first_key is None and bob.opener._pending is not None:
            first_key = bob.opener._pending.public
        held.append((bob.seal(b"b", t), t))
    assert first_key is not None and held
    pend = alice.sealer._pending
    assert pend is not None and pend.public != first_key  # (n - start) passed 16 // 2: a fresh key
    assert bob.opener._pending is not None and bob.opener._pending.public == pend.public
    t = now + 12 * FRAME_S
    late_acks = 0
    for frame, _sent_at in held[:6]:  # acks of the first key only (bob learnt the second after 9 frames)
        assert alice.open(frame, t) == b"b"
        late_acks += alice.opener.last_control.key_ack is not None
        alice.seal(b"a", t)
    assert late_acks >= 1 and alice.stats.local_epoch == 0
    ack_of_new = bob.seal(b"b", t)
    assert alice.open(ack_of_new, t) == b"b" and alice.opener.last_control.key_ack is not None
    switched = alice.seal(b"a", t + FRAME_S)
    assert alice.stats.local_epoch == 1
    assert bob.open(switched, t + FRAME_S) == b"a" and bob.stats.peer_epoch == 1
