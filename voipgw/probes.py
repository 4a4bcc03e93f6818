"""Who keeps calling and hanging up before the answer: the guard against SAS probing.

The SAS (docs/PROTOCOL.md §A.6) cannot be computed by either side before the callee reveals its contribution,
and the callee reveals it only at its ring point: the phone rings with the SAS on its display (a gateway), or the
call is answered (an auto-answering softphone). A man in the middle therefore pays one visible ring per guess.
This guard makes those rings expensive too: secure calls from one peer (its signed AOR, and separately its
identity key) that end unanswered are counted in a sliding window; past ``limit`` the peer's next calls reveal
only after they are answered (every further guess costs an answered call), and an alert is raised (log, metric,
``gateway status``). Pure bookkeeping: time is an argument, nothing here does I/O.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass, field

DEFAULT_LIMIT = 3
"""Unanswered secure calls from one peer tolerated per window: a person who hangs up twice while it rings is
normal; a run of them is what probing looks like."""
DEFAULT_WINDOW_S = 600.0
MAX_PEERS = 10_000
"""Peers tracked at once (a flood of fresh identities cannot grow this without bound: the oldest go first)."""


class EndedBefore(enum.Enum):
    """Where an unanswered secure call stood when the caller gave up."""

    REVEAL = "before-reveal"
    """We had not revealed our SAS contribution: the caller learned nothing about the SAS."""
    ANSWER = "after-reveal"
    """We had revealed it (the phone rang with the SAS): the caller could compute the SAS, and gave up."""


class RevealPoint(enum.Enum):
    """When a callee reveals its SAS contribution."""

    RING = "ring"
    """As the phone starts ringing with the SAS on its display (the default)."""
    ANSWER = "answer"
    """Only once the call is answered: a peer over the limit (or an auto-answering callee)."""


@dataclass
class ProbeGuard:
    """Counts unanswered secure calls per peer AOR and per peer identity key; one per process (shared by every
    leg of a gateway, whatever inside user was called)."""

    limit: int = DEFAULT_LIMIT
    window_s: float = DEFAULT_WINDOW_S
    ended: dict[EndedBefore, int] = field(default_factory=lambda: {e: 0 for e in EndedBefore})
    """Unanswered secure calls by stage, since start (the metric)."""
    alerts: int = 0
    """Times a peer crossed the limit."""
    _seen: collections.OrderedDict[str | bytes, collections.deque[float]] = field(
        default_factory=collections.OrderedDict
    )

    def note_unanswered(self, aor: str, identity: bytes | None, stage: EndedBefore, now: float) -> bool:
        """Record a secure call from ``aor`` / ``identity`` that ended unanswered; True when it crosses the limit
        (the caller alerts once per crossing)."""
        self.ended[stage] += 1
        crossed = False
        for key in (aor, identity):
            if key is None:
                continue
            times = self._times(key, now)
            times.append(now)
            if len(times) == self.limit + 1:
                crossed = True
        if crossed:
            self.alerts += 1
        return crossed

    def reveal_point(self, aor: str, identity: bytes | None, now: float) -> RevealPoint:
        """When to reveal to this caller: at the ring, unless it is over the limit."""
        for key in (aor, identity):
            if key is not None and key in self._seen and len(self._times(key, now)) > self.limit:
                return RevealPoint.ANSWER
        return RevealPoint.RING

    def suspects(self, now: float) -> list[str]:
        """The AORs over the limit now (for ``gateway status``)."""
        return [k for k in list(self._seen) if isinstance(k, str) and len(self._times(k, now)) > self.limit]

    def _times(self, key: str | bytes, now: float) -> collections.deque[float]:
        times = self._seen.get(key)
        if times is None:
            times = self._seen[key] = collections.deque()
            while len(self._seen) > MAX_PEERS:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(key)
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times
