"""Run-wide checks and fixtures shared by more than one test module (a module's own fixture of the same name takes
precedence): the ``requires`` marker (tests/support/requires.py) and the end-of-run check that the tests left no
process running (tests/support/leaks.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.support.leaks import TOKEN_VAR, find_survivors, kill_survivors
from tests.support.requires import need
from tests.testbed.sip_peer import SipPeer


def pytest_sessionstart(session: pytest.Session) -> None:
    # Every process a test starts inherits this, however it is started (env copies os.environ).
    os.environ[TOKEN_VAR] = uuid.uuid4().hex


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires"):
        need(*mark.args)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a process it started is still alive, after killing it (and its process group)."""
    token = os.environ.get(TOKEN_VAR)
    if not token:
        return
    survivors = find_survivors(token)
    if not survivors:
        return
    kill_survivors(survivors)
    lines = [f"the tests left {len(survivors)} process(es) running (now killed):", *(f"  {s}" for s in survivors)]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        print("\n".join(lines))
    else:
        reporter.write_sep("=", "process leak", red=True)
        for line in lines:
            reporter.write_line(line, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def peer() -> Iterator[SipPeer]:
    """A voipgw SIP stack in a child process (tests/testbed/sip_peer.py), stopped by PID after the test."""
    p = SipPeer()
    try:
        yield p
    finally:
        p.stop()
