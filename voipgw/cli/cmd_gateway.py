"""``voipgw gateway``: run the B2BUA in the foreground (from ``--config FILE``, or from flags) until SIGTERM/SIGINT;
``voipgw gateway status`` asks a running one over its control socket. Parsing and wiring only: the bridging lives
in voipgw.gateway, the operations pieces in voipgw.ops; a configuration mistake is one line, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from ratchet.errors import PassphraseRequired, WrongPassphrase
from ratchet.identity import IdentityKey
from voipgw.cli.cmd_gateway_contacts import register as register_contacts
from voipgw.cli.errors import CliError
from voipgw.cli.passphrase import identity_error_text
from voipgw.config import ConfigError, parse_hostport
from voipgw.gateway import B2buaSettings, Gateway
from voipgw.ops import config as ops_config
from voipgw.ops.config import GatewayConfig, InsideConfig, OutsideConfig, UserConfig
from voipgw.ops.control import FLAG_MODE, ControlError, ControlServer, refusal_summary, render_status, socket_path
from voipgw.ops.control import request as control_request
from voipgw.ops.logs import LogFormat, setup_logging
from voipgw.sip.uri import hostport
from voipgw.store.errors import ContactStoreError
from voipgw.store.keyfile import IDENTITY_FILENAME, load_or_create_identity, passphrase_from_env
from voipgw.trust import TrustStore

EXIT_FAILED = 1
"""It ran and failed (``status``: no gateway answers)."""
EXIT_USAGE = 2
"""It could not start: bad arguments or configuration (either mode), an unusable identity or contact store, an
address in use, a PBX that does not resolve or answer at start-up. Nothing is left running."""
EXIT_CODES_EPILOG = (
    "exit status: 0 stopped by SIGTERM/SIGINT after running; 1 a runtime failure (status: no gateway answers); "
    "2 usage or configuration error, with --config or with flags (arguments, configuration, identity, contact "
    "store, an address in use, an unreachable PBX at start-up: nothing is left running)"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    g = sub.add_parser(
        "gateway",
        help="run the gateway: plain inside phones <-> end-to-end encrypted calls outside",
        description="Run the gateway in the foreground from --config FILE (see config/gateway.example.toml), "
        "or from the flags below for a quick test; `voipgw gateway status` asks a running one.",
        epilog=EXIT_CODES_EPILOG,
    )
    g.add_argument("--config", type=Path, metavar="FILE", help="the gateway's TOML configuration")
    g.add_argument(
        "--log-format",
        choices=[f.value for f in LogFormat],
        help="log lines as text or one JSON object per line (default: gateway.log_format of --config, else text)",
    )
    g.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="SIP address (flag mode is a lab mode: one socket for both legs, no zones; default 127.0.0.1:5070)",
    )
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
    g.add_argument(
        "--speak-sas",
        choices=("on", "off"),
        default="on",
        help="speak the SAS to the inside phone after the answer's cue (gateway.speak_sas; default on)",
    )
    g.add_argument("--no-answer-timeout", type=float, default=30.0, metavar="S", help="ringing limit per leg")
    g.add_argument("--snapshot-json", type=Path, metavar="FILE", help="write the call snapshot here on exit")
    g.set_defaults(func=run_gateway)
    gsub = g.add_subparsers(dest="gateway_cmd", metavar="{status,check,contacts}")
    st = gsub.add_parser("status", help="registrations and active calls of the running gateway")
    st.add_argument("--json", action="store_true", help="the raw status object")
    where = st.add_mutually_exclusive_group()
    where.add_argument("--socket", type=Path, metavar="PATH", help="control socket (default: <home>/gateway.sock)")
    where.add_argument(
        "--config", dest="status_config", type=Path, metavar="FILE", help="read gateway.control_socket from here"
    )
    st.add_argument(
        "--timeout", type=positive_seconds, default=5.0, metavar="S", help="how long to wait for the answer"
    )
    st.set_defaults(func=run_status)
    ck = gsub.add_parser(
        "check",
        help="validate a gateway config file without starting: keys, values, ports free, PBX resolves and answers",
        epilog="exit status: 0 the file is usable (one 'ok: ...' line); 2 it is not (one line naming the setting)",
    )
    ck.add_argument("file", type=Path, metavar="FILE", help="the gateway TOML file (see config/gateway.example.toml)")
    ck.add_argument(
        "--offline", action="store_true", help="skip the network checks (PBX name resolution and the OPTIONS probe)"
    )
    ck.set_defaults(func=run_check)
    register_contacts(gsub)


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0 (and at most a day), else a usage error (exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds above 0 and at most 86400")
    return value


def _users(args: argparse.Namespace, host: str) -> dict[str, UserConfig]:
    users: dict[str, UserConfig] = {}
    for spec in args.user:
        name, sep, rest = spec.partition("=")
        contact, _, aor = rest.partition(",")
        if not sep or not name or not contact.startswith("sip:"):
            raise CliError(f"--user {spec!r}: expected NAME=sip:CONTACT[,AOR]", EXIT_USAGE)
        if name in users:
            raise CliError(f"--user {name!r} given twice", EXIT_USAGE)
        aor = aor or f"{name}@{host}"
        users[name] = UserConfig(
            name=name,
            outside_aor=aor,
            username=aor.partition("@")[0],
            inside_contact=hostport(contact),
            inside_uri=contact,  # called as given (its user part may differ from NAME)
        )
    if not users:
        raise CliError("no inside users: give --config FILE, or at least one --user NAME=sip:CONTACT", EXIT_USAGE)
    return users


FLAG_ONLY = ("listen", "user", "route", "proxy", "no_bind_call_id")


def gateway_config(args: argparse.Namespace) -> GatewayConfig:
    """The flags as the one gateway configuration type (the file's; ``b2bua_config`` translates both alike): static
    phones, ``--route``s, and no PBX (``outside.registrar`` None: nothing registers, outside calls go to --proxy,
    else to the dialled URI)."""
    try:
        host, port = parse_hostport(args.listen or "127.0.0.1:5070", "--listen")
        proxy = parse_hostport(args.proxy, "--proxy", 5060) if args.proxy else None
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    routes: dict[str, str] = {}
    for spec in args.route:
        name, sep, uri = spec.partition("=")
        if not sep or not name or not uri.startswith("sip:"):
            raise CliError(f"--route {spec!r}: expected NAME=sip:URI", EXIT_USAGE)
        routes[name] = uri
    return GatewayConfig(
        # Flag mode is the lab mode: static phones known by address, no registrar, no PBX, one socket for both.
        inside=InsideConfig(listen=(host, port), auth=False),
        outside=OutsideConfig(
            registrar=None, proxy=proxy, bind_call_id=not args.no_bind_call_id, register=False, listen=None
        ),
        users=_users(args, host),
        routes=routes,
        speak_sas=args.speak_sas == "on",
    )


def _load(config: B2buaSettings) -> tuple[dict[str, IdentityKey], dict[str, TrustStore]]:
    identities: dict[str, IdentityKey] = {}
    trust: dict[str, TrustStore] = {}
    try:
        with contextlib.suppress(OSError):  # a failure shows below, naming the user's folder
            (config.home / "users").mkdir(parents=True, exist_ok=True, mode=0o700)
        for user in config.users:
            home = config.home / "users" / user.name
            try:
                home.mkdir(parents=True, exist_ok=True, mode=0o700)
                identities[user.name] = load_or_create_identity(home, passphrase_from_env())
            except (PassphraseRequired, WrongPassphrase) as exc:  # a daemon never prompts: name the variable
                text = identity_error_text(exc, home / IDENTITY_FILENAME)
                raise CliError(f"identity of {user.name}: {text}", EXIT_USAGE) from None
            except Exception as exc:  # one clear line for any other key-file problem
                raise CliError(f"identity of {user.name} in {home}: {exc}", EXIT_USAGE) from None
            try:
                trust[user.name] = TrustStore(home)
            except ContactStoreError as exc:
                raise CliError(f"contact store of {user.name}: {exc}", EXIT_USAGE) from None
    except BaseException:
        for store in trust.values():
            store.close()
        raise
    return identities, trust


def _log_level(args: argparse.Namespace) -> int:
    return logging.DEBUG if args.verbose >= 2 else logging.INFO


async def _main(args: argparse.Namespace) -> int:
    from voipgw.gateway.runtime import b2bua_config

    config = b2bua_config(gateway_config(args), args.home, args.no_answer_timeout)
    if args.log_format is not None:
        setup_logging(args.log_format, _log_level(args))
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

    def status() -> dict[str, Any]:
        return {**gateway.snapshot(), "mode": FLAG_MODE}

    # Flag mode answers `gateway status` too (the same control socket in <home>), and says it is the lab mode.
    # Best effort there: a lab gateway runs without it (one warning) rather than not at all.
    control: ControlServer | None = ControlServer(socket_path(args.home, None), status)
    try:
        try:
            await gateway.start()
        except OSError as exc:
            raise CliError(
                f"--listen: cannot bind SIP on {config.listen_host}:{config.listen_port}: {exc.strerror}", EXIT_USAGE
            ) from None
        try:
            assert control is not None
            await control.start()
        except ControlError as exc:
            logging.getLogger("voipgw.gateway").warning("no 'gateway status' for this gateway: %s", exc)
            control = None
        users = ", ".join(f"{u.name} ({u.outside_aor})" for u in config.users)
        print(f"gateway listening on sip:{config.listen_host}:{gateway.port} for {users}", file=sys.stderr, flush=True)
        # Flag mode has no trust zones and no inside authentication: say so every time, so that nobody mistakes
        # the lab mode for a deployment (docs/OPERATIONS.md section 0).
        print(
            "warning: flag mode is a lab mode: one SIP socket for the phones and the PBX, phones known by address "
            "only, no inside authentication; deploy with --config (two zones, digest auth)",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
    finally:
        if control is not None:
            await control.close()
        await gateway.stop()
        if gateway.stack is not None:
            logging.getLogger("voipgw.gateway").info("gateway summary: %s", refusal_summary(gateway.snapshot()))
        if args.snapshot_json is not None:
            args.snapshot_json.write_text(json.dumps(gateway.snapshot(), indent=2, default=str))
        for store in trust.values():
            store.close()
    return 0


async def _main_config(args: argparse.Namespace) -> int:
    from voipgw.gateway.runtime import GatewayRuntime

    try:
        config = ops_config.load_gateway_config(args.config)
    except ops_config.ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    setup_logging(args.log_format or config.log_format, _log_level(args))
    log = logging.getLogger("voipgw.gateway")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runtime = GatewayRuntime(config, args.home, no_answer_timeout_s=args.no_answer_timeout)
    try:
        try:
            await runtime.start()
        except ops_config.ConfigError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        users = ", ".join(f"{u.name} ({u.outside_aor})" for u in config.users.values())
        assert runtime.ops is not None
        log.info(
            "gateway listening on sip:%s:%d (phones) and sip:%s:%d (PBX) for %s; PBX %s; control socket %s; metrics %s",
            config.inside.listen[0], runtime.port, *(config.outside.listen or config.inside.listen)[:1],
            runtime.gateway.outside_port if runtime.gateway is not None else 0, users,
            ops_config.format_hostport(config.outside.registrar) if config.outside.registrar else "none",
            runtime.ops.control.path,
            f"http://{ops_config.format_hostport((config.metrics.address[0], runtime.ops.metrics_server.port))}/metrics"
            if runtime.ops.metrics_server is not None else "off",
        )  # fmt: skip
        await stop.wait()
        log.info("gateway stopping: removing registrations, hanging up %d call(s)", len(runtime.snapshot()["calls"]))
    finally:
        await runtime.stop()
        if runtime.gateway is not None and runtime.gateway.stack is not None:
            log.info("gateway summary: %s", refusal_summary(runtime.snapshot()))
        if args.snapshot_json is not None and runtime.gateway is not None:
            args.snapshot_json.write_text(json.dumps(runtime.snapshot(), indent=2, default=str))
    log.info("gateway stopped")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """``voipgw gateway check FILE``: what ``gateway --config FILE`` checks before it starts, without starting."""
    try:
        config = ops_config.load_gateway_config(args.file)
        ops_config.preflight(config, resolve=not args.offline)
        if not args.offline:
            ops_config.check_pbx(config)
    except ops_config.ConfigError as exc:
        raise CliError(f"{args.file}: {exc}", EXIT_USAGE) from None
    fmt = ops_config.format_hostport
    metrics = fmt(config.metrics.address) if config.metrics.enabled else "off"
    pbx = fmt(config.outside.registrar) if config.outside.registrar is not None else "none"
    print(
        f"ok: {len(config.users)} user(s), inside SIP on {fmt(config.inside.listen)}, outside SIP on "
        f"{fmt(config.outside.listen or config.inside.listen)} -> PBX {pbx}, metrics {metrics}"
        + (" (network checks skipped)" if args.offline else "")
    )
    return 0


def _private_home(home: Path) -> None:
    """Create the gateway home 0700 (it holds every user's key folder and the control socket); an existing one is
    left as it is. A parent created on the way for users/ would otherwise get the umask's 0755."""
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise CliError(f"cannot create the gateway home {home}: {exc.strerror or exc}", EXIT_USAGE) from None


def run_gateway(args: argparse.Namespace) -> int:
    import uvloop

    _private_home(args.home)
    if args.config is not None:
        given = [f"--{name.replace('_', '-')}" for name in FLAG_ONLY if getattr(args, name)]
        if given:
            raise CliError(f"{', '.join(given)}: not with --config (set it in the config file)", EXIT_USAGE)
        return int(uvloop.run(_main_config(args)))
    return int(uvloop.run(_main(args)))


def run_status(args: argparse.Namespace) -> int:
    path = args.socket
    if path is None and args.status_config is not None:
        try:
            path = ops_config.load_gateway_config(args.status_config).control_socket
        except ops_config.ConfigError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
    try:
        result: dict[str, Any] = control_request(socket_path(args.home, path), "status", args.timeout)
    except ControlError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        sys.stdout.write(render_status(result))
    return 0
