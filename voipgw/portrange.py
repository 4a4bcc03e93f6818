"""Media sockets bound from a configured address and port range (the gateway's zones each have their own), so a
firewall can tell the zones' RTP apart and one zone's range is never handed to the other."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from voipgw.media import MediaStream

MAX_TRIES = 256
"""Even ports tried before giving up (from a random start, so concurrent calls rarely collide)."""


class NoFreeRtpPort(OSError):
    """Every port tried in the range was in use."""


@dataclass(frozen=True)
class RtpRange:
    """Where one zone's RTP sockets live: ``host`` and the inclusive port range ``low``-``high``."""

    host: str
    low: int
    high: int

    def candidates(self, start: int | None = None) -> list[int]:
        """The even ports to try (RTP even, RTCP on the next odd one), from ``start`` round the range."""
        first = self.low + (self.low % 2)
        evens = list(range(first, self.high, 2))  # port + 1 must fit too
        if not evens:
            return []
        i = secrets.randbelow(len(evens)) if start is None else evens.index(start)
        ordered = evens[i:] + evens[:i]
        return ordered[:MAX_TRIES]


async def bind_media(host: str, ports: tuple[int, int] | None, **kw: Any) -> MediaStream:
    """``MediaStream.bind`` on ``host``: any free port when ``ports`` is None, else a free even port in the range."""
    if ports is None:
        return await MediaStream.bind(host, **kw)
    last: OSError | None = None
    for port in RtpRange(host, *ports).candidates():
        try:
            return await MediaStream.bind(host, port, **kw)
        except OSError as exc:
            last = exc
    raise NoFreeRtpPort(f"no free RTP port in {ports[0]}-{ports[1]} on {host}: {last}")
