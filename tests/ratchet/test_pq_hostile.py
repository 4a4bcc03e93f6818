"""A hostile peer of the in-call post-quantum ratchet (PROTOCOL.md §B.12): authenticated frames carrying garbage
chunks, conflicting chunks, endless partial messages, wrong digests, invalid keys, ciphertexts for exchanges we
never ran and steps naming unknown exchanges. Each is refused with its typed reason, memory stays bounded, every
frame's audio still plays and the call goes on."""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratchet.errors import (
    BadPqKey,
    ConflictingPqChunk,
    MalformedPqChunk,
    PqChunkError,
    PqDigestMismatch,
    PqPartialEvicted,
    UnexpectedPqChunk,
    UnknownPqExchange,
)
from ratchet.frame import TLV_PQ_CHUNK
from ratchet.pq_chunks import CHUNK_VALUE_LEN, ENCAPS_KEY_LEN, SHARE_LEN, Kind, blocks_needed, encode_message
from ratchet.pq_ratchet import PqRatchet
from ratchet.session import MediaConfig
from tests.support.pq_call import T0, PqCall, make_pq_call
from voipgw.erasure import ZfecCoder

Script = Callable[[int], bytes | None]
"""(frames the hostile side has sealed) -> the PQ_CHUNK TLV its next frame carries."""


class _Hostile(PqRatchet):
    """The peer's PQ ratchet replaced by a script: it sends whatever chunk TLVs the script gives, runs no exchange
    of its own, and can claim a completed exchange (``claim``) so that its sealer announces RATCHET_KEY_PQ."""

    def __init__(self, base: PqRatchet, script: Script, claim: tuple[int, bytes] | None = None) -> None:
        self.__dict__.update(base.__dict__)
        self._script = script
        self._claim = claim
        self._n = 0

    def tick(self, now: float) -> None:
        pass

    def next_tlv(self) -> bytes | None:
        return self._script(self._n)

    def sending(self) -> bool:
        return True

    def commit_sent(self) -> None:
        self._n += 1

    def ready(self) -> tuple[int, bytes] | None:
        return self._claim


def _chunk(head: int, index: int, share: bytes) -> bytes:
    return bytes([TLV_PQ_CHUNK, 2 + len(share), head, index]) + share


def _hostile_call(script: Script, claim: tuple[int, bytes] | None = None) -> PqCall:
    """a honest, b hostile; b's own frames are otherwise genuine (its DH ratchet, acks and audio work)."""
    call = make_pq_call(MediaConfig(pq_interval_s=1.0, pq_stall_s=8.0, dh_interval_s=3.0))
    assert call.b.pq is not None
    call.b._state.pq = _Hostile(call.b.pq, script, claim)
    return call


def _healthy(call: PqCall) -> None:
    """The hostile peer's frames all opened (their audio plays), and the call's classical ratchet still steps."""
    assert call.ba.refused == 0 and call.ba.opened == call.ba.sent
    assert call.ab.refused == 0
    assert call.a.stats.peer_steps >= 1 and call.a.stats.local_steps >= 1
    assert call.a.pq is not None and call.a.pq.partial_shares < blocks_needed(Kind.ENCAPS_KEY)


def test_garbage_chunks_are_refused_as_malformed() -> None:
    rnd = random.Random(1)
    call = _hostile_call(lambda n: _chunk(rnd.randrange(256), 0, os.urandom(rnd.choice([0, 1, 11, 13, 40]))))
    call.run(10.0)
    assert call.a.stats.pq_refused[MalformedPqChunk.reason] > 400
    _healthy(call)


def test_conflicting_chunks_refuse_the_exchange_and_keep_nothing() -> None:
    # share 0 of key exchange 5, then share 0 again with other bytes, then more shares of exchange 5
    def script(n: int) -> bytes:
        return _chunk(5, 0 if n < 2 else n, bytes([n]) * SHARE_LEN)

    call = _hostile_call(script)
    call.run(6.0)
    refused = call.a.stats.pq_refused
    assert refused[ConflictingPqChunk.reason] == 1
    assert refused[UnexpectedPqChunk.reason] > 200  # the refused exchange's further chunks, none stored
    assert call.a.pq is not None and call.a.pq.partial_shares == 0
    _healthy(call)


