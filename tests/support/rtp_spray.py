"""The media attacker of the gateway tests: finds every UDP port a process has bound, sprays it with RTP from
another loopback address (127.0.0.66) carrying a tone, and counts what comes back to it (a leg that latched or
moved would send the far end's audio here)."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

from tests.testbed.capture import encode_g711
from voipgw.audio.wav import read_wav
from voipgw.rtp.packet import build_rtp

ATTACKER_HOST = "127.0.0.66"
PAYLOAD_TYPES = (0, 8, 9, 111)
"""PCMU, PCMA, G.722 and our Opus number: whatever a leg negotiated, some of the spray is of its type."""
FRAME_SAMPLES = 160


def udp_ports(pid: int) -> list[int]:
    """The UDP ports ``pid`` has bound on loopback (from ``ss``; the SIP port included)."""
    out = subprocess.run(["ss", "-Huanp"], capture_output=True, text=True, check=True).stdout
    ports = set()
    for line in out.splitlines():
        if f"pid={pid}," in line:
            m = re.search(r"127\.0\.0\.1:(\d+)\s", line)
            if m is not None:
                ports.add(int(m.group(1)))
    return sorted(ports)


class Sprayer:
    """A thread that sends RTP (a G.711 tone) to every port in ``ports`` from ATTACKER_HOST until stopped, and
    counts every datagram that reaches its socket."""

    def __init__(self, ports: list[int], tone: Path, interval_s: float = 0.002) -> None:
        self.ports = ports
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ATTACKER_HOST, 0))
        self.sock.settimeout(0.0)
        pcm = read_wav(tone).astype(np.float64) / 32768.0
        self.frames = [encode_g711(pcm[i : i + FRAME_SAMPLES], "PCMU") for i in range(0, len(pcm), FRAME_SAMPLES)]
        self.interval_s = interval_s
        self.sent = 0
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp-spray", daemon=True)

    def __enter__(self) -> Sprayer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        time.sleep(0.3)  # anything a moved leg still sends arrives now
        self._drain()
        self.sock.close()

    def _drain(self) -> None:
        while True:
            try:
                self.received.append(self.sock.recvfrom(4096))
            except (BlockingIOError, OSError):
                return

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            frame = self.frames[seq % len(self.frames)]
            for port in self.ports:
                for pt in PAYLOAD_TYPES:
                    data = build_rtp(pt, seq & 0xFFFF, seq * FRAME_SAMPLES, 0x66660000 + pt, frame)
                    try:
                        self.sock.sendto(data, ("127.0.0.1", port))
                        self.sent += 1
                    except OSError:
                        pass
            seq += 1
            self._drain()
            time.sleep(self.interval_s)


def send_spoofed(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
    """One UDP datagram whose IP source is ``src`` (a raw socket: needs root), as an attacker on the phone's
    network would forge the phone's own address and port. IPv4; UDP checksum 0 (none, RFC 768)."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(src[0]),
        socket.inet_aton(dst[0]),
    )
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        raw.sendto(header + udp, (dst[0], 0))
