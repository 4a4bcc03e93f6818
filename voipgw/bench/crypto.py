"""``voipgw bench crypto``: per-frame seal+open and handshake cost against pylibsrtp, in the same run; the worst
forged-frame cost; the average overhead of a default call and of a padded CBR stream (wire v3).

Rounds interleave every candidate with the SRTP baseline and report medians, because these machines are noisy
(absolute ±40%, interleaved ratios ±5%).
"""

from __future__ import annotations

import os
import random
import statistics
import struct
import time
from collections.abc import Callable

from ratchet.errors import FrameError
from ratchet.frame import COUNTER_MOD, COUNTER_SHIFT, HEADER_LEN
from ratchet.params import DEFAULT_INTERVAL_MS, Role, SendParams, SessionKeys, Suite
from ratchet.sas import sas_commitment
from ratchet.session import MediaConfig, MediaSession

PAYLOAD_LEN = 60
FRAME_S = 0.02
T0 = 1_700_000_000.0


def _mirrored_keys(params: SendParams, interval_ms: int = DEFAULT_INTERVAL_MS) -> tuple[SessionKeys, SessionKeys]:
    r = os.urandom
    secrets = [r(32) for _ in range(6)]
    salts = [r(16), r(16)]
    seed, secret, answer_secret = r(32), r(16), r(16)

    def build(role: Role) -> SessionKeys:
        off = role is Role.OFFERER
        a, b = (0, 1) if off else (1, 0)
        return SessionKeys(
            suite=Suite.X25519,
            role=role,
            call_id="bench@127.0.0.1",
            local_aor="a@bench",
            remote_aor="b@bench",
            local_identity=b"\x01" + bytes(32),
            remote_identity=b"\x01" + bytes(32),
            transcript_hash=bytes(32),
            interval_ms=interval_ms,
            send_params=params,
            recv_params=params,
            send_root=bytearray(secrets[a]),
            recv_root=bytearray(secrets[b]),
            send_chain=bytearray(secrets[2 + a]),
            recv_chain=bytearray(secrets[2 + b]),
            send_time_secret=bytearray(secrets[4 + a]),
            recv_time_secret=bytearray(secrets[4 + b]),
            send_stream_salt=salts[a],
            recv_stream_salt=salts[b],
            sas_seed=bytearray(seed),
            sas_commitment=sas_commitment(secret, Role.OFFERER),
            answer_sas_commitment=sas_commitment(answer_secret, Role.ANSWERER),
            sas_secret=bytearray(secret if off else answer_secret),
        )

    return build(Role.OFFERER), build(Role.ANSWERER)


def _session_pair(params: SendParams, config: MediaConfig) -> tuple[MediaSession, MediaSession]:
    """A sending and a receiving session of one call, built from mirrored keys."""
    ko, ka = _mirrored_keys(params)
    return MediaSession(ko, T0, config), MediaSession(ka, T0, config)


class _RatchetLoop:
    """Seal on one side and open on the other, with the call clock advancing 20 ms per frame."""

    def __init__(self, params: SendParams, config: MediaConfig) -> None:
        self.tx, self.rx = _session_pair(params, config)
        self.now = T0
        self.payload = os.urandom(PAYLOAD_LEN)
        # Let both learn each other's ratchet keys so DH steps happen on schedule.
        for _ in range(3):
            self.tx.open(self.rx.seal(self.payload, self.now), self.now)
            self.rx.open(self.tx.seal(self.payload, self.now), self.now)

    def run_two_way(self, n: int) -> float:
        """Per seal+open over ``n`` frames each way, interleaved as in a call: the peer's frames (and the acks in
        them) cross every 20 ms, so an announcement is acked within a few frames instead of after a batch."""
        a_seal, a_open, b_seal, b_open = self.tx.seal, self.tx.open, self.rx.seal, self.rx.open
        payload, now = self.payload, self.now
        start = time.perf_counter()
        for _ in range(n):
            b_open(a_seal(payload, now), now)
            a_open(b_seal(payload, now), now)
            now += FRAME_S
        elapsed = time.perf_counter() - start
        self.now = now
        return elapsed / (2 * n) * 1e6

    def run(self, n: int) -> float:
        """One way only, the peer's frames (acks) sent back after the batch: an announcement waits a whole batch
        for its ack and is repeated (general path) meanwhile, which a two-way call never does."""
        seal, open_, payload = self.tx.seal, self.rx.open, self.payload
        now = self.now
        start = time.perf_counter()
        for _ in range(n):
            open_(seal(payload, now), now)
            now += FRAME_S
        elapsed = time.perf_counter() - start
        self.now = now
        # Outside the timed loop: a few frames back, so acks flow and DH steps complete as in a two-way call.
        for _ in range(3):
            self.tx.open(self.rx.seal(payload, now), now)
        return elapsed / n * 1e6


