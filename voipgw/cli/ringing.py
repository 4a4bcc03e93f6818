"""``voipgw listen`` ringing by hand: who calls (signed AOR, local name, trust state, SAS) and the keys that answer
(``a``/Enter), reject (``r``: 603 Decline) or send busy (``b``: 486). Terminal I/O only; ``Phone`` does the call
control (``ring``, ``ringing_call``, ``answer``, ``decline``)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from voipgw.call import CallRecord, Security
from voipgw.cli.style import BELL, loud, use_colour
from voipgw.phone import IncomingCall, Phone

RING_BY_HAND_MAX_S = 120.0
"""Nobody pressed a key for this long (and the caller kept ringing): 480 Temporarily Unavailable."""
POLL_S = 0.1


class Decision(enum.Enum):
    ANSWER = "answer"
    REJECT = "reject"
    BUSY = "busy"
    GONE = "gone"
    """The caller gave up (CANCEL) or the call ended before anyone decided."""
    NO_ANSWER = "no-answer"
    STOP = "stop"
    """The listener is stopping (SIGINT/SIGTERM)."""


KEYS: dict[str, Decision] = {
    "a": Decision.ANSWER,
    "\n": Decision.ANSWER,
    "\r": Decision.ANSWER,
    "r": Decision.REJECT,
    "b": Decision.BUSY,
}
"""What each key does while a call rings (case-insensitive); any other key is ignored."""


@dataclass(frozen=True)
class Refusal:
    code: int
    phrase: str


REFUSALS: dict[Decision, Refusal] = {
    Decision.REJECT: Refusal(603, "Decline"),
    Decision.BUSY: Refusal(486, "Busy Here"),
    Decision.NO_ANSWER: Refusal(480, "Temporarily Unavailable"),
    Decision.STOP: Refusal(480, "Temporarily Unavailable"),
}
"""The status the caller gets, as itself, for each way of not answering."""


def trust_label(rec: CallRecord) -> str:
    """The trust state a ringing call shows: first contact / known / verified / KEY CHANGED / NOT SECURE."""
    if rec.security is Security.NOT_SECURE:
        return loud("NOT SECURE (no end-to-end encryption)", sys.stderr, bell=False)
    if rec.security is Security.KEY_CHANGED or rec.trust_state == "key-changed":
        return loud("KEY CHANGED (unverified)", sys.stderr, bell=False)
    if rec.security is Security.SECURE_VERIFIED:
        return "verified"
    if rec.trust_state == "first-contact":
        return "first contact (unverified)"
    if rec.trust_state == "known":
        return "known (unverified)"
    if rec.security is Security.SECURE_UNVERIFIED:
        return "secure, unverified"
    return str(rec.security.value)


def ringing_text(rec: CallRecord, name: str | None) -> str:
    """The lines shown while a call rings: who (signed AOR and local name once the key exchange signed it), trust
    state, the SAS once known, and the keys."""
    who = f"{name} <{rec.remote_aor}>" if name and rec.secure else rec.remote_aor
    if not rec.secure:
        who += " (unsigned: anyone can write this From)"
    lines = [f"RINGING: {who} | {trust_label(rec)}"]
    if rec.sas:
        lines.append(f"  SAS {rec.sas} / {' '.join(rec.sas_words or ())} (the caller sees the same)")
    elif rec.secure:
        lines.append("  SAS not received from the caller (compare it once answered)")
    lines.append("  press a or Enter to answer, r to reject (603 Decline), b for busy (486)")
    return "\n".join(lines)


def _local_name(phone: Phone, rec: CallRecord) -> str | None:
    if phone.trust is None or not rec.secure:
        return None
    try:
        contact = phone.trust.store.get(rec.remote_aor)
    except Exception:  # a store failure costs the name, never the call
        return None
    return None if contact is None else contact.name


@contextlib.contextmanager
def _keys(queue: asyncio.Queue[str]) -> Iterator[None]:
    """stdin in cbreak mode, each key pressed into ``queue``; the terminal restored on the way out."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()

    def on_key() -> None:
        data = os.read(fd, 16).decode(errors="replace")
        for ch in data:
            queue.put_nowait(ch)

    tty.setcbreak(fd)
    loop.add_reader(fd, on_key)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def ring_by_hand(phone: Phone, incoming: IncomingCall, stop: asyncio.Event) -> tuple[Decision, str | None]:
    """Ring until the user decides (or the caller gives up, or the listener stops); returns the decision and, for
    ``GONE``, the caller's reason. The caller's SAS and the trust state are shown once the early dialog has them."""
    gone = await phone.ring(incoming, 0.0)  # early dialog, the caller's SAS (bounded), our 180: no waiting here
    if gone is not None:
        return Decision.GONE, gone
    call = phone.ringing_call(incoming)
    if call is None or call.record.security is Security.REFUSED:
        return Decision.ANSWER, None  # the offer was refused: ``answer`` reports it
    rec = call.record
    bell = BELL if use_colour(sys.stderr) else ""  # a ring a person hears; never into a log or a pipe
    print(bell + ringing_text(rec, _local_name(phone, rec)), file=sys.stderr, flush=True)
    queue: asyncio.Queue[str] = asyncio.Queue()
    deadline = time.monotonic() + RING_BY_HAND_MAX_S
    sas_shown = rec.sas is not None
    with _keys(queue):
        while True:
            if rec.sas and not sas_shown:  # the caller's reveal came after the bounded wait: show it now
                sas_shown = True
                print(f"  SAS {rec.sas} / {' '.join(rec.sas_words or ())} (the caller sees the same)", file=sys.stderr,
                      flush=True)  # fmt: skip
            if rec.finished:
                return Decision.GONE, rec.reason or "cancelled"
            if stop.is_set():
                return Decision.STOP, None
            if time.monotonic() >= deadline:
                return Decision.NO_ANSWER, None
            with contextlib.suppress(asyncio.TimeoutError):
                key = await asyncio.wait_for(queue.get(), POLL_S)
                decision = KEYS.get(key.lower())
                if decision is not None:
                    return decision, None
