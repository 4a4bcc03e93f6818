"""Test helper: a mirrored pair of SessionKeys as a real handshake would produce, without running one.

Lets the media-ratchet tests drive any parameters deterministically; the handshake tests check that the real
handshake produces exactly this mirror.
"""

from __future__ import annotations

import os

from ratchet.params import Role, SendParams, SessionKeys, Suite
from ratchet.sas import sas_commitment


def make_pair(
    interval_ms: int = 1000,
    offerer_params: SendParams | None = None,
    answerer_params: SendParams | None = None,
    call_id: str = "test-call@127.0.0.1",
    seed: bytes | None = None,
) -> tuple[SessionKeys, SessionKeys]:
    rnd = (lambda n, tag: (seed + tag).ljust(n, b"\x00")[:n]) if seed is not None else (lambda n, tag: os.urandom(n))
    o_params = offerer_params or SendParams()
    a_params = answerer_params or SendParams()
    root_o2a, root_a2o = rnd(32, b"r1"), rnd(32, b"r2")
    chain_o2a, chain_a2o = rnd(32, b"c1"), rnd(32, b"c2")
    time_o2a, time_a2o = rnd(32, b"t1"), rnd(32, b"t2")
    salt_o, salt_a = rnd(16, b"s1"), rnd(16, b"s2")
    sas_seed, sas_r, sas_s = rnd(32, b"ss"), rnd(16, b"sr"), rnd(16, b"sa")
    ident_o, ident_a = b"\x01" + rnd(32, b"io"), b"\x01" + rnd(32, b"ia")
    th = rnd(32, b"th")
    offer_commitment, answer_commitment = sas_commitment(sas_r, Role.OFFERER), sas_commitment(sas_s, Role.ANSWERER)

    def keys(role: Role) -> SessionKeys:
        off = role is Role.OFFERER
        return SessionKeys(
            suite=Suite.X25519,
            role=role,
            call_id=call_id,
            local_aor="alice@example.org" if off else "bob@example.org",
            remote_aor="bob@example.org" if off else "alice@example.org",
            local_identity=ident_o if off else ident_a,
            remote_identity=ident_a if off else ident_o,
            transcript_hash=th,
            interval_ms=interval_ms,
            send_params=o_params if off else a_params,
            recv_params=a_params if off else o_params,
            send_root=bytearray(root_o2a if off else root_a2o),
            recv_root=bytearray(root_a2o if off else root_o2a),
            send_chain=bytearray(chain_o2a if off else chain_a2o),
            recv_chain=bytearray(chain_a2o if off else chain_o2a),
            send_time_secret=bytearray(time_o2a if off else time_a2o),
            recv_time_secret=bytearray(time_a2o if off else time_o2a),
            send_stream_salt=salt_o if off else salt_a,
            recv_stream_salt=salt_a if off else salt_o,
            sas_seed=bytearray(sas_seed),
            sas_commitment=offer_commitment,
            answer_sas_commitment=answer_commitment,
            sas_secret=bytearray(sas_r if off else sas_s),
        )

    return keys(Role.OFFERER), keys(Role.ANSWERER)
