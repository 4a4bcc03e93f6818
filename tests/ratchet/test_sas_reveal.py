"""The two-sided SAS (protocol version 3) in the media layer (PROTOCOL.md §A.6, §B.8): who reveals what and when,
who can compute the SAS at each point, forged and swapped reveals, and the silent-probing attack of issue 13 run
against real MediaSessions from a real handshake on a simulated clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratchet import errors
from ratchet.events import Event, SasCommitmentFailed, SasReady
from ratchet.handshake import AnswerMessage, HandshakeConfig, Offerer
from ratchet.params import Role
from ratchet.sas import compute_sas, sas_commitment
from ratchet.session import MediaConfig, MediaSession
from tests.support.handshake_fixtures import ALICE_AOR, BOB_AOR, CALL_ID, T0, answer, fixed_identity, flip_bit
from tests.support.ratchet_pairs import make_pair

FRAME_S = 0.02


def drain(s: MediaSession) -> list[Event]:
    out = []
    while (ev := s.next_event()) is not None:
        out.append(ev)
    return out


def reveal_in(receiver: MediaSession, frame: bytes, now: float) -> bytes | None:
    """The SAS_REVEAL value a sealed frame carries inside its ciphertext, if any (``receiver`` opens it)."""
    receiver.open(frame, now)
    return receiver.opener.last_control.sas_reveal


def pair(config: MediaConfig | None = None, **kwargs: object) -> tuple[MediaSession, MediaSession, bytes, bytes]:
    """Offerer and answerer sessions from mirrored keys, plus (r, s)."""
    ko, ka = make_pair(**kwargs)  # type: ignore[arg-type]
    assert ko.sas_secret is not None and ka.sas_secret is not None
    r, s = bytes(ko.sas_secret), bytes(ka.sas_secret)
    return MediaSession(ko, T0, config), MediaSession(ka, T0, config), r, s


# --- who reveals what, and when --------------------------------------------------------------------------------


def test_offerer_reveals_r_from_the_start_and_the_answerer_reveals_s_only_after_reveal_sas() -> None:
    alice, bob, r, s = pair()
    assert alice.sas_revealed and not bob.sas_revealed
    now = T0
    before = []
    carried = []
    for _ in range(200):  # 4 s
        a_frame, b_frame = alice.seal(b"a" * 60, now), bob.seal(b"b" * 60, now)
        carried.append(reveal_in(bob, a_frame, now))
        before.append(reveal_in(alice, b_frame, now))
        now += FRAME_S
    assert carried[0] == r and set(carried) == {None, r}
    assert all(v is None for v in before)  # s never left Bob before reveal_sas()
    assert alice.sas is None and bob.sas is not None
    bob.reveal_sas()
    bob.reveal_sas()  # idempotent
    alice.reveal_sas()  # a no-op at the offerer
    assert bob.sas_revealed and alice.sas_revealed
    first = bob.seal(b"b" * 60, now)
    assert reveal_in(alice, first, now) == s  # the next frame carries it (no ratchet key is due here)
    assert alice.sas == bob.sas
    assert [type(e) for e in drain(alice)].count(SasReady) == 1


def test_the_reveal_period_starts_at_the_first_frame_sealed_after_reveal_sas() -> None:
    cfg = MediaConfig(reveal_period_s=2.0, dh_interval_s=0)
    alice, bob, _, s = pair(cfg)
    bob.reveal_sas()  # the call layer's ring point, long before Bob's next frame
    start = T0 + 10.0
    frames = [(start + k * FRAME_S, bob.seal(b"b" * 60, start + k * FRAME_S)) for k in range(250)]
    seen = [(t, reveal_in(alice, f, t)) for t, f in frames]
    carrying = [t for t, v in seen if v == s]
    assert carrying and carrying[0] == start
    assert max(carrying) < start + 2.0
    assert all(v is None for t, v in seen if t >= start + 2.0)


def test_frames_look_the_same_before_and_after_the_reveal() -> None:
    """With a payload size set, the frames that carry s are as long as every other frame: the reveal is inside the
    ciphertext, so a relay cannot tell when the answerer's phone rang."""
    alice, bob, _, s = pair(MediaConfig(dh_interval_s=0))
    bob.set_payload_size(80)
    now = T0
    sizes = set()
    carried = 0
    for k in range(300):
        if k == 150:
            bob.reveal_sas()
        frame = bob.seal(b"b" * (80 - bob.control_size(now)), now)
        sizes.add(len(frame))
        carried += reveal_in(alice, frame, now) == s
        now += FRAME_S
    assert sizes == {4 + 1 + 80 + 10}
    assert carried >= 10


