"""A call in progress as its users see it: the record, the SIP dialog, the media and the ratchet session, plus
the small pieces every call owner shares (background tasks, the media session's adapter, the record of a received
INVITE, the wire tap of the demo). No call flow lives here: ``voipgw.leg`` drives calls."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from ratchet.aor import normalize_aor
from ratchet.events import (
    LocalPqStep,
    MediaDegraded,
    MediaRestored,
    Notice,
    PeerNotice,
    SasCommitmentFailed,
    SasReady,
    TelephoneEventReceived,
)
from ratchet.fingerprint import safety_number
from ratchet.session import MediaSession
from voipgw.call import CallEvent, CallRecord
from voipgw.inband_link import InbandLink
from voipgw.media import MediaError, MediaStream
from voipgw.media_health import Degraded, from_ratchet, sas_reveal_overdue
from voipgw.rtp.dtmf import DEFAULT_DURATION_MS
from voipgw.sip import IncomingCall, SipCall

log = logging.getLogger("voipgw.phone")  # the name operators filter on since the engine lived in phone.py

MAX_RECORDED_DTMF = 1000


class Spawner:
    """Background work of one owner (contact-store writes, the late safety number): spawned, and awaited
    (bounded) before the owner closes what that work uses."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, timeout_s: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)


class SecureProtector:
    """Adapts a ratchet MediaSession to voipgw.media's SealedStream seam.

    The session has one event queue: the media takes the telephone events out of it after each opened frame
    (take_telephone_events) and the rest waits here, in order, for ActiveCall.poll_session_events (next_event)."""

    secure = True

    def __init__(self, session: MediaSession) -> None:
        self.session = session
        self.seal = session.seal
        self.open = session.open
        self.control_size = session.control_size
        self.set_payload_size = session.set_payload_size
        self._others: collections.deque[object] = collections.deque()
        self._telephone: list[bytes] = []

    @property
    def last_index(self) -> int:
        return self.session.last_index

    def take_telephone_events(self) -> list[bytes]:
        while (ev := self.session.next_event()) is not None:
            if isinstance(ev, TelephoneEventReceived):
                self._telephone.append(ev.data)
            else:
                self._others.append(ev)
        taken, self._telephone = self._telephone, []
        return taken

    def next_event(self) -> object | None:
        """The session's next event other than a telephone event (those are the media's)."""
        if self._others:
            return self._others.popleft()
        while (ev := self.session.next_event()) is not None:
            if not isinstance(ev, TelephoneEventReceived):
                return ev
            self._telephone.append(ev.data)
        return None


