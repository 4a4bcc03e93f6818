"""``voipgw demo``: the embedded main job (a real encrypted call on loopback, with the evidence)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="place a real end-to-end encrypted call on loopback and show the evidence")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    p.add_argument("--workdir", type=Path, help="keep homes, logs, recordings and the capture here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voipgw.demo import report, run_demo

    result = run_demo(args.workdir, keep=args.workdir is not None)
    if args.json:
        print(json.dumps({**result.data, "checks": result.checks, "ok": result.ok}, indent=2, sort_keys=True))
    else:
        print(report(result))
    return 0 if result.ok else 1
