"""A raw loopback sniffer (AF_PACKET) and the TCP byte streams it reassembles, to read SIP over TCP as it was sent."""

from __future__ import annotations

import socket
import struct
import threading
from collections import defaultdict
from dataclasses import dataclass
from types import TracebackType

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
MAX_PACKETS = 400_000


@dataclass(frozen=True)
class IpPacket:
    proto: int
    src_port: int
    dst_port: int
    payload: bytes
    fragment: bool
    """More-fragments set or a non-zero fragment offset."""


class LoopbackSniffer:
    """Every IPv4 packet on `lo` (AF_PACKET, root): TCP and UDP with ports and payload, fragments flagged."""

    def __init__(self) -> None:
        self.packets: list[IpPacket] = []
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._loop, name="sniffer", daemon=True)

    def __enter__(self) -> LoopbackSniffer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._sock.close()

    def _loop(self) -> None:
        while not self._stop.is_set() and len(self.packets) < MAX_PACKETS:
            try:
                frame, addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING or len(frame) < 34 or struct.unpack_from("!H", frame, 12)[0] != 0x0800:
                continue
            ip = 14
            ihl = (frame[ip] & 0x0F) * 4
            proto = frame[ip + 9]
            flags_off = struct.unpack_from("!H", frame, ip + 6)[0]
            fragment = bool(flags_off & 0x2000) or bool(flags_off & 0x1FFF)
            end = ip + struct.unpack_from("!H", frame, ip + 2)[0]
            l4 = ip + ihl
            if proto not in (6, 17):
                continue
            if flags_off & 0x1FFF:
                self.packets.append(IpPacket(proto, 0, 0, b"", True))
                continue
            sport, dport = struct.unpack_from("!HH", frame, l4)
            start = l4 + (8 if proto == 17 else (frame[l4 + 12] >> 4) * 4)
            self.packets.append(IpPacket(proto, sport, dport, bytes(frame[start:end]), fragment))


def tcp_streams(packets: list[IpPacket], ports: set[int]) -> dict[tuple[int, int], bytes]:
    """Payload bytes per TCP direction (src_port, dst_port) touching ``ports``, in capture order (loopback)."""
    out: dict[tuple[int, int], bytearray] = defaultdict(bytearray)
    for p in packets:
        if p.proto == 6 and p.payload and (p.src_port in ports or p.dst_port in ports):
            out[(p.src_port, p.dst_port)] += p.payload
    return {k: bytes(v) for k, v in out.items()}
