"""The launchers stop whole process groups: Kamailio forks workers, and when its main process dies first (SIGKILL,
a crash) they used to stay behind with parent 1; stopping the launcher now kills them too."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.requires import requires
from tests.testbed.kamailio import Kamailio

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio")]


def _group(pgid: int) -> set[int]:
    """Live (non-zombie) members of process group ``pgid``."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.add(int(entry.name))
    return members


def test_kamailios_workers_die_with_it_even_when_its_main_process_was_killed_first(tmp_path: Path) -> None:
    pbx = Kamailio(tmp_path).start()
    try:
        assert pbx.proc is not None
        main = pbx.proc.pid
        workers = _group(main) - {main}
        assert workers, "kamailio forked no workers"
        os.kill(main, signal.SIGKILL)  # the main process alone: its workers are orphaned
        pbx.proc.popen.wait(timeout=5)
        time.sleep(0.2)
        assert _group(main), "the workers should still be alive until the launcher stops the group"
    finally:
        pbx.stop()
    deadline = time.monotonic() + 5
    while _group(main) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group(main), _group(main)
