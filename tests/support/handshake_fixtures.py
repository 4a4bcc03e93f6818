"""Handshake test support: fixed identities, one-call helpers and re-signing of edited messages.

Test support only; nothing here is imported by ratchet/ or voipgw/.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from ratchet.handshake import (
    ANSWER_SIG_CONTEXT,
    OFFER_SIG_CONTEXT,
    AnswerMessage,
    HandshakeConfig,
    NonceCache,
    Offerer,
    OfferMessage,
    answer_offer,
)
from ratchet.identity import IdentityKey
from ratchet.params import SessionKeys, Suite

T0 = 1_767_225_600.0
ALICE_AOR = "alice@atlanta.example"
BOB_AOR = "bob@biloxi.example"
CALL_ID = "3848276298220188511@atlanta.example"
CLASSICAL = frozenset({Suite.X25519})
HYBRID = frozenset({Suite.X25519, Suite.X25519_MLKEM768})


def fixed_identity(name: str) -> IdentityKey:
    return IdentityKey.from_seed(hashlib.sha256(f"voipgw test identity {name}".encode()).digest())


ALICE = fixed_identity("alice")
BOB = fixed_identity("bob")
MALLORY = fixed_identity("mallory")


def make_offerer(
    suites: frozenset[Suite] = CLASSICAL,
    now: float = T0,
    identity: IdentityKey = ALICE,
    local_aor: str = ALICE_AOR,
    remote_aor: str = BOB_AOR,
    call_id: str = CALL_ID,
    **kwargs: Any,
) -> Offerer:
    return Offerer(identity, local_aor, remote_aor, call_id, HandshakeConfig(suites=suites, **kwargs), now)


def answer(
    offer_bytes: bytes,
    now: float = T0 + 0.1,
    suites: frozenset[Suite] = HYBRID,
    identity: IdentityKey = BOB,
    local_aor: str = BOB_AOR,
    cache: NonceCache | None = None,
    expected_remote_aor: str | None = None,
    call_id: str | None = None,
    **kwargs: Any,
) -> tuple[bytes, SessionKeys]:
    return answer_offer(
        identity,
        local_aor,
        offer_bytes,
        HandshakeConfig(suites=suites, **kwargs),
        now,
        cache if cache is not None else NonceCache(),
        expected_remote_aor=expected_remote_aor,
        call_id=call_id,
    )


def resign_offer(offer_bytes: bytes, identity: IdentityKey, **changes: Any) -> bytes:
    """The offer with ``changes`` applied, re-signed by ``identity`` (whose key replaces the offer's)."""
    msg = replace(OfferMessage.parse(offer_bytes), identity=identity.public.serialize(), **changes)
    body = msg.body()
    return body + identity.sign(OFFER_SIG_CONTEXT + body)


def resign_answer(answer_bytes: bytes, identity: IdentityKey, **changes: Any) -> bytes:
    msg = replace(AnswerMessage.parse(answer_bytes), identity=identity.public.serialize(), **changes)
    body = msg.body()
    return body + identity.sign(ANSWER_SIG_CONTEXT + body)


def flip_bit(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)
