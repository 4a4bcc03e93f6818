"""``make reliability``: the impairment table of docs/RELIABILITY.md, measured on the real ratchet.

    python -m tests.reliability.impair_report

For each profile and direction: frames sent, lost on the path, first copies that arrived, those inside the
receiver's windows, how many of those opened, how many waited for a lost key announcement, other refusals,
DH ratchet steps sent/followed, and whether the ends ever desynchronised. Then the handshake's clock-skew rule.
"""

from __future__ import annotations

import sys

from ratchet.errors import HandshakeError
from tests.reliability.impair_sim import AWAITING_KEY, PROFILES, DirectionResult, run_profile
from tests.support.handshake_fixtures import T0, answer, make_offerer

HANDSHAKE_SKEWS_S = (-90.0, -59.0, -30.0, 0.0, 30.0, 59.0, 90.0)
"""Answerer clock minus offerer clock; the default window (max_skew_s) is 60 s."""


def _row(name: str, direction: str, r: DirectionResult) -> str:
    pct = 100.0 * r.opened_in_window / r.in_window if r.in_window else 0.0
    other = {k: v for k, v in r.refused.items() if k != AWAITING_KEY or v != r.awaiting_key}
    others = ", ".join(f"{k} {v}" for k, v in sorted(other.items())) or "-"
    return (
        f"| {name} | {direction} | {r.sent} | {r.lost + r.early} | {r.arrived} | {r.in_window} | "
        f"{r.opened_in_window} ({pct:.1f} %) | {r.awaiting_key} | {others} | "
        f"{r.dh_steps_sent}/{r.dh_steps_followed} | {'YES' if r.desync else 'never'} |"
    )


def impairment_table() -> list[str]:
    lines = [
        "| profile | dir | sent | lost | arrived | in window | opened (of in window) | awaiting key | "
        "refused (all, by reason) | DH steps sent/followed | desync |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for profile in PROFILES:
        result = run_profile(profile)
        lines.append(_row(profile.name, "A→B", result.a_to_b))
        lines.append(_row("", "B→A", result.b_to_a))
    return lines


def handshake_skew(skew_s: float) -> str:
    """Offerer at T0, answerer's clock at T0 + skew: what each side says."""
    offerer = make_offerer(now=T0)
    try:
        wire, _ = answer(offerer.offer_bytes, now=T0 + skew_s + 0.1)
    except HandshakeError as exc:
        return f"answerer refuses the offer: {exc.reason}"
    try:
        offerer.accept_answer(wire, T0 + 0.2)
    except HandshakeError as exc:
        return f"offerer refuses the answer: {exc.reason}"
    return "call set up"


def skew_table() -> list[str]:
    lines = ["| answerer clock − offerer clock | outcome |", "|---|---|"]
    lines += [f"| {s:+.0f} s | {handshake_skew(s)} |" for s in HANDSHAKE_SKEWS_S]
    return lines


def main() -> int:
    print("\n".join(impairment_table()))
    print()
    print("\n".join(skew_table()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
