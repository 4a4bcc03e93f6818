"""``voipgw gateway``: run the B2BUA in the foreground from command-line flags until SIGTERM/SIGINT.

Parses flags and loads one identity per inside user; the bridging itself lives in voipgw.gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path

from ratchet.identity import IdentityKey
from voipgw.cli.errors import CliError
from voipgw.config import ConfigError, parse_hostport
from voipgw.gateway import Gateway, GatewayConfig, InsideUser
from voipgw.store.contacts import ContactStoreError
from voipgw.store.keyfile import load_or_create_identity, passphrase_from_env
from voipgw.trust import TrustStore


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    g = sub.add_parser("gateway", help="run the gateway: plain inside phones <-> end-to-end encrypted calls outside")
    g.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:5070", help="SIP address (both legs)")
    g.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME=CONTACT[,AOR]",
        help="a static inside phone, e.g. alice=sip:alice@127.0.0.1:5062,alice@example.org "
        "(AOR default: NAME@HOST of --listen); repeat for more",
    )
    g.add_argument(
        "--route", action="append", default=[], metavar="NAME=URI", help="outside destination for a dialled user"
    )
    g.add_argument("--proxy", metavar="HOST:PORT", help="send outside calls through this proxy (the PBX)")
    g.add_argument(
        "--no-bind-call-id",
        action="store_true",
        help="accept a signed Call-ID other than the SIP one (behind a B2BUA PBX that renames Call-IDs)",
    )
    g.add_argument("--no-answer-timeout", type=float, default=30.0, metavar="S", help="ringing limit per leg")
    g.add_argument("--snapshot-json", type=Path, metavar="FILE", help="write the call snapshot here on exit")
    g.set_defaults(func=run_gateway)


def _users(args: argparse.Namespace, host: str) -> tuple[InsideUser, ...]:
    users: list[InsideUser] = []
    for spec in args.user:
        name, sep, rest = spec.partition("=")
        contact, _, aor = rest.partition(",")
        if not sep or not name or not contact.startswith("sip:"):
            raise CliError(f"--user {spec!r}: expected NAME=sip:CONTACT[,AOR]", 2)
        if any(u.name == name for u in users):
            raise CliError(f"--user {name!r} given twice", 2)
        users.append(InsideUser(name=name, contact=contact, outside_aor=aor or f"{name}@{host}"))
    if not users:
        raise CliError("no inside users: give at least one --user NAME=sip:CONTACT", 2)
    return tuple(users)


def gateway_config(args: argparse.Namespace) -> GatewayConfig:
    try:
        host, port = parse_hostport(args.listen, "--listen")
        proxy = parse_hostport(args.proxy, "--proxy", 5060) if args.proxy else None
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None
    routes: dict[str, str] = {}
    for spec in args.route:
        name, sep, uri = spec.partition("=")
        if not sep or not name or not uri.startswith("sip:"):
            raise CliError(f"--route {spec!r}: expected NAME=sip:URI", 2)
        routes[name] = uri
    return GatewayConfig(
        home=args.home,
        users=_users(args, host),
        listen_host=host,
        listen_port=port,
        outside_proxy=proxy,
        routes=routes,
        no_answer_timeout_s=args.no_answer_timeout,
        bind_call_id=not args.no_bind_call_id,
    )


def _load(config: GatewayConfig) -> tuple[dict[str, IdentityKey], dict[str, TrustStore]]:
    identities: dict[str, IdentityKey] = {}
    trust: dict[str, TrustStore] = {}
    try:
        for user in config.users:
            home = config.home / "users" / user.name
            try:
                home.mkdir(parents=True, exist_ok=True, mode=0o700)
                identities[user.name] = load_or_create_identity(home, passphrase_from_env())
            except Exception as exc:  # one clear line for any key-file problem
                raise CliError(f"identity of {user.name} in {home}: {exc}") from None
            try:
                trust[user.name] = TrustStore(home)
            except ContactStoreError as exc:
                raise CliError(f"contact store of {user.name}: {exc}") from None
    except BaseException:
        for store in trust.values():
            store.close()
        raise
    return identities, trust


async def _main(args: argparse.Namespace) -> int:
    config = gateway_config(args)
    if not args.verbose:
        # Each call's security state and SAS is what an operator runs the gateway to see: shown by default.
        logging.getLogger("voipgw.gateway").setLevel(logging.INFO)
    identities, trust = _load(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(config, identities, trust)
    try:
        try:
            await gateway.start()
        except OSError as exc:
            raise CliError(f"cannot bind SIP on {args.listen}: {exc.strerror}") from None
        users = ", ".join(f"{u.name} ({u.outside_aor})" for u in config.users)
        print(f"gateway listening on sip:{config.listen_host}:{gateway.port} for {users}", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await gateway.stop()
        if args.snapshot_json is not None:
            args.snapshot_json.write_text(json.dumps(gateway.snapshot(), indent=2, default=str))
        for store in trust.values():
            store.close()
    return 0


def run_gateway(args: argparse.Namespace) -> int:
    import uvloop

    return int(uvloop.run(_main(args)))
