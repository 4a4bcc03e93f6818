"""Test helper: one gateway process whose inside leg runs SDES-SRTP over SIP/TLS: the JSON config of
``tests.testbed.gateway_node`` (static users and routes) plus ``inside_srtp`` ("off"|"optional"|"required") and
``tls`` ({ca, cert, key, port}: the gateway's TLS listener and the CA its inside phones' certificates chain to).
``python -m tests.support.srtp_gateway CONFIG.json``; writes its snapshot at exit (SIGTERM). Loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.phones import ROOT, PhoneProc
from tests.testbed.gateway_node import config_from
from tests.testbed.gateway_proc import wait_listening
from tests.testbed.ports import PortBlock
from voipgw.gateway import Gateway
from voipgw.rtp.sdes import SrtpMode
from voipgw.sip import TlsOptions
from voipgw.store.keyfile import load_or_create_identity
from voipgw.trust import TrustStore


def start_srtp_gateway(workdir: Path, name: str, block: PortBlock, **keys: Any) -> tuple[PhoneProc, Path]:
    """Start it on ``block[0]`` (SIP over UDP) with ``keys`` (see the module docstring); returns the process and
    the snapshot path, once it listens."""
    snap = workdir / f"{name}.json"
    cfg = workdir / f"{name}-config.json"
    cfg.write_text(json.dumps({"home": str(workdir / f"{name}-home"), "snapshot": str(snap), **keys}, default=str))
    with (workdir / f"{name}.log").open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tests.support.srtp_gateway", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)},
            cwd=workdir,
            start_new_session=True,
        )
    proc = PhoneProc(name, workdir, popen, block[0], None)
    wait_listening(proc, name)
    return proc, snap


async def run(config_path: Path) -> int:
    data = json.loads(config_path.read_text())
    tls = data["tls"]
    config = dataclasses.replace(
        config_from(data),
        inside_srtp=SrtpMode(data.get("inside_srtp", "off")),
        outside_tls=TlsOptions(ca_file=tls["ca"], cert_file=tls["cert"], key_file=tls["key"], port=int(tls["port"])),
    )
    identities, trust = {}, {}
    for user in config.users:
        home = config.home / "users" / user.name
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        identities[user.name] = load_or_create_identity(home, None)
        trust[user.name] = TrustStore(home)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(config, identities, trust)
    try:
        await gateway.start()
        print(f"gateway listening on {gateway.port}", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await gateway.stop()
        Path(data["snapshot"]).write_text(json.dumps(gateway.snapshot(), indent=2, default=str))
        for store in trust.values():
            with contextlib.suppress(Exception):
                store.close()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(run(Path(sys.argv[1]))))
