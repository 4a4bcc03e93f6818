"""A corrupt store file under a gateway run from its TOML file: a damaged identity key or contact store stops the
start with one line that names the file (exit status 2), the file is left byte for byte as it was (never replaced
by a new identity or an empty store), and once the contact store is moved aside with `voipgw contacts quarantine`
(kept, not deleted) the gateway starts again with the same identity.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.config_gateway import GATEWAY_BLOCK, write_config, zone_tables
from tests.support.phones import voipgw_argv
from tests.support.requires import requires
from tests.testbed.kamailio import Kamailio
from tests.testbed.ports import PortBlock, reserve_block

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.interop, requires("kamailio")]

RUN_TIMEOUT_S = 60.0


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "garbage":
        path.write_bytes(b"\x00garbage, not what was stored\n" * 40)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2] if path.suffix == ".pem" else data[:700])
    elif how == "flipped":
        # SQLite's header magic damaged: what a bad sector or a stray write does to the first page.
        path.write_bytes(b"SQLite formal 3\x00" + data[16:])
    else:
        raise ValueError(how)


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    with Kamailio(tmp_path_factory.mktemp("corrupt-pbx")) as k:
        yield k


def config(tmp_path: Path, pbx: Kamailio, ports: PortBlock) -> Path:
    zones = zone_tables(ports)
    tables: dict[str, dict[str, Any]] = {
        "gateway": {"control_socket": str(tmp_path / "gw.sock")},
        "inside": zones["inside"],
        "outside": {"registrar": f"127.0.0.1:{pbx.port}", **zones["outside"]},
        "users.bob": {"outside_aor": "bob@127.0.0.1", "inside_contact": "127.0.0.1:9"},
    }
    return write_config(tmp_path / "gw.toml", tables)


def start_and_stop(home: Path, cfg: Path, log: Path) -> None:
    """The gateway starts (bounded wait for its banner) and stops on SIGTERM with status 0."""
    with log.open("wb") as out:
        proc = subprocess.Popen(voipgw_argv(home, "gateway", "--config", str(cfg)), stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while "gateway listening on" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def refused(home: Path, cfg: Path) -> str:
    out = subprocess.run(
        voipgw_argv(home, "gateway", "--config", str(cfg)), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("filename", "how"),
    [
        ("identity.pem", "garbage"),
        ("identity.pem", "empty"),
        ("identity.pem", "truncated"),
        ("contacts.db", "garbage"),
        ("contacts.db", "truncated"),
        ("contacts.db", "flipped"),
    ],
)
def test_a_corrupt_store_file_stops_the_gateway_clearly_and_is_kept(
    tmp_path: Path, pbx: Kamailio, filename: str, how: str
) -> None:
    home = tmp_path / "home"
    bob_dir = home / "users" / "bob"
    with reserve_block(GATEWAY_BLOCK) as ports:
        cfg = config(tmp_path, pbx, ports)
        start_and_stop(home, cfg, tmp_path / "first.log")
        identity = (bob_dir / "identity.pem").read_bytes()
        target = bob_dir / filename
        damage(target, how)
        damaged = target.read_bytes()
        files = sorted(p.name for p in bob_dir.iterdir())

        line = refused(home, cfg)
        print(f"{filename} {how}: {line}")
        assert line.startswith("voipgw: users.bob: "), line
        assert str(target) in line, "the message must name the damaged file"
        assert "untouched" in line, line
        assert target.read_bytes() == damaged, "the damaged file was modified"
        assert sorted(p.name for p in bob_dir.iterdir()) == files, "files appeared or vanished next to it"
        if filename == "identity.pem":
            return  # only the operator may decide to give up an identity (the message says how)

        # The documented way out: move the store aside (kept), and the gateway starts with its same identity.
        out = subprocess.run(
            voipgw_argv(bob_dir, "contacts", "quarantine", "--yes"),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
        assert out.returncode == 0, out.stderr
        kept = [p for p in bob_dir.iterdir() if p.name.startswith("contacts.db") and p.name != "contacts.db"]
        assert [p.read_bytes() for p in kept] == [damaged], (kept, out.stdout)
        start_and_stop(home, cfg, tmp_path / "after.log")
        assert (bob_dir / "identity.pem").read_bytes() == identity
        assert [p.read_bytes() for p in kept] == [damaged], "the quarantined copy changed"
        shutil.rmtree(home)
