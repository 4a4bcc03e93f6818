"""Behaviour of the media Double Ratchet: sealing, opening, DH steps, loss, replay, skew and forged frames."""

from __future__ import annotations

import hmac
import os

import pytest

from ratchet import errors
from ratchet import opener as opener_module
from ratchet import sealer as sealer_module
from ratchet.chain import kdf_ck
from ratchet.events import LocalRatchetStep, PeerRatchetStep, SasCommitmentFailed, SasReady
from ratchet.frame import HEADER_LEN, split_frame
from ratchet.params import FrameSuite, SendParams
from ratchet.session import MediaConfig, MediaSession, announces
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


def test_round_trip_both_directions_and_steady_state_overhead_is_14_bytes() -> None:
    alice, bob = sessions()
    frame = b""
    for k in range(40):
        frame = alice.seal(b"p" * 60, T0 + k * FRAME_S)
        assert bob.open(frame, T0 + k * FRAME_S) == b"p" * 60
    assert not announces(39)
    assert len(frame) - 60 == 14
    assert alice.stats.sealed == 40 and bob.stats.opened == 40


def test_gcm_suite_overhead_is_20_bytes() -> None:
    p = SendParams(frame_suite=FrameSuite.AES256_GCM_128)
    alice, bob = sessions(offerer_params=p, answerer_params=p)
    frames = [alice.seal(b"q" * 60, T0 + k * FRAME_S) for k in range(20)]
    assert [bob.open(f, T0 + k * FRAME_S) for k, f in enumerate(frames)] == [b"q" * 60] * 20
    assert len(frames[-1]) - 60 == 4 + 16


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


def test_new_epoch_survives_loss_of_its_first_announcements() -> None:
    cfg = MediaConfig(dh_interval_s=1.0)
    alice, bob = sessions(cfg)
    now = exchange(alice, bob, 60, T0)  # alice stepped at 1 s, bob learned her keys
    # Force a fresh step on alice and lose frames 0..3 of the new epoch: frame 4 re-announces it (every 4th
    # frame in an epoch's first 128), so a burst that swallows the first announcements costs 3 frames more.
    now += 1.0
    lost = [alice.seal(b"z", now + k * FRAME_S) for k in range(4)]
    epoch = alice.stats.local_epoch
    assert all(split_frame(f)[1] is not None for f in lost[:3])
    assert split_frame(lost[3])[1] is None
    for k in range(4):
        bob.seal(b"y", now + k * FRAME_S)  # keep time moving on bob's side; alice hears nothing
    t = now + 4 * FRAME_S
    f4 = alice.seal(b"z", t)
    assert split_frame(f4)[1] is not None
    assert bob.open(f4, t) == b"z"
    assert bob.stats.peer_epoch == epoch
    with pytest.raises(errors.ReplayedFrame):
        bob.open(f4, t)


def test_frames_of_unannounced_epoch_are_refused_without_state_change() -> None:
    cfg = MediaConfig(dh_interval_s=1.0)
    alice, bob = sessions(cfg)
    now = exchange(alice, bob, 52, T0)
    now += 1.0
    frames = [alice.seal(b"w", now + k * FRAME_S) for k in range(4)]
    with pytest.raises(errors.UnknownEpoch):
        bob.open(frames[3], now)  # frame 3 of the new epoch carries no announcement
    assert bob.open(frames[0], now) == b"w"  # the announcing frame still opens afterwards
    assert bob.open(frames[3], now) == b"w"


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
    with pytest.raises(errors.ReplayedFrame, match=r"too-old|replayed"):
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
    forged_word = (word & ~(0x1FFF << 14)) | (4000 << 14)
    forged = forged_word.to_bytes(4, "big") + frames[1][HEADER_LEN:]
    with pytest.raises(errors.TooFarAhead):
        bob.open(forged, T0)
    assert bob.open(frames[1], T0) == b"v" and bob.open(frames[2], T0) == b"v"


def test_forged_epoch_announcement_is_refused_and_state_unchanged() -> None:
    alice, bob = sessions()
    exchange(alice, bob, 3, T0)
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from ratchet.frame import Extensions, RatchetKeyAnnouncement, encode_extensions, header_word

    pub = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ext = encode_extensions(Extensions(RatchetKeyAnnouncement(1, 0, 3, pub)))
    aad = header_word(0, True, 1, 3, 0, 0).to_bytes(4, "big") + ext
    with pytest.raises(errors.KeyDesync):
        bob.open(aad + os.urandom(30), T0 + 0.1)
    assert bob.stats.peer_epoch == 0
    exchange(alice, bob, 3, T0 + 0.2)


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
        b"\x40\x00\x00\x00\x05\x01",
        b"\x00\x00\x00\x00" + b"1" * 5,
    ):
        with pytest.raises(errors.FrameError):
            bob.open(junk, T0)
    assert sum(bob.stats.refused.values()) == 5


def test_frame_of_another_suite_is_refused() -> None:
    alice, bob = sessions()
    frame = bytearray(alice.seal(b"s", T0))
    frame[0] |= 0x80
    with pytest.raises(errors.WrongSuite):
        bob.open(bytes(frame), T0)


def test_low_order_ratchet_key_is_a_bad_extension_and_changes_nothing() -> None:
    from ratchet.frame import Extensions, RatchetKeyAnnouncement, encode_extensions, header_word

    alice, bob = sessions()
    exchange(alice, bob, 3, T0)
    ext = encode_extensions(Extensions(RatchetKeyAnnouncement(1, 0, 3, bytes(32))))
    aad = header_word(0, True, 1, 3, 0, 0).to_bytes(4, "big") + ext
    with pytest.raises(errors.ExtensionError):
        bob.open(aad + os.urandom(30), T0 + 0.1)
    assert bob.stats.peer_epoch == 0 and bob.stats.refused["bad-extension"] == 1
    exchange(alice, bob, 3, T0 + 0.2)


def _forge(template: bytes, counter: int) -> bytes:
    word = int.from_bytes(template[:HEADER_LEN], "big")
    word = (word & ~(0x1FFF << 14) & ~(1 << 30)) | ((counter & 0x1FFF) << 14)  # no extensions: straight to the keys
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


def test_in_order_frames_after_a_forged_burst_open_on_the_fast_path() -> None:
    """A forged burst fills the look-ahead; the genuine stream that follows, in order, opens each new chain step
    on the fast path, which must take its step from the look-ahead (deriving it again beside the look-ahead left
    the two a step apart: every later out-of-order frame failed, as test_hostile_rtp found)."""
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
