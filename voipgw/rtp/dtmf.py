"""RFC 4733 DTMF telephone events: the 4-byte payload, the sender's packet train, a receiver that reports each
digit exactly once, and the 8-byte plaintext of a sealed event (docs/PROTOCOL.md §B.11).

Pure data in, data out: never touches a socket, a clock or a key (voipgw.media sends, times and seals).
"""

from __future__ import annotations

import collections
import struct
from dataclasses import dataclass

DIGITS = "0123456789*#ABCD"
"""RFC 4733 §3.2 event codes 0-15, in order."""
PAYLOAD_LEN = 4
SEALED_LEN = 8
"""A sealed event's plaintext: u32 event id (the event's RTP start timestamp) ‖ the 4-byte RFC 4733 payload."""
CLOCK_RATE = 8000
"""The only telephone-event clock rate we negotiate (``telephone-event/8000``); durations are in its units."""
MAX_VOLUME = 63
DEFAULT_VOLUME = 10
"""-10 dBm0: the level most gateways send (RFC 4733 §2.3.4 leaves it to the sender)."""
UPDATE_MS = 50
"""Interval between the updates of a long event (RFC 4733 §2.5.1.2 suggests 50 ms)."""
END_PACKETS = 3
"""The end packet is sent three times (RFC 4733 §2.5.1.4), so losing one or two changes nothing."""
END_SPACING_MS = 20
MIN_DURATION_MS = 40
"""ITU-T Q.24 receivers need at least 40 ms of tone; shorter presses would not survive a PSTN hop."""
MAX_DURATION_MS = 5000
GAP_MS = 100
"""Pause after a digit's last end packet before the next digit starts. Measured: rtpengine 10.5 in plain
forwarding holds back a telephone event that starts 50-70 ms after the previous one's last end packet until
the next event arrives (digits then reach the far end out of order); 100 ms passed every run."""
DEFAULT_DURATION_MS = 100
DEFAULT_REMEMBERED = 32
"""Event ids a receiver remembers to drop the repeats of a reported digit (bounded state)."""

# A media stream's DTMF limits (voipgw.media).
DTMF_QUEUE = 64
"""Received digits waiting in ``MediaStream.dtmf``; beyond that the oldest is dropped (``dtmf-queue-full``)."""
MAX_PENDING_DTMF = 256
"""Digits queued by send_dtmf and not yet sent."""
MAX_EVENT_COUNTERS = 64
"""Plain calls: RTP sequence numbers of received RFC 4733 events remembered to keep the audio's playout index
dense (see _audio_index). Sealed streams carry events inside audio frames: no gaps to account for."""
MAX_QUEUED_EVENTS = 16
"""Telephone-event payloads waiting for an audio frame to ride on (normally 0-1: the train is paced in time)."""

_EVENT = struct.Struct(">BBH")
_SEALED = struct.Struct(">I")


class DtmfError(ValueError):
    """A telephone event we cannot use; ``reason`` is a stable code counted like other media refusals."""

    reason = "dtmf"

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"{self.reason}: {detail}" if detail else self.reason)
        self.detail = detail


class MalformedEvent(DtmfError):
    """The payload has the wrong length or a reserved bit set."""

    reason = "dtmf-malformed"


class UnknownEvent(DtmfError):
    """The event code is not a DTMF digit (16 is hook flash; the rest are tones we do not relay)."""

    reason = "dtmf-unknown-event"


class BadDigit(DtmfError):
    """Asked to send a character that is not 0-9 * # A-D."""

    reason = "dtmf-bad-digit"


class BadDuration(DtmfError):
    """Asked to send a digit shorter than MIN_DURATION_MS or longer than MAX_DURATION_MS."""

    reason = "dtmf-bad-duration"


@dataclass(frozen=True)
class TelephoneEvent:
    """One RFC 4733 payload: ``event | E R volume | duration`` (§2.3)."""

    event: int
    """Event code 0-255 (0-15 are the DTMF digits)."""
    end: bool
    volume: int
    """Power level in -dBm0, 0-63."""
    duration: int
    """Length of the event so far, in CLOCK_RATE units (0-65535)."""

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255 or not 0 <= self.volume <= MAX_VOLUME or not 0 <= self.duration <= 0xFFFF:
            raise MalformedEvent(f"field out of range in {self.event}/{self.volume}/{self.duration}")

    @property
    def digit(self) -> str | None:
        return DIGITS[self.event] if self.event < len(DIGITS) else None

    def encode(self) -> bytes:
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)

    @classmethod
    def decode(cls, payload: bytes) -> TelephoneEvent:
        """Parse one event. Several events in one packet (RFC 4733 §2.5.1.5 redundancy) are not used by DTMF
        senders we know of; anything but exactly 4 bytes is refused rather than half-read."""
        if len(payload) != PAYLOAD_LEN:
            raise MalformedEvent(f"{len(payload)} bytes, expected {PAYLOAD_LEN}")
        event, flags, duration = _EVENT.unpack(payload)
        # The R bit is reserved: senders set it to 0 and receivers ignore it (§2.3.3).
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)


