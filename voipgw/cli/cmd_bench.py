"""``voipgw bench``: benchmarks that print ratios against baselines measured in the same run."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmarks (ratios against baselines measured in the same run)")
    bsub = p.add_subparsers(dest="bench", metavar="WHAT")
    c = bsub.add_parser("crypto", help="per-frame seal+open and handshake cost against pylibsrtp")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.add_argument("--rounds", type=int, default=41, help="interleaved measurement rounds (median reported)")
    c.set_defaults(func=run_crypto)
    p.set_defaults(func=lambda a: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


GOALS = {"ratio_default_vs_srtp": 1.0, "ratio_per_frame_rekey_vs_srtp": 2.0}
ROWS = [
    ("srtp_protect_unprotect_us", "pylibsrtp AES_CM_128_HMAC_SHA1_80 protect+unprotect, 60 B (µs)"),
    ("seal_open_us_default", "voipgw seal+open, default settings (µs)"),
    ("seal_open_us_per_frame_rekey", "voipgw seal+open, a fresh AEAD key every frame (µs)"),
    ("seal_open_us_chain_step_per_frame", "voipgw seal+open, KDF_CK step every frame (µs)"),
    ("ratio_default_vs_srtp", "ratio default / SRTP"),
    ("ratio_per_frame_rekey_vs_srtp", "ratio per-frame rekey / SRTP"),
    ("ratio_chain_step_per_frame_vs_srtp", "ratio chain step per frame / SRTP"),
    ("overhead_bytes_default", "steady-state overhead per frame (bytes, 80-bit tag)"),
    ("overhead_bytes_avg_default_call", "average overhead over a 120 s call (bytes)"),
    ("handshake_ms_x25519", "handshake, both sides, x25519 (ms)"),
    ("handshake_ms_hybrid", "handshake, both sides, x25519+ML-KEM-768 (ms)"),
]


def run_crypto(args: argparse.Namespace) -> int:
    from voipgw.bench import crypto

    results = crypto.run(rounds=args.rounds)
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return 0
    print("voipgw bench crypto (medians of interleaved rounds; ratios per round against SRTP run alongside)")
    for key, label in ROWS:
        goal = GOALS.get(key)
        note = f"   goal <= {goal}" if goal is not None else ""
        print(f"  {label:<66} {results[key]:>9.3f}{note}")
    return 0
