"""Whether a secure call's protection is degraded, never silently (issue 14): what is degraded, since when, and
the texts users and operators see.

Three things can go missing in a call that still carries audio: the peer's DH steps (no post-compromise security
for its direction), the acknowledgement of ours (we cannot step: the same for ours), and the peer's SAS reveal
(nothing to compare); and a fourth on hybrid calls, our in-call post-quantum epoch stalling. The ratchet decides
the first two and the fourth (``ratchet.events.MediaDegraded``); the third is decided by
the call layer, which alone knows when the call was answered (``sas_reveal_overdue``). ``MediaHealth`` keeps the
current set per call; the status line, the call summary, ``gateway status`` and the metrics read it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ratchet.events import Degradation

SAS_REVEAL_DEADLINE_S = 5.0
"""After the answer, how long a secure call may go without the SAS before it shows as degraded. The reveal rides
in the first frames after the ring point, so a few seconds of audio are several dozen chances to carry it."""


class Degraded(enum.Enum):
    """One way a secure call's protection is weaker than promised. Values are the metric label."""

    NO_PEER_STEP = "no-peer-dh-step"
    """No authenticated DH step from the peer in twice its interval: its direction has no post-compromise
    security (a relay may be dropping its key announcements, or it never steps)."""
    STEP_UNACKNOWLEDGED = "dh-step-unacknowledged"
    """Our next ratchet key was not acknowledged in twice our interval: we cannot step our direction."""
    NO_SAS_REVEAL = "no-sas-reveal"
    """The call was answered but the peer's SAS contribution never arrived: there is nothing to compare."""
    PQ_STALLED = "pq-epoch-stalled"
    """Our in-call post-quantum epoch did not complete (the peer stopped answering or runs none): our direction
    heals after a compromise only against a classical attacker."""

    @property
    def text(self) -> str:
        return _TEXT[self]


_TEXT = {
    Degraded.NO_PEER_STEP: "the peer's keys have not advanced (no DH step received)",
    Degraded.STEP_UNACKNOWLEDGED: "our keys cannot advance (the peer does not acknowledge our DH step)",
    Degraded.NO_SAS_REVEAL: "no SAS from the peer: the call cannot be verified",
    Degraded.PQ_STALLED: "our post-quantum key update stalled (the peer does not answer it)",
}


_FROM_RATCHET = {
    Degradation.NO_PEER_STEP: Degraded.NO_PEER_STEP,
    Degradation.OWN_STEP_UNACKED: Degraded.STEP_UNACKNOWLEDGED,
    Degradation.PQ_STALLED: Degraded.PQ_STALLED,
}


def from_ratchet(reason: Degradation) -> Degraded:
    """The call-level name of a degradation the ratchet detected (``ratchet.events.MediaDegraded``)."""
    return _FROM_RATCHET[reason]


def sas_reveal_overdue(answered_at: float | None, now: float, sas_known: bool, secure: bool) -> bool:
    """Whether a call's missing SAS counts as degraded: secure, answered at least ``SAS_REVEAL_DEADLINE_S`` ago,
    and still no SAS on this side."""
    return secure and not sas_known and answered_at is not None and now - answered_at >= SAS_REVEAL_DEADLINE_S


@dataclass
class MediaHealth:
    """The degradations of one call: those active now (with the ``now`` they started) and every one ever seen."""

    active: dict[Degraded, float] = field(default_factory=dict)
    seen: set[Degraded] = field(default_factory=set)

    def raise_(self, what: Degraded, since: float) -> bool:
        """Mark ``what`` active; True if it was not already (the caller logs and counts it once)."""
        if what in self.active:
            return False
        self.active[what] = since
        self.seen.add(what)
        return True

    def clear(self, what: Degraded) -> bool:
        """Mark ``what`` restored; True if it was active."""
        return self.active.pop(what, None) is not None

    @property
    def degraded(self) -> bool:
        return bool(self.active)

    def summary(self) -> str:
        """``""`` when healthy, else ``DEGRADED: <text>; <text>`` (for the status line and ``gateway status``)."""
        if not self.active:
            return ""
        return "DEGRADED: " + "; ".join(d.text for d in sorted(self.active, key=lambda d: d.value))

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "active": sorted(d.value for d in self.active),
            "seen": sorted(d.value for d in self.seen),
        }
