"""A media stream's frame counters (``MediaStream.stats``): what was sent, opened, refused by reason, played.
Counting only; refusals are logged at the 1st, 10th, 100th... of each reason."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from voipgw.logutil import is_log_point

log = logging.getLogger("voipgw.media")  # the media stream's log lines keep their name


@dataclass(slots=True)
class MediaStats:
    """Frame counters of one stream (packet-level counters live in ``endpoint.stats``)."""

    frames_sent: int = 0
    seal_errors: int = 0
    """Frames the protector refused to seal (not sent)."""
    frames_received: int = 0
    """RTP packets of our payload type offered to the protector (or refused before it was set)."""
    frames_opened: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    """Frames dropped because they did not open, by FrameError reason. Also ``not-started`` (arrived before
    start() beyond MAX_EARLY_PACKETS), ``protector-error`` (the protector raised a non-FrameError) and
    ``event-pt-on-secure-stream`` (a telephone-event packet on a sealed stream, whose events ride inside frames)."""
    frames_played: int = 0
    """Ticks that played a decoded, opened frame."""
    frames_concealed: int = 0
    """Ticks that played the codec's loss concealment (a gap after audio was heard)."""
    frames_silent: int = 0
    """Ticks that played digital silence (nothing heard yet, a long gap, or a frame the codec rejected)."""
    decode_failures: int = 0
    ticks_skipped: int = 0
    """Ticks dropped because the event loop stalled for more than MAX_LATE_TICKS."""
    dtmf_in: int = 0
    """Digits received and put on ``MediaStream.dtmf`` (each press once, however many packets carried it)."""
    dtmf_out: int = 0
    """Digits whose whole packet train was sent."""
    events_received: int = 0
    """Telephone events that parsed (repeats included): RFC 4733 packets on plain calls, TELEPHONE_EVENT items of
    opened frames on sealed ones."""

    inband_sent: int = 0
    """Key-exchange packets sent in the media path (docs/PROTOCOL.md §C.6; retransmissions included)."""
    inband_received: int = 0
    """Packets that carried the in-band prefix (handled by ``voipgw.inband_link``, never opened or played)."""
    inband_refused: dict[str, int] = field(default_factory=dict)
    """In-band packets dropped, by reason (``inband-malformed``, ``inband-conflict``, ``inband-late`` ...)."""

    @property
    def frames_refused(self) -> int:
        return sum(self.refused.values())

    def refuse_inband(self, reason: str) -> None:
        count = self.inband_refused.get(reason, 0) + 1
        self.inband_refused[reason] = count
        if is_log_point(count):
            log.warning("in-band key-exchange packet refused: %s (%d so far)", reason, count)

    def refuse(self, reason: str) -> None:
        count = self.refused.get(reason, 0) + 1
        self.refused[reason] = count
        if is_log_point(count):  # the 1st, 10th, 100th... of each reason: visible, but a flood cannot fill the log
            log.warning("frame refused: %s (%d so far)", reason, count)