@dataclass
class ActiveCall:
    """A call in progress (or just finished): its record, its SIP dialog, its media."""

    record: CallRecord
    sip: SipCall | None = None
    media: MediaStream | None = None
    session: MediaSession | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    wire_tap: list[bytes] | None = None
    dtmf_received: list[str] = field(default_factory=list)
    """Every DTMF digit received in this call, in order (also on ``media.dtmf`` as they arrive)."""
    final_cause: tuple[int, str] | None = None
    """A caller's: the final error status its INVITE got and that status's RFC 3326 Reason text (or phrase), so
    a gateway passes the far phone's status (486, 603...) on as itself."""
    answer_sdp: str | None = None
    """A callee's answer SDP: sent in the 183 and repeated unchanged in the 200 OK."""
    inband: InbandLink | None = None
    """The key exchange in the media path, when the SDP arrived without ``a=voipgw`` (docs/PROTOCOL.md §C.6)."""
    early_attribute: str | None = None
    """A caller's: the ``a=voipgw`` value of the 183 whose key exchange it accepted (the 200 must repeat it)."""
    early_dialog: str = ""
    """A caller's: that 183's To-tag (its early dialog; another tag is another fork of the INVITE)."""

    @property
    def revealed(self) -> bool:
        """Our SAS contribution is out (always, for a caller; for a callee, from its ring point on)."""
        return self.session is not None and self.session.sas_revealed

    def poll_session_events(self) -> None:
        """Fold ratchet events (SAS ready, commitment failure) into the record."""
        if self.session is None:
            return
        protector = self.media.protector if self.media is not None else None
        # Once the media runs, its protector holds what it drained of the session's queue (in order).
        source = protector if isinstance(protector, SecureProtector) and protector.session is self.session else None
        while (ev := (source or self.session).next_event()) is not None:
            if isinstance(ev, SasReady):
                self.record.sas = ev.sas.b32
                self.record.sas_words = ev.sas.words
                log.info("call %s: SAS %s (%s %s)", self.record.call_id, ev.sas.b32, *ev.sas.words)
            elif isinstance(ev, SasCommitmentFailed):
                log.error("call %s: the peer's SAS reveal contradicts its signed commitment", self.record.call_id)
                self.record.reason = "sas-commitment-mismatch: possible man in the middle"
                self.hangup("voipgw: the SAS reveal contradicts its commitment (possible man in the middle)")
            elif isinstance(ev, MediaDegraded):
                # The session's clock is monotonic; the record keeps wall-clock times (what a user reads).
                self.degrade(from_ratchet(ev.reason), time.time())
            elif isinstance(ev, MediaRestored):
                self.restore(from_ratchet(ev.reason))
            elif isinstance(ev, LocalPqStep):
                log.info(
                    "call %s: post-quantum epoch %d complete: our keys now include ML-KEM exchange %d (%.1f s)",
                    self.record.call_id, ev.epoch, ev.exchange, ev.at - ev.started_at,
                )  # fmt: skip
            elif isinstance(ev, PeerNotice) and ev.code == Notice.KEY_CHANGE_SEEN:
                self.record.peer_saw_key_change = True
                log.warning(
                    "call %s: %s says it saw a changed identity key for us (%s) and went on unverified",
                    self.record.call_id, self.record.party, self.record.local_aor,
                )  # fmt: skip

    def degrade(self, what: Degraded, now: float) -> None:
        """``what`` weakens this call's protection from ``now`` on: logged once, shown until restored."""
        if self.record.health.raise_(what, now):
            log.warning("call %s with %s degraded: %s", self.record.call_id, self.record.remote_aor, what.text)

    def restore(self, what: Degraded) -> None:
        if self.record.health.clear(what):
            # As loud as the warning it ends: a user who saw "degraded" must see it lifted.
            log.warning("call %s: no longer degraded: %s", self.record.call_id, what.text)

    def check_sas_reveal(self, now_wall: float) -> None:
        """The call layer's part of the degraded check: answered and secure, but still no SAS after the deadline."""
        rec = self.record
        if rec.sas is not None:
            self.restore(Degraded.NO_SAS_REVEAL)
        elif sas_reveal_overdue(rec.started_at, now_wall, False, rec.secure and self.session is not None):
            self.degrade(Degraded.NO_SAS_REVEAL, now_wall)

    def note_dtmf(self, digit: str) -> None:
        if len(self.dtmf_received) < MAX_RECORDED_DTMF:  # a peer sending digits forever cannot grow this
            self.dtmf_received.append(digit)

    def send_dtmf(self, digits: str, duration_ms: int = DEFAULT_DURATION_MS) -> None:
        """Queue DTMF digits (0-9 * # A-D) as RFC 4733 events (inside the sealed audio frames on a secure call).

        Raises voipgw.rtp.dtmf.DtmfError for a bad digit or duration, MediaError if the call has no media or
        the peer did not negotiate telephone-event. ``await call.media.dtmf_sent()`` waits until they left."""
        if self.media is None:
            raise MediaError("the call has no media")
        self.media.send_dtmf(digits, duration_ms)

    def hangup(self, why: str | None = None) -> None:
        """End the call; ``why`` travels to the peer in the BYE's Reason header."""
        if self.sip is not None and not self.record.finished:
            with contextlib.suppress(Exception):
                self.sip.hangup(why)

    def stats(self) -> dict[str, object]:
        media = self.media.stats if self.media is not None else None
        return {
            "frames_sent": media.frames_sent if media else 0,
            "frames_received": media.frames_received if media else 0,
            "frames_opened": media.frames_opened if media else 0,
            "frames_refused": media.frames_refused if media else 0,
            "refused_by_reason": dict(media.refused) if media else {},
            "frames_played": media.frames_played if media else 0,
            "frames_concealed": media.frames_concealed if media else 0,
            "frames_silent": media.frames_silent if media else 0,
            "decode_failures": media.decode_failures if media else 0,
            "ticks_skipped": media.ticks_skipped if media else 0,
            "dtmf_in": media.dtmf_in if media else 0,
            "dtmf_received": "".join(self.dtmf_received),
            "dtmf_out": media.dtmf_out if media else 0,
            "inband_sent": media.inband_sent if media else 0,
            "inband_received": media.inband_received if media else 0,
            "inband_refused": dict(media.inband_refused) if media else {},
            "jitter_trimmed": self.media.jitter.stats.trimmed if self.media is not None else 0,
            "ratchet_local_epoch": self.session.stats.local_epoch if self.session else 0,
            "ratchet_peer_epoch": self.session.stats.peer_epoch if self.session else 0,
            "pq_epochs": self.session.pq_epochs if self.session else 0,
            "pq_refused": dict(self.session.stats.pq_refused) if self.session else {},
            "degraded": self.record.health.as_dict(),
        }


def incoming_record(incoming: IncomingCall, local_aor: str) -> CallRecord:
    """The record of an INVITE we received (not yet answered)."""
    rec = CallRecord(
        call_id=incoming.call_id,
        direction="incoming",
        local_aor=local_aor,
        remote_aor=normalize_aor(incoming.from_aor),
    )
    rec.apply(CallEvent.RECEIVE_INVITE)
    return rec


def tap_payloads(call: ActiveCall, stream: MediaStream) -> None:
    """Keep a copy of every RTP payload as it arrived from the network (the demo's wire evidence)."""
    tap: list[bytes] = []
    call.wire_tap = tap
    inner = stream.endpoint.on_payload
    assert inner is not None

    def tapped(pkt, addr):  # type: ignore[no-untyped-def]
        if len(tap) < 10_000:
            tap.append(bytes(pkt.payload))
        return inner(pkt, addr)

    stream.endpoint.on_payload = tapped


async def late_safety_number(rec: CallRecord, local: bytes, remote: bytes) -> None:
    """A call without a contact store still shows its safety number: computed after the answer is out (5200
    SHA-512 rounds per side, ~4 ms), never on the setup path."""
    rec.safety_number = await asyncio.to_thread(
        safety_number, local, rec.local_aor.encode(), remote, rec.remote_aor.encode()
    )


__all__ = ["ActiveCall", "SecureProtector", "Spawner", "incoming_record", "tap_payloads"]