def digit_event(digit: str) -> int:
    """The event code of one digit (lower-case a-d accepted)."""
    code = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise BadDigit(f"{digit[:8]!r} is not one of {DIGITS}")
    return code


def check_digits(digits: str) -> str:
    """``digits`` normalised to upper case, or BadDigit naming the first bad character."""
    for d in digits:
        digit_event(d)
    return digits.upper()


@dataclass(frozen=True)
class EventPacket:
    """One packet of a digit's train. The caller stamps every packet of the train with the same RTP timestamp
    (the event's start) and sends it ``offset_ms`` after the first."""

    event: TelephoneEvent
    marker: bool
    offset_ms: int


def digit_train(
    digit: str, duration_ms: int = DEFAULT_DURATION_MS, *, volume: int = DEFAULT_VOLUME
) -> list[EventPacket]:
    """The standard train for one digit (RFC 4733 §2.5.1): a first packet with the marker bit, an update every
    UPDATE_MS with a growing duration, then END_PACKETS end packets carrying the final duration."""
    code = digit_event(digit)
    if not MIN_DURATION_MS <= duration_ms <= MAX_DURATION_MS:
        raise BadDuration(f"{duration_ms} ms outside [{MIN_DURATION_MS}, {MAX_DURATION_MS}]")
    total = duration_ms * CLOCK_RATE // 1000
    step = UPDATE_MS * CLOCK_RATE // 1000
    train: list[EventPacket] = []
    offset = 0
    # Each update reports the duration reached by the end of its UPDATE_MS period, as RFC 2833's example does.
    while offset + UPDATE_MS < duration_ms:
        dur = (offset + UPDATE_MS) * CLOCK_RATE // 1000
        train.append(EventPacket(TelephoneEvent(code, False, volume, min(dur, total)), not train, offset))
        offset += UPDATE_MS
    if not train:
        train.append(EventPacket(TelephoneEvent(code, False, volume, min(step, total)), True, 0))
    end = TelephoneEvent(code, True, volume, total)
    train += [EventPacket(end, False, duration_ms + i * END_SPACING_MS) for i in range(END_PACKETS)]
    return train


def encode_sealed(event_id: int, event: TelephoneEvent) -> bytes:
    """The plaintext a secure stream seals for one event packet (§B.11)."""
    return _SEALED.pack(event_id & 0xFFFFFFFF) + event.encode()


def decode_sealed(plaintext: bytes) -> tuple[int, TelephoneEvent]:
    """(event id, event) from an opened event frame."""
    if len(plaintext) != SEALED_LEN:
        raise MalformedEvent(f"sealed event of {len(plaintext)} bytes, expected {SEALED_LEN}")
    return _SEALED.unpack_from(plaintext)[0], TelephoneEvent.decode(plaintext[4:])


class DtmfReceiver:
    """Turns a stream of telephone events into digits, each reported exactly once.

    ``feed(event_id, event)`` returns the digit the first time any packet of an event arrives (start, update
    or end: losing the start or every end packet still reports it) and None for its repeats. ``event_id``
    is what tells two presses apart: the RTP timestamp on plain streams, the authenticated event id on sealed
    ones. Only the last ``remembered`` ids are kept, so memory is bounded whatever the peer sends.
    """

    def __init__(self, remembered: int = DEFAULT_REMEMBERED) -> None:
        if remembered < 1:
            raise ValueError("remembered must be at least 1")
        self._seen: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._remembered = remembered
        self.reported = 0
        self.repeats = 0

    def feed(self, event_id: int, event: TelephoneEvent) -> str | None:
        digit = event.digit
        if digit is None:
            raise UnknownEvent(f"event {event.event}")
        seen = self._seen.get(event_id)
        if seen is not None:
            if seen != event.event:
                # One id, two digits: a broken or hostile sender. Reporting the second would let it inject
                # digits into a press the user made; the first one stands.
                raise MalformedEvent(f"event {event.event} reuses the id of event {seen}")
            self.repeats += 1
            return None
        self._seen[event_id] = event.event
        if len(self._seen) > self._remembered:
            self._seen.popitem(last=False)
        self.reported += 1
        return digit
