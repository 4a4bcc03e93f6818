"""``voipgw history``: the softphone's last calls, newest first, in local time, with each call's outcome, security
state, SAS and whether the peer was verified (from ``contacts.db``; ``call`` and ``listen`` add one row per call)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from voipgw.cli.cmd_contacts import aor_arg, open_trust
from voipgw.store.history import CallEntry, recent_calls


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    h = sub.add_parser(
        "history",
        help="the last calls: when (local time), direction, peer, outcome, security, SAS, verified",
        description="Calls placed or answered by 'voipgw call' and 'voipgw listen' with this --home, newest first. "
        "Times are local (--json: epoch seconds).",
    )
    h.add_argument("peer", nargs="?", metavar="CONTACT_AOR", help="only the calls with this contact")
    h.add_argument("-n", "--limit", type=int, default=20, metavar="N", help="how many calls (default 20)")
    h.add_argument("--json", action="store_true", help="print JSON")
    h.set_defaults(func=run_history)


def local_time(at: float) -> str:
    """``2026-12-07 16:05:09 CET``: the user's own clock and zone."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(at))


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}:{s % 60:02d}"


def _row(e: CallEntry) -> list[str]:
    sas = f"{e.sas} ({' '.join(e.sas_words)})" if e.sas else "-"
    result = e.state if not e.reason or e.state == "ended" else f"{e.state}: {e.reason}"
    return [
        local_time(e.at), "out" if e.direction == "outgoing" else "in", e.remote_aor, _duration(e.duration_s),
        e.security, sas, "yes" if e.verified else "no", result[:60],
    ]  # fmt: skip


def run_history(args: argparse.Namespace) -> int:
    peer = aor_arg(args.peer) if args.peer else None
    with open_trust(args) as trust:
        calls = recent_calls(trust.store, max(1, args.limit), peer)
    if args.json:
        print(json.dumps([{**dataclasses.asdict(c), "local_time": local_time(c.at)} for c in calls], indent=2))
        return 0
    if not calls:
        print("no calls yet" + (f" with {peer}" if peer else ""))
        return 0
    header = ["TIME", "DIR", "PEER", "LENGTH", "SECURITY", "SAS", "VERIFIED", "RESULT"]
    rows = [header, *(_row(c) for c in calls)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0
