"""What the caller sees while its call rings (``voipgw call``): trying, ringing, the far side's security once its
SAS arrives in the early dialog, a hint when nothing responds at all, and one clear line when the call does not
happen. Pure: lines in, no I/O (``cmd_call`` prints them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from voipgw.call import CallRecord, CallState, Security
from voipgw.cli.ringing import trust_label

NO_RESPONSE_HINT_S = 4.0
"""Still only "calling" after this long (no 180/183 nor any final status): say that nothing may be listening."""

OUTCOMES: dict[str, str] = {
    "408": "{aor} did not answer ({reason})",
    "480": "{aor} is unavailable ({reason})",
    "486": "{aor} is busy ({reason})",
    "600": "{aor} is busy everywhere ({reason})",
    "603": "{aor} declined the call ({reason})",
    "404": "{aor} is not known there ({reason})",
    "487": "the call was cancelled before it was answered ({reason})",
}
"""The closing line for a call that was never answered, by the SIP status the caller got."""

UNANSWERED_CODES = frozenset({"408", "480", "486", "600", "603", "404", "487"})
"""Statuses that end a call before any key exchange settles because nobody answered (not a security refusal)."""


@dataclass
class CallerProgress:
    """Feed it the ringing call (``Phone.pending``) every few hundred ms; it returns the lines to print once each."""

    target: str
    no_answer_timeout_s: float
    _told: set[str] = field(default_factory=set)

    def update(self, rec: CallRecord | None, elapsed_s: float) -> list[str]:
        lines: list[str] = []

        def once(key: str, line: str) -> None:
            if key not in self._told:
                self._told.add(key)
                lines.append(line)

        once("trying", f"calling {self.target} (trying)")
        state = rec.state if rec is not None else CallState.CALLING
        if rec is not None and state in (CallState.RINGING, CallState.EARLY):
            once("ringing", "ringing")
            if rec.sas:
                once(
                    "security",
                    f"ringing: {rec.remote_aor} | {trust_label(rec)} | SAS {rec.sas} / {' '.join(rec.sas_words or ())}",
                )
            elif rec.security is Security.NOT_SECURE:
                once("security", f"ringing: {rec.remote_aor} | {trust_label(rec)}")
        elif state is CallState.CALLING and elapsed_s >= NO_RESPONSE_HINT_S:
            once(
                "silent",
                f"no response from {self.target} after {elapsed_s:.0f} s: nothing may be listening there (still "
                f"trying until the no-answer timeout, {self.no_answer_timeout_s:g} s; Ctrl-C gives up)",
            )
        return lines


def status_code(reason: str | None) -> str | None:
    """The SIP status a reason starts with (``"486 Busy Here"`` -> ``"486"``), ``"487"`` for our own cancel."""
    if not reason:
        return None
    if reason.startswith("cancelled"):
        return "487"
    head = reason.split(" ", 1)[0]
    return head if len(head) == 3 and head.isdigit() else None


UNREACHABLE_MARK = "ICMP port unreachable"
"""In the 503 a request gets when nothing listens at its address (``voipgw.sip.unreachable``)."""


def unreachable(reason: str | None) -> bool:
    return status_code(reason) == "503" and UNREACHABLE_MARK in (reason or "")


def outcome_line(rec: CallRecord, rang: bool) -> str | None:
    """One clear closing line for a call that was never answered (None for others: the summary says it all).
    ``rang``: a 180/183 came back, so something is there (a 408 then means nobody picked up)."""
    if rec.started_at is not None:
        return None
    code = status_code(rec.reason)
    if unreachable(rec.reason):
        return f"nothing listens at the address of {rec.remote_aor} ({rec.reason}): check the host and port"
    if code == "408" and not rang:
        return f"nothing answered at {rec.remote_aor}: no response at all ({rec.reason}); is a phone listening there?"
    template = OUTCOMES.get(code or "")
    return None if template is None else template.format(aor=rec.remote_aor, reason=rec.reason)


def never_keyed(rec: CallRecord) -> bool:
    """The call ended before any key exchange (nobody answered, cancelled): its "refused" security is no refusal."""
    return (
        rec.security is Security.REFUSED
        and rec.remote_identity is None
        and not rec.trust_warning
        and (status_code(rec.reason) in UNANSWERED_CODES or unreachable(rec.reason))
    )
