"""The end-of-run process-leak check (tests/support/leaks.py): it finds a process carrying the run token, and only
such processes, and kills it with its process group."""

from __future__ import annotations

import os
import subprocess
import uuid

from tests.support.leaks import TOKEN_VAR, ancestors, find_survivors, kill_survivors
from tests.testbed.proc import stop_group


def _sleeper(token: str | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_VAR}
    if token is not None:
        env[TOKEN_VAR] = token
    return subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)


def test_a_process_with_the_token_is_found_and_killed_with_its_group_and_others_are_not() -> None:
    token = uuid.uuid4().hex  # not this run's: the check at the end of the run must not see these sleepers
    ours, other = _sleeper(token), _sleeper(None)
    try:
        found = find_survivors(token)
        assert [s.pid for s in found] == [ours.pid]
        assert found[0].pgid == ours.pid
        assert found[0].cmdline == "sleep 60"
        assert f"pid {ours.pid}" in str(found[0])

        kill_survivors(found)
        assert ours.wait(timeout=5) == -9
        assert other.poll() is None
        assert find_survivors(token) == []
    finally:
        for p in (ours, other):
            stop_group(p, grace=1.0)


def test_the_runner_and_its_ancestors_are_never_survivors() -> None:
    me = ancestors(os.getpid())
    assert os.getpid() in me and os.getppid() in me
    token = os.environ.get(TOKEN_VAR, "")
    assert token, "tests/conftest.py sets the run token at session start"
    assert not me & {s.pid for s in find_survivors(token)}
