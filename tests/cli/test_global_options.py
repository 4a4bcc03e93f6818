"""Global options (--home, -v, -q) work after the command too, and the corrupt-store hint is a command line that
runs as printed (it used to suggest an order that argparse refused)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from voipgw.cli.main import main


def test_home_and_verbose_after_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "h"
    assert main(["contacts", "--home", str(home), "-v", "--json"]) == 0
    assert (home / "contacts.db").exists()  # the --home given after the command was used
    assert main(["id", "show", "--aor", "a@example.org", "--home", str(home), "-q"]) == 0
    assert (home / "identity.pem").exists()
    assert main(["--home", str(tmp_path / "other"), "contacts", "--home", str(home), "--json"]) == 0
    assert not (tmp_path / "other").exists()  # the later --home wins
    capsys.readouterr()


def test_the_corrupt_store_hint_runs_as_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "h"
    home.mkdir(mode=0o700)
    (home / "contacts.db").write_bytes(b"\x00garbage" * 512)
    (home / "contacts.db").chmod(0o600)
    assert main(["--home", str(home), "contacts"]) == 1
    err = capsys.readouterr().err
    hint = re.search(r"Move it aside with '([^']+)'", err)
    assert hint is not None, err
    argv = shlex.split(hint.group(1))
    assert argv[:3] == ["voipgw", "contacts", "quarantine"] and "--home" in argv
    assert main([*argv[1:], "--yes"]) == 0
    assert not (home / "contacts.db").exists()
    assert len(list(home.glob("contacts.db.corrupt-*"))) == 1