class _ForgedLoop:
    """The receiver's cost of a forged frame at its worst: a stranger who read one header off the wire sends frames
    of the current epoch whose counters claim a chain step up to ``max_skip_steps`` ahead, with random tags. Each
    claims a step at random, so no frame finds its step derived unless an earlier one derived it."""

    def __init__(self, params: SendParams, config: MediaConfig, seed: int = 7) -> None:
        self.tx, self.rx = _session_pair(params, config)
        self.now = T0
        self.payload = os.urandom(PAYLOAD_LEN)
        for _ in range(3):
            self.rx.open(self.tx.seal(self.payload, self.now), self.now)
        self.template = self.tx.seal(self.payload, self.now)
        self.reach = min(config.max_skip_steps * params.frames_per_key, COUNTER_MOD // 2) - 1
        self.rng = random.Random(seed)

    def _forged(self) -> bytes:
        word = int.from_bytes(self.template[:HEADER_LEN], "big")
        counter = (3 + self.rng.randrange(1, self.reach)) % COUNTER_MOD
        word = (word & ~((COUNTER_MOD - 1) << COUNTER_SHIFT)) | (counter << COUNTER_SHIFT)
        return word.to_bytes(HEADER_LEN, "big") + os.urandom(len(self.template) - HEADER_LEN)

    def run(self, n: int) -> float:
        frames = [self._forged() for _ in range(n)]
        open_, now = self.rx.open, self.now
        start = time.perf_counter()
        for frame in frames:
            try:
                open_(frame, now)
            except FrameError:
                pass
        return (time.perf_counter() - start) / n * 1e6


class _GenuineOpenLoop:
    """Open cost alone of genuine in-order frames (sealed outside the timed loop), the forged frame's yardstick."""

    def __init__(self, params: SendParams, config: MediaConfig) -> None:
        self.tx, self.rx = _session_pair(params, config)
        self.now = T0
        self.payload = os.urandom(PAYLOAD_LEN)

    def run(self, n: int) -> float:
        frames = []
        for k in range(n):
            frames.append((self.tx.seal(self.payload, self.now + k * FRAME_S), self.now + k * FRAME_S))
        self.now += n * FRAME_S
        open_ = self.rx.open
        start = time.perf_counter()
        for frame, t in frames:
            open_(frame, t)
        return (time.perf_counter() - start) / n * 1e6


def forged_cost(config: MediaConfig, rounds: int = 9, batch: int = 400) -> dict[str, float]:
    """Worst forged-frame cost over the sender settings that make it dearest, against a genuine open of the same
    settings measured in the same rounds (``forged_frame_worst_us``, ``ratio_forged_worst_vs_genuine``)."""
    worst_us, worst_ratio = 0.0, 0.0
    for params in (SendParams(), SendParams(frames_per_key=1), SendParams(frames_per_key=1, per_frame_keys=True)):
        forged, genuine = _ForgedLoop(params, config), _GenuineOpenLoop(params, config)
        forged.run(batch)
        genuine.run(batch)
        f_samples, ratios = [], []
        for _ in range(rounds):
            g0 = genuine.run(batch)
            f = forged.run(batch)
            g1 = genuine.run(batch)
            f_samples.append(f)
            ratios.append(f / ((g0 + g1) / 2))
        worst_us = max(worst_us, statistics.median(f_samples))
        worst_ratio = max(worst_ratio, statistics.median(ratios))
    return {"forged_frame_worst_us": worst_us, "ratio_forged_worst_vs_genuine": worst_ratio}


class _SrtpLoop:
    def __init__(self) -> None:
        from pylibsrtp import Policy, Session

        key = os.urandom(30)
        self.tx = Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        self.rx = Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
        self.seq = 0
        self.payload = os.urandom(PAYLOAD_LEN)

    def run(self, n: int) -> float:
        # Packets are built outside the timed loop: only protect + unprotect are measured, as for seal + open.
        packets = []
        for _ in range(n):
            self.seq += 1
            s = self.seq
            packets.append(struct.pack("!BBHII", 0x80, 111, s & 0xFFFF, s * 960 & 0xFFFFFFFF, 0x1234) + self.payload)
        protect, unprotect = self.tx.protect, self.rx.unprotect
        start = time.perf_counter()
        for packet in packets:
            unprotect(protect(packet))
        return (time.perf_counter() - start) / n * 1e6


def _handshake_ms(hybrid: bool, rounds: int) -> float:
    from voipgw.bench.handshake_cost import handshake_once

    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        handshake_once(hybrid)
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def average_overhead(params: SendParams, config: MediaConfig, seconds: float) -> float:
    """Mean bytes added per frame over a two-way call of ``seconds`` without padding (header, control length byte,
    control TLVs: initial keys, acks, SAS reveal, DH-step announcements; tag)."""
    loop = _RatchetLoop(params, config)
    frames = int(seconds / FRAME_S)
    total = 0
    for _ in range(frames):
        sealed = loop.tx.seal(loop.payload, loop.now)
        loop.rx.open(sealed, loop.now)
        loop.tx.open(loop.rx.seal(loop.payload, loop.now), loop.now)
        total += len(sealed) - PAYLOAD_LEN
        loop.now += FRAME_S
    return total / frames


def average_overhead_padded(
    params: SendParams, config: MediaConfig, seconds: float, p: int = PAYLOAD_LEN
) -> dict[str, float]:
    """A CBR stream padded to payload size ``p`` (wire v3, §B.2): the codec gets ``p - control_size`` bytes per
    frame, so every frame is ``4 + 1 + p + tag`` bytes. Returns the mean bytes per frame that are not audio (header,
    control, padding, tag), the mean audio bytes given up to control, and how many frame lengths were seen."""
    loop = _RatchetLoop(params, config)
    loop.tx.set_payload_size(p)
    loop.rx.set_payload_size(p)
    frames = int(seconds / FRAME_S)
    overhead = given_up = 0
    lengths: set[int] = set()
    for _ in range(frames):
        now = loop.now
        content = loop.payload[: p - loop.tx.control_size(now)]
        sealed = loop.tx.seal(content, now)
        loop.rx.open(sealed, now)
        back = loop.rx.seal(loop.payload[: p - loop.rx.control_size(now)], now)
        loop.tx.open(back, now)
        overhead += len(sealed) - len(content)
        given_up += p - len(content)
        lengths.add(len(sealed))
        loop.now += FRAME_S
    return {
        "overhead_bytes_avg_padded_cbr": overhead / frames,
        "audio_bytes_given_up_avg_padded_cbr": given_up / frames,
        "frame_lengths_padded_cbr": float(len(lengths)),
    }


def run(rounds: int = 41, batch: int = 600, handshake_rounds: int = 30) -> dict[str, float]:
    """Measure everything; each candidate's ratio is taken per round against the SRTP batches run just
    before and after it, and the medians are reported (robust to other load on the machine)."""
    config = MediaConfig()
    srtp = _SrtpLoop()
    candidates: dict[str, Callable[[int], float]] = {
        "seal_open_us_default": _RatchetLoop(SendParams(), config).run_two_way,
        "seal_open_us_default_one_way": _RatchetLoop(SendParams(), config).run,
        "seal_open_us_per_frame_rekey": _RatchetLoop(SendParams(per_frame_keys=True), config).run,
        "seal_open_us_chain_step_per_frame": _RatchetLoop(SendParams(frames_per_key=1), config).run,
    }
    srtp.run(batch)
    for fn in candidates.values():
        fn(batch)  # warm up
    srtp_samples: list[float] = []
    samples: dict[str, list[float]] = {k: [] for k in candidates}
    ratios: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            before = srtp.run(batch)
            value = fn(batch)
            after = srtp.run(batch)
            srtp_samples += [before, after]
            samples[name].append(value)
            ratios[name].append(value / ((before + after) / 2))
    out: dict[str, float] = {"srtp_protect_unprotect_us": statistics.median(srtp_samples)}
    for name in candidates:
        out[name] = statistics.median(samples[name])
    out["ratio_default_vs_srtp"] = statistics.median(ratios["seal_open_us_default"])
    out["ratio_default_one_way_vs_srtp"] = statistics.median(ratios["seal_open_us_default_one_way"])
    out["ratio_per_frame_rekey_vs_srtp"] = statistics.median(ratios["seal_open_us_per_frame_rekey"])
    out["ratio_chain_step_per_frame_vs_srtp"] = statistics.median(ratios["seal_open_us_chain_step_per_frame"])
    loop = _RatchetLoop(SendParams(), config)
    steady = [len(loop.tx.seal(loop.payload, loop.now + k * FRAME_S)) for k in range(3, 40)]
    out["overhead_bytes_default"] = float(min(steady) - PAYLOAD_LEN)
    out["overhead_bytes_avg_default_call"] = average_overhead(SendParams(), config, 120.0)
    out.update(average_overhead_padded(SendParams(), config, 120.0))
    out.update(forged_cost(config))
    out["handshake_ms_x25519"] = _handshake_ms(False, handshake_rounds)
    out["handshake_ms_hybrid"] = _handshake_ms(True, handshake_rounds)
    return out
