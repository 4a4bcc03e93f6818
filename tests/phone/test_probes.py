"""The SAS-probing guard (voipgw.probes): unanswered secure calls per peer AOR and per identity key, in a sliding
window; past the limit the peer's calls reveal only at the answer, and each crossing is one alert."""

from __future__ import annotations

import pytest

from voipgw.probes import MAX_PEERS, EndedBefore, ProbeGuard, RevealPoint

KEY_A, KEY_B = b"\x05" + b"a" * 32, b"\x05" + b"b" * 32


def test_a_few_unanswered_calls_change_nothing() -> None:
    guard = ProbeGuard(limit=3, window_s=600)
    for t in range(3):
        assert not guard.note_unanswered("m@x.org", KEY_A, EndedBefore.ANSWER, 100.0 + t)
    assert guard.reveal_point("m@x.org", KEY_A, 110.0) is RevealPoint.RING
    assert guard.alerts == 0 and guard.suspects(110.0) == []


def test_crossing_the_limit_alerts_once_and_moves_the_reveal_to_the_answer() -> None:
    guard = ProbeGuard(limit=3, window_s=600)
    crossed = [guard.note_unanswered("m@x.org", KEY_A, EndedBefore.ANSWER, 100.0 + t) for t in range(6)]
    assert crossed == [False, False, False, True, False, False]
    assert guard.alerts == 1
    assert guard.reveal_point("m@x.org", None, 200.0) is RevealPoint.ANSWER
    assert guard.reveal_point("other@x.org", KEY_A, 200.0) is RevealPoint.ANSWER  # same key, another AOR
    assert guard.reveal_point("other@x.org", KEY_B, 200.0) is RevealPoint.RING
    assert guard.suspects(200.0) == ["m@x.org"]
    assert guard.ended == {EndedBefore.REVEAL: 0, EndedBefore.ANSWER: 6}


@pytest.mark.parametrize("key_of", [lambda i: KEY_A, lambda i: bytes([i]) * 33])
def test_fresh_identities_do_not_escape_the_aor_count(key_of) -> None:  # type: ignore[no-untyped-def]
    """An attacker who is not a known contact can sign each attempt with a fresh key; the AOR it claims (the one
    the callee sees) is counted on its own."""
    guard = ProbeGuard(limit=2, window_s=600)
    for i in range(3):
        guard.note_unanswered("alice@x.org", key_of(i), EndedBefore.REVEAL, 10.0 + i)
    assert guard.reveal_point("alice@x.org", b"\x05" + b"z" * 32, 20.0) is RevealPoint.ANSWER


def test_the_window_forgets() -> None:
    guard = ProbeGuard(limit=1, window_s=60)
    guard.note_unanswered("m@x.org", None, EndedBefore.ANSWER, 0.0)
    guard.note_unanswered("m@x.org", None, EndedBefore.ANSWER, 1.0)
    assert guard.reveal_point("m@x.org", None, 30.0) is RevealPoint.ANSWER
    assert guard.reveal_point("m@x.org", None, 61.5) is RevealPoint.RING
    assert guard.suspects(61.5) == []


def test_a_flood_of_peers_is_bounded() -> None:
    guard = ProbeGuard(limit=1, window_s=600)
    for i in range(MAX_PEERS + 50):
        guard.note_unanswered(f"p{i}@x.org", None, EndedBefore.REVEAL, 1.0)
    assert len(guard._seen) <= MAX_PEERS
