"""The CLI's user-facing failure, in its own module so ``python -m voipgw.cli.main`` and the command modules
share one class (running a module as ``__main__`` would otherwise create a second, uncatchable copy)."""

from __future__ import annotations


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