def test_endless_partial_messages_hold_at_most_one_message_per_kind() -> None:
    peak = 0

    def script(n: int) -> bytes:
        # a new key exchange id every 50 frames, never enough shares to finish one
        return _chunk((n // 50) % 128, n % 256, os.urandom(SHARE_LEN))

    call = _hostile_call(script)
    for _ in range(60):
        call.run(0.5)
        assert call.a.pq is not None
        peak = max(peak, call.a.pq.partial_shares)
    assert peak < 2 * blocks_needed(Kind.ENCAPS_KEY)  # one partial key, plus our own exchange's ciphertext
    assert call.a.stats.pq_refused[PqPartialEvicted.reason] >= 25
    _healthy(call)


def test_a_message_failing_its_digest_is_refused_after_decoding() -> None:
    call = _hostile_call(lambda n: _chunk(7, n % 256, os.urandom(SHARE_LEN)))
    call.run(5.0)
    assert call.a.stats.pq_refused[PqDigestMismatch.reason] == 1
    assert call.a.pq is not None and call.a.pq.answer_secret(7) is None
    _healthy(call)


def test_a_verified_key_ml_kem_refuses_is_refused() -> None:
    tlvs = encode_message(ZfecCoder(), Kind.ENCAPS_KEY, 9, b"\xff" * ENCAPS_KEY_LEN)
    call = _hostile_call(lambda n: tlvs[n % 256])
    call.run(5.0)
    assert call.a.stats.pq_refused[BadPqKey.reason] == 1
    assert call.a.pq is not None and call.a.pq.answer_secret(9) is None
    _healthy(call)


def test_ciphertext_chunks_for_an_exchange_we_never_ran_are_refused_unstored() -> None:
    call = _hostile_call(lambda n: _chunk(0x80 | 77, n % 256, os.urandom(SHARE_LEN)))
    call.run(5.0)
    assert call.a.stats.pq_refused[UnexpectedPqChunk.reason] > 200
    assert call.a.pq is not None and call.a.pq.partial_shares == 0
    _healthy(call)


def test_a_step_naming_an_exchange_we_never_answered_is_never_acked() -> None:
    call = _hostile_call(lambda n: None, claim=(42, os.urandom(32)))
    call.run(8.0)
    assert call.a.stats.pq_refused[UnknownPqExchange.reason] >= 1
    assert call.a.stats.peer_steps == 0  # the step cannot be followed, so it is never acked or used
    assert call.b.stats.local_steps == 0
    assert call.ba.refused == 0 and call.ab.refused == 0


@pytest.mark.parametrize("length", [CHUNK_VALUE_LEN - 1, CHUNK_VALUE_LEN + 1])
def test_a_chunk_of_the_wrong_length_never_costs_the_frame(length: int) -> None:
    call = _hostile_call(lambda n: bytes([TLV_PQ_CHUNK, length]) + bytes(length))
    call.run(2.0)
    assert call.ba.opened == call.ba.sent
    assert call.a.stats.pq_refused[MalformedPqChunk.reason] >= 50  # not beside the initial key or SAS reveal


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=20), max_size=400), st.integers(0, 3))
def test_any_chunk_values_raise_only_typed_refusals_in_bounded_memory(values: list[bytes], seed: int) -> None:
    """The PQ ratchet's receive path over arbitrary authenticated values (plus well-formed chunks with random
    heads and indexes): a ``PqChunkError`` or nothing, and never more than one partial message per kind."""
    call = make_pq_call(MediaConfig(pq_interval_s=1.0))
    pq = call.a.pq
    assert pq is not None
    pq.tick(T0 + 2.0)  # our own exchange is running: ciphertext chunks for it are stored
    rnd = random.Random(seed)
    for value in values:
        for v in (value, bytes([rnd.randrange(256), rnd.randrange(256)]) + rnd.randbytes(SHARE_LEN)):
            try:
                pq.receive(v, T0 + 2.0)
            except PqChunkError:
                pass
            assert pq.partial_shares < blocks_needed(Kind.ENCAPS_KEY) + blocks_needed(Kind.CIPHERTEXT)
