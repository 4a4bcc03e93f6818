"""ICMP "port unreachable" for the SIP datagrams we send: a request to an address where nothing listens ends at
once as 503 (RFC 3261 §8.1.3.1, "the transport layer reports an error") instead of after timer B's 32 s.

Linux reports ICMP errors on an unconnected UDP socket only with ``IP_RECVERR``; the error then waits on the
socket's error queue with the datagram it quotes and where it was sent. Anyone who can send us ICMP could forge one,
so an error counts only if it quotes enough of one of our pending requests to include its whole first Via header
line, whose branch is random (RFC 3261 §8.1.1.7): an off-path forger cannot know it. Real ICMP errors quote up to
576 bytes of the datagram (RFC 1812 §4.3.2.3), which covers the request line and the top Via.

Pure decisions here; the socket calls live in ``sippy_glue`` (the receiver and sender threads).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

IP_RECVERR = 11
"""``linux/in.h``; Python's socket module does not export it."""
IPV6_RECVERR = 25
"""``linux/in6.h``."""
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
_EXTENDED_ERR = struct.Struct("=IBBBBII")
"""``struct sock_extended_err``: ee_errno, ee_origin, ee_type, ee_code, ee_pad, ee_info, ee_data."""
ICMP_UNREACH_PORT = (3, 3)
ICMP6_UNREACH_PORT = (1, 4)


@dataclass(frozen=True)
class Unreachable:
    """One ICMP port-unreachable from the error queue: the datagram it quotes, and where we had sent it."""

    quoted: bytes
    address: tuple[str, int]


def enable(sock: socket.socket) -> bool:
    """Ask the kernel to report ICMP errors on ``sock`` (False where it cannot: not Linux, not IP)."""
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    except OSError:
        return False
    return True


def port_unreachable(ancdata: list[tuple[int, int, bytes]]) -> bool:
    """Whether an error-queue message's control data says ICMP (or ICMPv6) port unreachable."""
    for level, kind, data in ancdata:
        if (level, kind) not in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
            continue
        if len(data) < _EXTENDED_ERR.size:
            continue
        _errno, origin, icmp_type, icmp_code, _pad, _info, _data = _EXTENDED_ERR.unpack_from(data)
        if origin == SO_EE_ORIGIN_ICMP and (icmp_type, icmp_code) == ICMP_UNREACH_PORT:
            return True
        if origin == SO_EE_ORIGIN_ICMP6 and (icmp_type, icmp_code) == ICMP6_UNREACH_PORT:
            return True
    return False


def quotes_request(quoted: bytes, sent: bytes) -> bool:
    """Whether an ICMP error's ``quoted`` datagram is our request ``sent``: a prefix of it that reaches past the
    end of its first Via line (the random branch). Shorter quotes, or quotes of anything else, are ignored."""
    if not quoted or not sent.startswith(quoted):
        return False
    via = sent.lower().find(b"\r\nvia:")
    if via < 0:
        via = sent.lower().find(b"\r\nv:")
    if via < 0:
        return False
    end = sent.find(b"\r\n", via + 2)
    return end >= 0 and len(quoted) >= end + 2
