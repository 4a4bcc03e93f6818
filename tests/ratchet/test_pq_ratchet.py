"""The in-call post-quantum ratchet (PROTOCOL.md §B.12) between two real sessions over a simulated lossy,
reordering path: both sides converge on the same root keys (or report the stall), no frame is lost at a switch,
every frame keeps one size, and classical calls are untouched."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ratchet.events import Degradation, LocalPqStep, MediaDegraded, MediaRestored, PeerPqStep
from ratchet.frame import parse_control, split_plaintext
from ratchet.params import Suite
from ratchet.pq_chunks import CHUNK_TLV_LEN
from ratchet.session import MediaConfig, MediaSession
from tests.support.pq_call import PAYLOAD, T0, PqCall, make_pq_call
from tests.support.ratchet_pairs import make_pair
from voipgw.erasure import ZfecCoder


def _roots_agree(call: PqCall) -> bool:
    return bytes(call.a.sealer._root) == bytes(call.b.opener._root) and bytes(call.b.sealer._root) == bytes(
        call.a.opener._root
    )


def test_a_hybrid_call_completes_pq_epochs_both_ways_without_losing_a_frame() -> None:
    call = make_pq_call(MediaConfig(pq_interval_s=10.0))
    call.run(40.0)
    for side, peer in (("a", "b"), ("b", "a")):
        local = call.of(side, LocalPqStep)
        assert len(local) >= 2
        # every step we switched to is one the peer authenticated, with the same exchange and epoch
        peer_steps = {(e.exchange, e.epoch) for e in call.of(peer, PeerPqStep)}  # type: ignore[attr-defined]
        assert {(e.exchange, e.epoch) for e in local} <= peer_steps | {(local[-1].exchange, local[-1].epoch)}  # type: ignore[attr-defined]
        for e in local:
            assert e.at - e.started_at < 10.0  # type: ignore[attr-defined]
    assert call.ab.refused == call.ba.refused == 0
    assert call.ab.lengths == call.ba.lengths == {4 + 1 + PAYLOAD + 10}
    assert _roots_agree(call)
    assert call.a.stats.pq_epochs >= 4 and call.a.pq_epochs == call.a.stats.pq_epochs
    assert not call.a.stats.pq_refused and not call.b.stats.pq_refused


def test_a_chunk_is_16_bytes_and_never_rides_beside_a_ratchet_key_or_sas_reveal() -> None:
    call = make_pq_call(MediaConfig(pq_interval_s=2.0), payload_size=None)
    chunks = 0
    now = T0
    for _ in range(600):
        frame = call.a.seal(b"x" * 40, now)
        plain_len = len(frame) - 4 - 10
        ctl_len = plain_len - 1 - 40
        control = call.b.opener.last_control
        call.b.open(frame, now)
        control = call.b.opener.last_control
        if control.pq_chunk is not None:
            chunks += 1
            assert len(control.pq_chunk) + 2 == CHUNK_TLV_LEN == 16
            assert control.ratchet_key is None and control.sas_reveal is None
            assert ctl_len <= 16 + 8 + 10 + 3
        call.a.open(call.b.seal(b"y" * 40, now), now)
        now += 0.02
    assert chunks > 100


def test_a_classical_call_with_a_coder_is_byte_identical_to_one_without() -> None:
    def stream(coder: bool) -> list[bytes]:
        ko, ka = make_pair(interval_ms=1000, seed=b"classical")
        assert ko.suite is Suite.X25519
        keys = iter(range(1000))

        def keygen() -> X25519PrivateKey:
            return X25519PrivateKey.from_private_bytes(hashlib.sha256(b"k%d" % next(keys)).digest())

        cfg = MediaConfig(dh_interval_s=2.0, pq_interval_s=1.0)
        a = MediaSession(ko, T0, cfg, keygen=keygen, coder=ZfecCoder() if coder else None)
        b = MediaSession(ka, T0, cfg, keygen=keygen, coder=ZfecCoder() if coder else None, reveal_at_start=True)
        assert a.pq is None and b.pq is None
        out = []
        for i in range(300):
            now = T0 + i * 0.02
            out.append(a.seal(b"a" * 50, now))
            b.open(out[-1], now)
            out.append(b.seal(b"b" * 50, now))
            a.open(out[-1], now)
        return out

    assert stream(True) == stream(False)


def test_pq_classical_setting_runs_it_on_a_classical_call() -> None:
    call = make_pq_call(MediaConfig(pq_interval_s=5.0, pq_classical=True), suite=Suite.X25519)
    call.run(20.0)
    assert call.a.stats.pq_local_epochs >= 1 and call.b.stats.pq_local_epochs >= 1
    assert _roots_agree(call)


def test_a_peer_without_the_pq_ratchet_stalls_ours_visibly_and_the_call_goes_on() -> None:
    cfg = MediaConfig(pq_interval_s=4.0, pq_stall_s=6.0, dh_interval_s=5.0)
    call = make_pq_call(cfg, coder_b=False)
    call.run(30.0)
    stalled = [e for e in call.of("a", MediaDegraded) if e.reason is Degradation.PQ_STALLED]  # type: ignore[attr-defined]
    assert len(stalled) == 1 and stalled[0].since - T0 <= 2.0 + 6.0 + 0.1  # type: ignore[attr-defined]
    assert Degradation.PQ_STALLED in call.a.stats.degraded
    assert call.a.stats.pq_local_epochs == 0
    # the classical ratchet keeps stepping both ways, and no frame is lost
    assert call.a.stats.local_steps >= 3 and call.b.stats.local_steps >= 3
    assert call.ab.refused == call.ba.refused == 0
    assert _roots_agree(call)
    # the abandoned exchange stops costing bytes: chunks went out for at most the stall bound per interval
    assert call.a.stats.pq_chunks_sent < 0.6 * call.a.stats.sealed


def test_a_stall_is_restored_by_the_next_completed_epoch() -> None:
    cfg = MediaConfig(pq_interval_s=3.0, pq_stall_s=8.0)
    call = make_pq_call(cfg)
    call.ab.drop = lambda: True  # the path drops every a→b frame: a's exchange cannot complete
    call.run(11.0)
    assert Degradation.PQ_STALLED in call.a.stats.degraded
    call.ab.drop = lambda: False
    call.run(20.0)
    restored = [e for e in call.of("a", MediaRestored) if e.reason is Degradation.PQ_STALLED]  # type: ignore[attr-defined]
    assert len(restored) == 1
    assert Degradation.PQ_STALLED not in call.a.stats.degraded
    assert call.a.stats.pq_local_epochs >= 1
    assert _roots_agree(call)


@settings(max_examples=40, deadline=None)
@given(
    loss=st.sampled_from([0.0, 0.1, 0.3, 0.5]),
    burst=st.floats(1.0, 12.0),
    reorder=st.sampled_from([0.0, 0.05, 0.2]),
    seed=st.integers(0, 2**16),
)
def test_both_sides_converge_or_report_the_stall_under_any_loss_and_reordering(
    loss: float, burst: float, reorder: float, seed: int
) -> None:
    cfg = MediaConfig(pq_interval_s=4.0, pq_stall_s=12.0, dh_interval_s=7.0)
    call = make_pq_call(cfg, loss=loss, burst=burst, reorder=reorder, seed=seed)
    call.run(30.0)
    call.ab.drop = call.ba.drop = lambda: False
    call.ab.reorder = call.ba.reorder = 0.0
    call.run(3.0)  # a clean tail: every step decided is seen in use
    assert call.ab.refused == 0 and call.ba.refused == 0  # no delivered frame lost, at a switch or elsewhere
    assert _roots_agree(call)
    for side in ("a", "b"):
        stalled = any(e.reason is Degradation.PQ_STALLED for e in call.of(side, MediaDegraded))  # type: ignore[attr-defined]
        assert call.of(side, LocalPqStep) or stalled
    assert not call.a.stats.pq_refused and not call.b.stats.pq_refused


def test_the_chunk_tlv_parses_as_unknown_padding_to_a_receiver_without_pq() -> None:
    """An old receiver skips type 0x06 (unknown TLVs are skipped): our parser keeps it as raw bytes, any length."""
    control = parse_control(bytes([0x06, 3, 1, 2, 3]))
    assert control.pq_chunk == b"\x01\x02\x03"
    block, content = split_plaintext(bytes([5, 0x06, 3, 1, 2, 3]) + b"audio")
    assert content == b"audio" and parse_control(block).pq_chunk == b"\x01\x02\x03"


def test_the_sealer_fast_path_never_swallows_a_chunk() -> None:
    """While a PQ message goes out every frame carries its chunk (or a 42-byte item instead); otherwise none does:
    the fast path, which seals frames without control, hands over exactly when an exchange starts or an answer is
    due (its deadline and the shared-state version)."""
    call = make_pq_call(MediaConfig(pq_interval_s=3.0, dh_interval_s=4.0))
    assert call.a.pq is not None
    now = T0
    fast_frames = 0
    for _ in range(2500):
        for tx, rx in ((call.a, call.b), (call.b, call.a)):
            assert tx.pq is not None
            tx.control_size(now)
            sending = tx.pq.sending()
            fast = tx.sealer._fast is not None
            rx.open(tx.seal(b"z" * 40, now), now)
            control = rx.opener.last_control
            if sending:
                assert not fast
                assert control.pq_chunk is not None or control.ratchet_key is not None or control.sas_reveal is not None
            else:
                assert control.pq_chunk is None
                fast_frames += fast
        now += 0.02
    assert call.a.stats.pq_epochs >= 4
    assert fast_frames > 500  # the fast path still carries frames between exchanges
