"""What the in-call post-quantum ratchet buys (PROTOCOL.md §B.12): a recorded call whose classical secrets are all
revealed — the root key just before a PQ epoch boundary (what a state compromise before the exchange plus a quantum
break of every later X25519 step yields), every X25519 ratchet private key and the time secret — still cannot be
decrypted past that boundary without the ML-KEM-768 secret. The test derives the post-boundary keys both ways."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ratchet.chain import kdf_ck
from ratchet.events import LocalPqStep
from ratchet.frame import chain_id, frame_key, make_aead, nonce_prefix
from ratchet.kdf import kdf_rk, kdf_rk_pq
from ratchet.params import FrameSuite, Suite
from ratchet.session import MediaConfig, MediaSession
from tests.support.pq_call import T0
from tests.support.ratchet_pairs import make_pair
from voipgw.erasure import ZfecCoder


def _open(frame: bytes, chain: bytes, start: int, n: int, epoch: int, time_key: bytes, fpk: int) -> bytes:
    ck = chain
    mk = b""
    for _ in range((n - start) // fpk + 1):
        mk, ck = kdf_ck(ck)
    aead = make_aead(FrameSuite.AES256_CCM_80, frame_key(mk, time_key))
    return aead.decrypt(nonce_prefix(FrameSuite.AES256_CCM_80, epoch) + n.to_bytes(8, "big"), frame[4:], frame[:4])


def test_revealed_classical_secrets_do_not_open_frames_past_a_pq_epoch_boundary() -> None:
    ko, ka = make_pair(interval_ms=1000)
    ko.suite = ka.suite = Suite.X25519_MLKEM768
    fpk = ko.send_params.frames_per_key
    x25519_keys: list[X25519PrivateKey] = []  # every ratchet private key of both sides: "revealed"

    def keygen() -> X25519PrivateKey:
        x25519_keys.append(X25519PrivateKey.generate())
        return x25519_keys[-1]

    cfg = MediaConfig(pq_interval_s=4.0, dh_interval_s=1000.0)
    a = MediaSession(ko, T0, cfg, keygen=keygen, coder=ZfecCoder())
    b = MediaSession(ka, T0, cfg, keygen=keygen, coder=ZfecCoder(), reveal_at_start=True)
    assert a.pq is not None
    now = T0
    record: list[tuple[bytes, int, float]] = []  # the a→b frames an eavesdropper records (frame, counter, time)
    root_before = b""
    secret = b""
    step: LocalPqStep | None = None
    announced: tuple[int, bytes] | None = None  # (b's key index the step used, a's new public key)
    while step is None:
        assert now - T0 < 20.0
        root_before = bytes(a.sealer._root)
        pend = a.sealer._pending
        if pend is not None and pend.pq is not None:
            announced = (pend.peer_epoch, pend.public)
        ready = a.pq.ready()
        secret = ready[1] if ready is not None else secret
        n = a.sealer.sealed
        frame = a.seal(b"secret audio", now)
        record.append((frame, n, now))
        b.open(frame, now)
        a.open(b.seal(b"reply", now), now)
        while (ev := a.next_event()) is not None:
            if isinstance(ev, LocalPqStep):
                step = ev
        now += 0.02
    # the switch happened at a's last frame: it is the first frame of the PQ epoch; b opened it
    frame, n, at = record[-1]
    epoch = step.epoch
    assert b.opener.peer_epoch == epoch and secret
    pend_start = b.opener._chains[epoch].start

    # Everything classical: the root just before the boundary, the DH of the step (from the revealed private keys:
    # a's new ratchet key and b's key it named), and the time key of the frame's interval.
    assert announced is not None
    b_index, a_public = announced
    a_key = next(k for k in x25519_keys if k.public_key().public_bytes_raw() == a_public)
    b_key = next(k for k in x25519_keys if k.public_key().public_bytes_raw() == b._state.own_public[b_index])
    dh = a_key.exchange(b_key.public_key())
    assert dh == b_key.exchange(a_key.public_key())
    time_key = a.sealer._tks.key(a.sealer._tks.interval_at(at))

    # With the ML-KEM secret: the receiver's chain and root, and the frame opens.
    root_pq, chain_pq = kdf_rk_pq(root_before, dh, secret)
    assert chain_id(chain_pq) == b.opener._chains[epoch].ident
    assert root_pq == bytes(b.opener._root)
    assert _open(frame, chain_pq, pend_start, n, epoch, time_key, fpk).endswith(b"secret audio")

    # Without it (the classical derivation, or any guess of the secret): other keys, and the frame does not open.
    for root_c, chain_c in (kdf_rk(root_before, dh), kdf_rk_pq(root_before, dh, bytes(32))):
        assert chain_id(chain_c) != b.opener._chains[epoch].ident and root_c != bytes(b.opener._root)
        with pytest.raises(InvalidTag):
            _open(frame, chain_c, pend_start, n, epoch, time_key, fpk)
