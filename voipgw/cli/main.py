"""Entry point of the ``voipgw`` console script: global options, sub-command dispatch, clean error exits."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from voipgw import __version__
from voipgw.cli.errors import CliError

# Each command module exposes ``register(subparsers) -> None`` and sets ``func`` on its parser.
_COMMAND_MODULES = (
    "voipgw.cli.cmd_call",
    "voipgw.cli.cmd_demo",
    "voipgw.cli.cmd_bench",
    "voipgw.cli.cmd_id",
    "voipgw.cli.cmd_contacts",
    "voipgw.cli.cmd_gateway",
)


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "voipgw"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voipgw",
        description="End-to-end encrypted SIP calls: softphone, gateway and safety-number tools.",
    )
    parser.add_argument("--version", action="version", version=f"voipgw {__version__}")
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="state directory (identity, contacts, logs); default: $XDG_DATA_HOME/voipgw",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.home is None:
        args.home = default_home()
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except CliError as exc:
        print(f"voipgw: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `voipgw contacts --json | head`: the reader left, which is not an error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
