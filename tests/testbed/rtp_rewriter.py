"""A UDP media relay for tests that rewrites every RTP header the way B2BUAs and media relays do: a new SSRC per
direction, sequence numbers shifted (with occasional jumps) and timestamps shifted. Payloads are untouched.

Side A is where the callee sends (its SDP points there); the caller latches onto side B. Loopback only,
bounded lifetime, its own thread.
"""

from __future__ import annotations

import random
import select
import socket
import struct
import threading
import time

Address = tuple[str, int]


class RtpRewriter:
    def __init__(self, *, seed: int = 7, lifetime_s: float = 60.0) -> None:
        self._rng = random.Random(seed)
        self.sock_a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock_b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock_a.bind(("127.0.0.1", 0))
        self.sock_b.bind(("127.0.0.1", 0))
        self.peer_a: Address | None = None
        """The caller's RTP address (from its SDP); packets arriving on side A are sent there from side B."""
        self.peer_b: Address | None = None
        """Learnt from the first packet the callee sends to side A."""
        self.ssrc = {"a": self._rng.getrandbits(32), "b": self._rng.getrandbits(32)}
        self.seq_offset = {"a": self._rng.getrandbits(16), "b": self._rng.getrandbits(16)}
        self.ts_offset = {"a": self._rng.getrandbits(32), "b": self._rng.getrandbits(32)}
        self.rewritten = {"a": 0, "b": 0}
        self.seen_in: dict[str, set[int]] = {"a": set(), "b": set()}
        self._deadline = time.monotonic() + lifetime_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp-rewriter", daemon=True)

    @property
    def addr_a(self) -> Address:
        host, port = self.sock_a.getsockname()
        return (host, port)

    def __enter__(self) -> RtpRewriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock_a.close()
        self.sock_b.close()

    def _rewrite(self, side: str, data: bytes) -> bytes:
        if len(data) < 12 or data[0] >> 6 != 2 or 192 <= data[1] <= 223:
            return data  # not RTP (RTCP goes on the other port and is not relayed here)
        seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
        self.seen_in[side].add(ssrc)
        if self._rng.random() < 0.01:
            self.seq_offset[side] = (self.seq_offset[side] + self._rng.randint(100, 5000)) & 0xFFFF
        self.rewritten[side] += 1
        return (
            data[:2]
            + struct.pack(
                "!HII",
                (seq + self.seq_offset[side]) & 0xFFFF,
                (ts + self.ts_offset[side]) & 0xFFFFFFFF,
                self.ssrc[side],
            )
            + data[12:]
        )

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            ready, _, _ = select.select([self.sock_a, self.sock_b], [], [], 0.1)
            for sock in ready:
                data, addr = sock.recvfrom(65535)
                if sock is self.sock_a:  # from the callee, to the caller
                    self.peer_b = addr
                    if self.peer_a is not None:
                        self.sock_b.sendto(self._rewrite("a", data), self.peer_a)
                elif self.peer_b is not None:  # from the caller (latched on side B), to the callee
                    self.sock_a.sendto(self._rewrite("b", data), self.peer_b)
