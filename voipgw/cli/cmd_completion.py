"""``voipgw completion bash|zsh|tcsh``: a shell completion script for every command and option, generated from the
argument parser itself by shtab (so it never drifts from ``--help``)."""

from __future__ import annotations

import argparse

import shtab

SHELLS = ("bash", "zsh", "tcsh")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or tcsh)",
        description="Print a completion script for voipgw's commands and options. bash: "
        "'voipgw completion bash > ~/.local/share/bash-completion/completions/voipgw' (or source it from ~/.bashrc); "
        "zsh: 'voipgw completion zsh > \"${fpath[1]}/_voipgw\"'.",
    )
    c.add_argument("shell", choices=SHELLS, help="the shell to complete for")
    c.set_defaults(func=run_completion)


def run_completion(args: argparse.Namespace) -> int:
    from voipgw.cli.main import build_parser  # the whole parser, built the way `voipgw` itself builds it

    print(shtab.complete(build_parser(), shell=args.shell), end="")
    return 0