# --- who can compute the SAS at each point ----------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(st.binary(min_size=4, max_size=4), st.integers(min_value=1, max_value=120))
def test_property_both_sides_agree_only_after_both_reveals(seed: bytes, frames_before_ring: int) -> None:
    ko, ka = make_pair(seed=seed)
    assert ko.sas_secret is not None and ka.sas_secret is not None
    expected = compute_sas(ko.sas_seed, ko.sas_secret, ka.sas_secret)
    alice, bob = MediaSession(ko, T0), MediaSession(ka, T0)
    now = T0
    for _ in range(frames_before_ring):
        bob.open(alice.seal(b"a" * 40, now), now)
        alice.open(bob.seal(b"b" * 40, now), now)
        now += FRAME_S
        assert alice.sas is None  # the offerer has no SAS before the answerer's reveal
        assert not any(isinstance(e, SasReady) for e in drain(alice))
    assert bob.sas == expected  # the answerer has it after r, before its own reveal
    bob.reveal_sas()
    alice.open(bob.seal(b"b" * 40, now), now)
    assert alice.sas == bob.sas == expected
    assert not alice.sas_failed and not bob.sas_failed


def test_answerer_shows_the_sas_before_revealing_s() -> None:
    alice, bob, _, _ = pair()
    bob.open(alice.seal(b"a", T0), T0)  # the offerer's first frame carries r (its ratchet key the second)
    assert [type(e) for e in drain(bob)] == [SasReady]
    assert bob.sas is not None and not bob.sas_revealed


# --- forged and swapped reveals -----------------------------------------------------------------------------


def _run(alice: MediaSession, bob: MediaSession, frames: int, now: float) -> float:
    for _ in range(frames):
        bob.open(alice.seal(b"a" * 40, now), now)
        alice.open(bob.seal(b"b" * 40, now), now)
        now += FRAME_S
    return now


def test_a_reveal_of_s_that_does_not_open_the_answers_commitment_fails_at_the_offerer() -> None:
    ko, ka = make_pair()
    ko.answer_sas_commitment = sas_commitment(bytes(16), Role.ANSWERER)  # the answer committed to another s
    alice, bob = MediaSession(ko, T0), MediaSession(ka, T0)
    bob.reveal_sas()
    _run(alice, bob, 100, T0)
    assert alice.sas is None and alice.sas_failed
    kinds = [type(e) for e in drain(alice)]
    assert kinds.count(SasCommitmentFailed) == 1 and SasReady not in kinds


def test_reflecting_the_offerers_r_as_s_is_detected() -> None:
    """A man in the middle answering Alice copies her commitment into its answer and later "reveals" her own r
    back as s (so that it never had to commit to anything of its own): the labels differ per role, so the
    offerer label's commitment never opens as an answer commitment."""
    ko, ka = make_pair()
    assert ko.sas_secret is not None
    r = bytes(ko.sas_secret)
    ka.sas_secret = bytearray(r)
    ko.answer_sas_commitment = ka.answer_sas_commitment = ko.sas_commitment
    alice, bob = MediaSession(ko, T0), MediaSession(ka, T0)
    bob.reveal_sas()
    _run(alice, bob, 20, T0)
    assert alice.sas_failed and alice.sas is None


