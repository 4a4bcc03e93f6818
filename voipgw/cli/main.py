"""Entry point of the ``voipgw`` console script: global options, sub-command dispatch, clean error exits.

No traceback ever reaches a user: an unexpected exception is one ``voipgw: error: ...`` line (exit 1) and its
detail goes to the log file ``<home>/voipgw.log``. ``VOIPGW_DEBUG=1`` re-raises it instead (for developers).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from voipgw import __version__
from voipgw.cli.errors import CliError

# Each command module exposes ``register(subparsers) -> None`` and sets ``func`` on its parser.
_COMMAND_MODULES = (
    "voipgw.cli.cmd_call",
    "voipgw.cli.cmd_demo",
    "voipgw.cli.cmd_bench",
    "voipgw.cli.cmd_id",
    "voipgw.cli.cmd_contacts",
    "voipgw.cli.cmd_contacts_add",  # after cmd_contacts: it adds 'contacts add'
    "voipgw.cli.cmd_history",
    "voipgw.cli.cmd_gateway",
    "voipgw.cli.cmd_completion",
)


LOG_FILENAME = "voipgw.log"
DEBUG_ENV = "VOIPGW_DEBUG"
EXIT_INTERNAL = 1
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
crash_log = logging.getLogger("voipgw.crash")
"""The detail (traceback) of unexpected errors: written to the log file only, never to the terminal."""


MAX_LOG_BYTES = 5 * 1024 * 1024
"""Past this size the log file is moved to ``voipgw.log.1`` (replacing the previous one) when next opened."""


class HomeLogHandler(logging.Handler):
    """Appends to ``<home>/voipgw.log`` (mode 0600), opened on the first record and only if the home directory
    exists by then (a command that fails before creating it leaves nothing behind). Never raises."""

    def __init__(self, home: Path) -> None:
        super().__init__()
        self.path = home / LOG_FILENAME
        self._stream: Any = None
        self.setFormatter(logging.Formatter(_LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._stream is None:
                if not self.path.parent.is_dir():
                    return
                with contextlib.suppress(OSError):
                    if self.path.stat().st_size > MAX_LOG_BYTES:
                        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o600)
                self._stream = os.fdopen(fd, "a", encoding="utf-8", errors="replace")
            self._stream.write(self.format(record) + "\n")
            self._stream.flush()
        except Exception:  # a log file we cannot write costs the log line, never the command
            self._stream = None

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(OSError):
                self._stream.close()
            self._stream = None
        super().close()


KEY_CHANGE_MARK = "has CHANGED."
"""In every changed-key warning (``voipgw.trust``): the line the softphone's banner already shows."""


class _TerminalFilter(logging.Filter):
    """Keeps the CLI's own INFO lines (each call's summary, its SAS) out of the terminal unless -v: they are for
    the log file, and the terminal already shows them in its own words."""

    def __init__(self, level: int, key_change_banner: bool = False) -> None:
        super().__init__()
        self.level = level
        self.key_change_banner = key_change_banner
        """The softphone prints a changed key's warning itself, loud, once: its log copy goes to the file only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if self.key_change_banner and KEY_CHANGE_MARK in record.getMessage():
            return False
        return record.levelno >= self.level or not record.name.startswith("voipgw.cli")


def setup_logging(
    home: Path, verbose: int, quiet: bool, to_file: bool = True, key_change_banner: bool = False
) -> HomeLogHandler:
    """Log lines to stderr (WARNING; INFO with -v, DEBUG with -vv; ERROR only with --quiet) and, ``to_file``, to
    ``<home>/voipgw.log`` (the same, plus every call's summary line); returns the file handler (the crash log
    writes there in any case)."""
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format=_LOG_FORMAT)
    root = logging.getLogger()
    logging.getLogger("voipgw.cli").setLevel(min(level, logging.INFO))
    for handler in root.handlers:
        if isinstance(handler, HomeLogHandler) or type(handler) is not logging.StreamHandler:
            continue
        for stale in [f for f in handler.filters if isinstance(f, _TerminalFilter)]:
            handler.removeFilter(stale)
        handler.addFilter(_TerminalFilter(level, key_change_banner))
        if quiet:
            handler.setLevel(logging.ERROR)
    for old in [h for h in root.handlers if isinstance(h, HomeLogHandler)]:  # main() run again in one process
        root.removeHandler(old)
        old.close()
    file_handler = HomeLogHandler(home)
    if to_file:
        root.addHandler(file_handler)
    crash_log.propagate = False
    crash_log.handlers = [file_handler]
    return file_handler


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "voipgw"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voipgw",
        description="End-to-end encrypted SIP calls: softphone, gateway and safety-number tools.",
        epilog=f"Global options may also follow the command (voipgw contacts --home DIR). Log lines go to stderr "
        f"and to <home>/{LOG_FILENAME} (the gateway: stderr only). call and listen read <home>/phone.toml when "
        "no --config is given. An unexpected error prints one 'voipgw: error: ...' line (exit 1) and its "
        f"detail goes to that file; {DEBUG_ENV}=1 shows the Python traceback instead (for developers). "
        "VOIPGW_PASSPHRASE unlocks a passphrase-protected identity key without a prompt.",
    )
    parser.add_argument("--version", action="version", version=f"voipgw {__version__}")
    parser.add_argument(
        "--home",
        type=Path,
        metavar="DIR",
        default=None,
        help="state directory (identity, contacts, call history, log file voipgw.log); default: $XDG_DATA_HOME/voipgw",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no live call status line and no log lines below ERROR on the terminal (the SAS, a key-change "
        "warning and the call summary are still shown)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _accept_global_options_after(parser)
    return parser


def _accept_global_options_after(parser: argparse.ArgumentParser) -> None:
    """Let --home, -v and -q also follow the (sub-)command: ``voipgw contacts quarantine --home D`` works as
    ``voipgw --home D contacts quarantine`` does. Given after, --home wins and -v counts add up."""
    seen: set[int] = set()
    stack = [parser]
    while stack:
        for action in stack.pop()._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            for child in action.choices.values():
                if id(child) in seen:
                    continue
                seen.add(id(child))
                child.add_argument("--home", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                child.add_argument(
                    "-v", "--verbose", dest="verbose_after", action="count", default=argparse.SUPPRESS,
                    help=argparse.SUPPRESS,
                )  # fmt: skip
                child.add_argument(
                    "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
                )
                stack.append(child)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose += getattr(args, "verbose_after", 0)
    if args.home is None:
        args.home = default_home()
    # The gateway's log lines are the operator's (stderr / journald, redacted by voipgw.ops.logs): only its
    # unexpected-error detail goes to the file.
    file_log = setup_logging(
        args.home,
        args.verbose,
        args.quiet,
        to_file=args.command != "gateway",
        key_change_banner=args.command in ("call", "listen"),
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
    except Exception as exc:  # the last line of defence: one line for the user, the detail in the log file
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        crash_log.error("unexpected error in 'voipgw %s'", args.command, exc_info=True)
        where = f" (detail in {file_log.path})" if file_log.path.exists() else f" (set {DEBUG_ENV}=1 for the detail)"
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"voipgw: error: {text}{where}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
