"""The gateway's two trust zones: where each one's SIP and RTP live (``Zones``) and who may send what on each
listener (``screen``, pure and table-tested). The PBX and everything beyond it are the attacker: the outside
listener takes calls to fronted users and in-dialog requests, never a REGISTER (the stack refuses those) and never
a request as an inside user (``routing.route`` reads the zone); the inside listener takes nothing from the PBX's
SIP sockets and, with ``inside.auth`` off, nothing from outside ``inside.trusted_networks``."""

from __future__ import annotations

import ipaddress
from collections.abc import Set
from dataclasses import dataclass, replace
from typing import Any

from voipgw.media import MediaStream
from voipgw.portrange import RtpRange, bind_media
from voipgw.sip.tls import TlsOptions
from voipgw.sip.zone import Refusal, RequestFacts, Zone

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Zones:
    """The outside zone's own SIP listener and each zone's RTP address and port range."""

    outside_listen: tuple[str, int]
    inside_rtp: RtpRange
    outside_rtp: RtpRange


@dataclass(frozen=True)
class StreamTls:
    """Which TLS each zone's SIP stack gets: ``outside`` (client toward the PBX, and its listener with a
    certificate) and ``inside`` (the phones' own listener); None: no TLS in that zone."""

    outside: TlsOptions | None
    inside: TlsOptions | None


def stream_tls(tls: TlsOptions | None, outside_transport: str, outside_listen: tuple[str, int] | None) -> StreamTls:
    """Split the gateway's TLS settings (``tls.port`` is ``inside.tls_port``) between the zones.

    Two zones (``outside_listen`` given): the phones' TLS listener, on ``inside.tls_port``, exists with a
    certificate; the outside zone speaks TLS only with ``outside.transport = "tls"``, listening (with the
    certificate) on the outside listener's port number over TCP, so a PBX never reaches the phones' listener
    and a phone never the PBX's. Flag mode (one listener): the single TLS listener of before serves both."""
    has_cert = tls is not None and tls.cert_file is not None
    if outside_listen is None:
        single = (tls or TlsOptions()) if outside_transport == "tls" or has_cert else None
        return StreamTls(outside=single, inside=None)
    outside = replace(tls or TlsOptions(), port=outside_listen[1]) if outside_transport == "tls" else None
    return StreamTls(outside=outside, inside=tls if has_cert else None)


@dataclass(frozen=True)
class ScreenPolicy:
    """What screening knows: the PBX's SIP sockets, and whether inside requests are authenticated."""

    pbx: Set[tuple[str, int]]
    """Every (IP, port) the PBX's registrar and proxy resolve to: never a source on the inside listener."""
    auth: bool
    trusted_networks: tuple[Network, ...] = ()
    """With ``auth`` off, the only sources the inside listener takes requests from."""


def screen(policy: ScreenPolicy, req: RequestFacts) -> Refusal | None:
    """None lets the out-of-dialog request through (to digest auth and routing); else why it is refused."""
    if req.zone is Zone.OUTSIDE:
        # The stack refuses REGISTER here itself; INVITEs are routed as calls *to* a fronted user (routing.py).
        return None
    if req.source in policy.pbx:
        return Refusal(403, "pbx_on_inside", "the PBX may not send to the inside listener")
    if not policy.auth and not _trusted(req.source[0], policy.trusted_networks):
        return Refusal(403, "untrusted_source", "source not in inside.trusted_networks")
    return None


def _trusted(host: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return any(ip in net for net in networks)


async def bind_inside_media(zones: Zones | None, host: str, **kw: Any) -> MediaStream:
    """An inside leg's RTP socket: in the inside zone's range (any free port of ``host`` without zones)."""
    if zones is None:
        return await MediaStream.bind(host, **kw)
    r = zones.inside_rtp
    return await bind_media(r.host, (r.low, r.high), **kw)