def test_a_forged_r_fails_at_the_answerer_and_no_sas_follows() -> None:
    ko, ka = make_pair()
    ka.sas_commitment = sas_commitment(bytes(16), Role.OFFERER)  # the offer committed to another r
    alice, bob = MediaSession(ko, T0), MediaSession(ka, T0)
    now = _run(alice, bob, 50, T0)
    bob.reveal_sas()
    _run(alice, bob, 50, now)
    assert bob.sas is None and bob.sas_failed
    assert SasReady not in [type(e) for e in drain(bob)]
    assert alice.sas is not None  # Bob's s opened the answer's commitment; the users still see Bob's failure


# --- the wire ------------------------------------------------------------------------------------------------


def test_every_bit_of_the_answers_commitment_is_signed() -> None:
    offerer = Offerer(fixed_identity("alice"), ALICE_AOR, BOB_AOR, CALL_ID, HandshakeConfig(), T0)
    wire, bob_keys = answer(offerer.offer_bytes)
    assert wire[35:51] == bob_keys.answer_sas_commitment == AnswerMessage.parse(wire).sas_commitment
    for bit in range(35 * 8, 51 * 8):
        with pytest.raises(errors.BadSignature):
            offerer.accept_answer(flip_bit(wire, bit), T0 + 0.2)
    assert offerer.accept_answer(wire, T0 + 0.2).answer_sas_commitment == bob_keys.answer_sas_commitment


# --- the silent-probing attack (issue 13) ---------------------------------------------------------------------


def test_a_man_in_the_middle_offering_to_bob_cannot_learn_bobs_sas_before_bobs_phone_rings() -> None:
    """Mallory is the offerer toward Bob (a gateway or an auto-answering phone that answers at once) and holds
    every key of that leg, so she opens every frame Bob seals. In version 1 she knew Bob's SAS from his answer
    and could abort, silently, every attempt whose SAS would not match Alice's. Here Bob's session seals a
    minute of audio and announcing frames across DH steps while its call layer has not reached the ring point
    (reveal_sas() not called): Mallory opens them all and still cannot compute the SAS. She learns it only from
    Bob's reveal, which the call layer makes after the phone rings, i.e. after the attempt became visible."""
    mallory_identity = fixed_identity("mallory-as-alice")
    cfg = MediaConfig(dh_interval_s=5.0)
    mallory_offer = Offerer(mallory_identity, ALICE_AOR, BOB_AOR, CALL_ID, HandshakeConfig(), T0)
    wire, bob_keys = answer(mallory_offer.offer_bytes, expected_remote_aor=ALICE_AOR)
    mallory_keys = mallory_offer.accept_answer(wire, T0 + 0.05)
    assert mallory_keys.sas_secret is not None
    r_m = bytes(mallory_keys.sas_secret)
    seed = bytes(mallory_keys.sas_seed)  # everything of the leg but s: the transcript, the seed, her own r
    mallory, bob = MediaSession(mallory_keys, T0 + 0.1, cfg), MediaSession(bob_keys, T0 + 0.1, cfg)
    now = T0 + 0.1
    for _ in range(3000):  # 60 s of 20 ms frames both ways
        bob.open(mallory.seal(b"m" * 60, now), now)  # Mallory reveals r_M as the protocol asks
        frame = bob.seal(b"b" * 60, now)
        assert mallory.open(frame, now) == b"b" * 60  # she opens every frame Bob seals...
        assert mallory.opener.last_control.sas_reveal is None  # ...and none carries s
        now += FRAME_S
    assert bob.stats.local_epoch >= 10 and bob.stats.announcements_sent > 10  # keys announced across DH steps
    assert bob.sas is not None  # Bob could already show the SAS on his ringing display
    assert mallory.sas is None and not mallory.sas_failed
    assert not any(isinstance(e, SasReady) for e in drain(mallory))
    # What she can compute is a guess over s: each candidate gives another SAS, so the answer fixes nothing.
    guesses = {compute_sas(seed, r_m, bytes([k]) * 16) for k in range(32)}
    assert len(guesses) >= 31 and bob.sas not in guesses
    # Her only way to Bob's SAS is his reveal, which comes after the ring.
    bob.reveal_sas()
    mallory.open(bob.seal(b"b" * 60, now), now)
    assert mallory.sas == bob.sas
