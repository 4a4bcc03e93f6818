"""One complete handshake (offer, answer, accept) for the benchmark: both sides' CPU, fresh keys each time."""

from __future__ import annotations

import time

from ratchet.handshake import HandshakeConfig, NonceCache, Offerer, answer_offer
from ratchet.identity import IdentityKey
from ratchet.params import Suite

_ALICE = IdentityKey.generate()
_BOB = IdentityKey.generate()
_CLASSICAL = HandshakeConfig(suites=frozenset({Suite.X25519}))
_HYBRID = HandshakeConfig(suites=frozenset({Suite.X25519, Suite.X25519_MLKEM768}))


def handshake_once(hybrid: bool) -> None:
    config = _HYBRID if hybrid else _CLASSICAL
    now = time.time()
    offerer = Offerer(_ALICE, "alice@bench.example", "bob@bench.example", "bench-call", config, now)
    answer, keys_b = answer_offer(_BOB, "bob@bench.example", offerer.offer_bytes, config, now, NonceCache(60.0))
    keys_a = offerer.accept_answer(answer, now)
    assert keys_a.send_chain == keys_b.recv_chain
