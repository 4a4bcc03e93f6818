"""Test helper: one gateway process, either as operators run it (a TOML file: GatewayRuntime, registering its
users to the PBX) or built straight from JSON (static routes, as flag mode does), plus test-only overrides (routes,
media timeout) and a snapshot written on SIGUSR1 and at exit. Both build the one gateway configuration type, which
``b2bua_config`` translates for the B2BUA. Runs until SIGTERM; loopback only.

``python -m tests.testbed.gateway_node CONFIG.json``: see ``write_config`` for the keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from ratchet.identity import IdentityKey
from voipgw.config import Policy
from voipgw.gateway import B2buaSettings, Gateway
from voipgw.gateway.runtime import GatewayRuntime, b2bua_config
from voipgw.ops.config import (
    DestinationRule,
    GatewayConfig,
    InsideConfig,
    OutsideConfig,
    UserConfig,
    load_gateway_config,
)
from voipgw.sip.uri import hostport
from voipgw.store.keyfile import load_or_create_identity
from voipgw.trust import TrustStore


def write_config(path: Path, **keys: Any) -> Path:
    """``home``, ``snapshot`` (path), and either ``toml`` (a gateway TOML file; then ``routes`` and
    ``media_timeout_s`` are applied on top) or ``port``, ``users`` ([{name, contact, outside_aor, policy?}]),
    ``proxy`` ([host, port]?), ``routes`` ({user: uri}), ``policy``, ``destinations`` ([{match, policy, users?}]),
    ``no_answer_timeout_s``, ``media_timeout_s``, ``bind_call_id``, ``speak_sas`` (default False, either mode)."""
    path.write_text(json.dumps(keys, default=str))
    return path


def config_from(data: dict[str, Any]) -> B2buaSettings:
    users = {
        u["name"]: UserConfig(
            name=u["name"],
            outside_aor=u["outside_aor"],
            username=u["outside_aor"].partition("@")[0],
            inside_contact=hostport(u["contact"]),
            inside_uri=u["contact"],
            policy=Policy(u["policy"]) if u.get("policy") else None,
        )
        for u in data["users"]
    }
    rules = tuple(
        DestinationRule(r["match"], Policy(r["policy"]), frozenset(r.get("users", ())))
        for r in data.get("destinations", ())
    )
    proxy = data.get("proxy")
    config = GatewayConfig(
        inside=InsideConfig(listen=("127.0.0.1", int(data["port"])), auth=False),
        outside=OutsideConfig(
            registrar=None,
            listen=None,  # the flag-mode shape: static phones, no PBX, one socket
            proxy=(proxy[0], int(proxy[1])) if proxy else None,
            bind_call_id=bool(data.get("bind_call_id", True)),
            register=False,
        ),
        users=users,
        destinations=rules,
        policy=Policy(data.get("policy", "require")),
        media_timeout_s=float(data.get("media_timeout_s", 10.0)),
        routes=dict(data.get("routes", {})),
        speak_sas=bool(data.get("speak_sas", False)),
    )
    return b2bua_config(config, Path(data["home"]), float(data.get("no_answer_timeout_s", 30.0)))


def _load(config: B2buaSettings) -> tuple[dict[str, IdentityKey], dict[str, TrustStore]]:
    identities: dict[str, IdentityKey] = {}
    trust: dict[str, TrustStore] = {}
    for user in config.users:
        home = config.home / "users" / user.name
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        identities[user.name] = load_or_create_identity(home, None)
        trust[user.name] = TrustStore(home)
    return identities, trust


async def run_runtime(data: dict[str, Any]) -> int:
    """The TOML mode: GatewayRuntime (registrations with digest auth, control socket), as ``voipgw gateway``."""
    # The spoken SAS mutes the far end for ~3 s after the answer: off unless a test asks for it (its own tests).
    overrides: dict[str, Any] = {"routes": dict(data.get("routes", {})), "speak_sas": bool(data.get("speak_sas"))}
    if "media_timeout_s" in data:
        overrides["media_timeout_s"] = float(data["media_timeout_s"])  # may be under the file's 5 s minimum
    config = dataclasses.replace(load_gateway_config(Path(data["toml"])), **overrides)
    runtime = GatewayRuntime(
        config, Path(data["home"]), no_answer_timeout_s=float(data.get("no_answer_timeout_s", 30.0))
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    snapshot = Path(data["snapshot"])
    seq = [0]

    def dump() -> None:
        seq[0] += 1
        tmp = snapshot.with_suffix(".tmp")
        tmp.write_text(json.dumps({"seq": seq[0], **runtime.snapshot()}, indent=2, default=str))
        tmp.replace(snapshot)

    loop.add_signal_handler(signal.SIGUSR1, dump)
    try:
        await runtime.start()
        print(f"gateway listening on {runtime.port}", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await runtime.stop()
        dump()
    return 0


async def run(config_path: Path) -> int:
    data = json.loads(config_path.read_text())
    if "toml" in data:
        return await run_runtime(data)
    config = config_from(data)
    identities, trust = _load(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(config, identities, trust)
    snapshot = Path(data["snapshot"])
    seq = [0]

    def dump() -> None:
        # SIGUSR1 (and the exit) write the snapshot atomically, numbered, so a test can wait for a fresh one.
        seq[0] += 1
        tmp = snapshot.with_suffix(".tmp")
        tmp.write_text(json.dumps({"seq": seq[0], **gateway.snapshot()}, indent=2, default=str))
        tmp.replace(snapshot)

    loop.add_signal_handler(signal.SIGUSR1, dump)
    try:
        await gateway.start()
        print(f"gateway listening on {gateway.port}", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await gateway.stop()
        dump()
        for store in trust.values():
            with contextlib.suppress(Exception):
                store.close()
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvloop

    return int(uvloop.run(run(Path(sys.argv[1]))))


if __name__ == "__main__":
    sys.exit(main())
