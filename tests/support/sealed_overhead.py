"""Bytes a sealed stream spends beyond the codec at CBR 60 bytes (24 kbps Opus), by DH interval, on a simulated
clock with real MediaSessions: ``python -m tests.support.sealed_overhead`` prints them."""

from __future__ import annotations

from ratchet.session import MediaConfig, MediaSession
from tests.support.ratchet_pairs import make_pair
from voipgw.audio.opus import MIN_BUDGET

P = 60
FRAMES = 6000
"""Two minutes of 20 ms frames."""


def measure(dh_interval_s: float) -> tuple[float, float, int, int]:
    """(wire bytes per frame, overhead = wire - Opus bytes, frames left without audio, our DH steps)."""
    ko, ka = make_pair(interval_ms=2000)
    cfg = MediaConfig(dh_interval_s=dh_interval_s)
    a, b = MediaSession(ko, 0.0, cfg), MediaSession(ka, 0.0, cfg)
    a.set_payload_size(P)
    b.set_payload_size(P)
    b.reveal_sas()
    wire = opus = starved = 0
    for i in range(FRAMES):
        now = i * 0.02
        budget = P - a.control_size(now)
        content = bytes(budget if budget >= MIN_BUDGET else 0)
        starved += budget < MIN_BUDGET
        frame = a.seal(content, now)
        wire += len(frame)
        opus += len(content)
        back = b.seal(bytes(P - b.control_size(now)), now)  # both send before either hears the other: a real RTT
        b.open(frame, now)
        a.open(back, now)
        while a.next_event() is not None or b.next_event() is not None:
            pass
    return wire / FRAMES, (wire - opus) / FRAMES, starved, a.stats.local_epoch


def main() -> None:
    for dh in (30.0, 5.0, 2.0):
        per_frame, overhead, starved, steps = measure(dh)
        print(
            f"dh_interval_s {dh:4.0f}: wire {per_frame:.1f} B/frame, overhead {overhead:.2f} B/frame, "
            f"frames without audio {starved} of {FRAMES} ({100 * starved / FRAMES:.2f} %), DH steps {steps}"
        )


if __name__ == "__main__":
    main()
