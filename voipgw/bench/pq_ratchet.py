"""``voipgw bench pq-ratchet``: the in-call post-quantum ratchet (docs/PROTOCOL.md §B.12) between two real media
sessions keyed by a real hybrid handshake, over a simulated path with bursty (Gilbert) loss at 50 frames/s on a
simulated clock: how long a PQ epoch takes, what it costs in bytes per frame and in CPU, and whether a frame is lost
at a switch. Measures only; it asserts nothing."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ratchet.errors import FrameError
from ratchet.events import LocalPqStep, PeerPqStep
from ratchet.handshake import HandshakeConfig, NonceCache, Offerer, answer_offer
from ratchet.identity import IdentityKey
from ratchet.params import SessionKeys, Suite
from ratchet.pq_chunks import CHUNK_TLV_LEN
from ratchet.session import MediaConfig, MediaSession
from voipgw.erasure import ZfecCoder

FRAME_S = 0.02
PAYLOAD = 60
"""The CBR payload size voipgw sets: a chunk takes its 16 bytes from the audio, the frame keeps its size."""
MEAN_BURST = 5.0
"""Mean loss-burst length in frames (100 ms)."""
LOSSES = (0.0, 0.1, 0.3)
SWITCH_WINDOW_S = 1.0
"""A refused frame within this long of a PQ switch counts as lost at the switch-over."""
T0 = 1_700_000_000.0
GOAL_EPOCH_S = 10.0
GOAL_EXTRA_BYTES = 16.0


def _gilbert(rate: float, rnd: random.Random) -> Callable[[], bool]:
    p_end = 1.0 / MEAN_BURST
    p_start = rate * p_end / (1.0 - rate) if rate > 0 else 0.0
    state = [False]

    def drop() -> bool:
        bad = state[0]
        state[0] = (rnd.random() >= p_end) if bad else (rnd.random() < p_start)
        return bad

    return drop


def _hybrid_keys() -> tuple[SessionKeys, SessionKeys]:
    config = HandshakeConfig(suites=frozenset({Suite.X25519, Suite.X25519_MLKEM768}))
    offerer = Offerer(IdentityKey.generate(), "alice@bench.example", "bob@bench.example", "pq-bench", config, T0)
    answer, keys_b = answer_offer(
        IdentityKey.generate(), "bob@bench.example", offerer.offer_bytes, config, T0, NonceCache(60.0)
    )
    keys_a = offerer.accept_answer(answer, T0)
    assert keys_a.suite is Suite.X25519_MLKEM768
    return keys_a, keys_b


@dataclass
class _Run:
    epochs: list[float] = field(default_factory=list)
    """Seconds from an exchange's start to both sides switched, per completed PQ epoch."""
    switches: list[float] = field(default_factory=list)
    refused_at: list[float] = field(default_factory=list)
    frames: int = 0
    pq_bytes: int = 0
    cpu_s: float = 0.0


def _call(loss: float, seed: int, seconds: float, pq: bool, config: MediaConfig) -> _Run:
    ka, kb = _hybrid_keys()
    a = MediaSession(ka, T0, config, coder=ZfecCoder() if pq else None)
    b = MediaSession(kb, T0, config, coder=ZfecCoder() if pq else None, reveal_at_start=True)
    a.set_payload_size(PAYLOAD)
    b.set_payload_size(PAYLOAD)
    drops = {"ab": _gilbert(loss, random.Random(seed * 2)), "ba": _gilbert(loss, random.Random(seed * 2 + 1))}
    run = _Run()
    local: dict[tuple[str, int, int], LocalPqStep] = {}
    peer: dict[tuple[str, int, int], float] = {}
    now = T0
    cpu0 = time.process_time()
    for _ in range(round(seconds / FRAME_S)):
        for name, tx, rx in (("ab", a, b), ("ba", b, a)):
            frame = tx.seal(bytes(PAYLOAD - tx.control_size(now)), now)
            if not drops[name]():
                try:
                    rx.open(frame, now)
                except FrameError:
                    run.refused_at.append(now)
        for name, s, other in (("a", a, "b"), ("b", b, "a")):
            while (ev := s.next_event()) is not None:
                if isinstance(ev, LocalPqStep):
                    local[(name, ev.exchange, ev.epoch)] = ev
                    run.switches.append(ev.at)
                elif isinstance(ev, PeerPqStep):
                    peer[(other, ev.exchange, ev.epoch)] = ev.at
        now += FRAME_S
    run.cpu_s = time.process_time() - cpu0
    for key, ev in local.items():
        seen = peer.get(key)
        if seen is not None:
            run.epochs.append(max(ev.at, seen) - ev.started_at)
    run.frames = a.stats.sealed + b.stats.sealed
    # every chunk TLV, and the one byte a RATCHET_KEY_PQ adds to a RATCHET_KEY
    run.pq_bytes = CHUNK_TLV_LEN * (a.stats.pq_chunks_sent + b.stats.pq_chunks_sent)
    run.pq_bytes += a.stats.pq_announcements_sent + b.stats.pq_announcements_sent
    return run


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(loss: float, calls: int, seconds: float, config: MediaConfig) -> dict[str, float | int | None]:
    """One loss rate: ``calls`` calls with the PQ ratchet and, interleaved, the same calls (same loss patterns)
    without it; the CPU difference per completed epoch is the PQ ratchet's cost."""
    with_pq: list[_Run] = []
    without: list[_Run] = []
    for seed in range(calls):
        with_pq.append(_call(loss, seed, seconds, True, config))
        without.append(_call(loss, seed, seconds, False, config))
    epochs = [e for r in with_pq for e in r.epochs]
    frames = sum(r.frames for r in with_pq)
    lost = sum(1 for r in with_pq for t in r.refused_at if any(abs(t - s) <= SWITCH_WINDOW_S for s in r.switches))
    extra_cpu = sum(r.cpu_s for r in with_pq) - sum(r.cpu_s for r in without)
    return {
        "pq_epochs": len(epochs),
        "pq_epoch_s_p50": _percentile(epochs, 0.5),
        "pq_epoch_s_p99": _percentile(epochs, 0.99),
        "pq_epoch_s_max": max(epochs) if epochs else None,
        "extra_bytes_per_frame": sum(r.pq_bytes for r in with_pq) / frames,
        "extra_bytes_per_frame_while_exchanging": float(CHUNK_TLV_LEN),
        "cpu_us_per_epoch": extra_cpu / len(epochs) * 1e6 if epochs else None,
        "frames_lost_at_switch": lost,
        "frames_refused_total": sum(len(r.refused_at) for r in with_pq),
        "frames": frames,
    }


def run(calls: int = 3, seconds: float = 600.0, config: MediaConfig | None = None) -> dict[str, object]:
    cfg = config or MediaConfig()
    out: dict[str, object] = {
        "frames_per_s": round(1 / FRAME_S),
        "mean_burst_frames": MEAN_BURST,
        "calls_per_loss": calls,
        "call_s": seconds,
        "pq_interval_s": cfg.pq_interval_s,
        "payload_size": PAYLOAD,
        "goal_pq_epoch_s": GOAL_EPOCH_S,
        "goal_extra_bytes_per_frame": GOAL_EXTRA_BYTES,
        "goal_frames_lost_at_switch": 0,
    }
    for loss in LOSSES:
        out[f"loss_{round(loss * 100)}"] = measure(loss, calls, seconds, cfg)
    return out
