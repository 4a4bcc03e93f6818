"""``voipgw bench``: benchmarks that print ratios against baselines measured in the same run."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmarks (ratios against baselines measured in the same run)")
    bsub = p.add_subparsers(dest="bench", metavar="WHAT")
    c = bsub.add_parser("crypto", help="per-frame seal+open and handshake cost against pylibsrtp")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.add_argument("--rounds", type=int, default=7, help="interleaved measurement rounds (median reported)")
    c.set_defaults(func=run_crypto)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def run_crypto(args: argparse.Namespace) -> int:
    print("voipgw bench crypto: not built yet", file=sys.stderr)
    return 3
