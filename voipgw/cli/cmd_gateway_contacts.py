"""``voipgw gateway contacts``: a fronted user's contact store, for the gateway's admin: list it, name a contact
(the name its phone shows after the label), show a safety number, verify a contact's key, accept a changed one.
Finds the user's folder from the gateway configuration and runs the softphone's own commands
(``voipgw.cli.cmd_contacts``) on it; parsing and wiring only.

It prints public keys and safety numbers only; it never reads or shows a private key. A running gateway sees the
change at its next call with that contact (the trust cache follows the store's data version).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from voipgw.cli import cmd_contacts
from voipgw.cli.errors import CliError
from voipgw.config import ConfigError

EXIT_USAGE = 2
Command = Callable[[argparse.Namespace], int]


def register(gsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``contacts`` under ``voipgw gateway``."""
    c = gsub.add_parser(
        "contacts",
        help="a fronted user's contacts: list, name, fingerprint, verify or accept a key",
        description="The contact store of one fronted user (<identity_dir>/<user>/contacts.db). Example: "
        "voipgw gateway contacts --config /etc/voipgw/gateway.toml --user bob verify alice@example.org",
    )
    c.add_argument(
        "--config",
        dest="contacts_config",
        type=Path,
        metavar="FILE",
        help="the gateway's TOML (for outside.identity_dir and the user's AOR); default: flag mode's <home>/users",
    )
    c.add_argument("--user", required=True, metavar="NAME", help="the fronted user ([users.NAME])")
    c.add_argument("--json", action="store_true", help="print JSON (list, fingerprint)")
    c.set_defaults(func=_run(cmd_contacts.run_list))
    csub = c.add_subparsers(dest="gateway_contacts_command", metavar="ACTION")
    n = csub.add_parser("name", help="the user's own name for a contact, shown on the phone after the label")
    cmd_contacts.add_name_arguments(n)
    n.set_defaults(func=_run(cmd_contacts.run_name))
    f = csub.add_parser("fingerprint", help="the safety number with a contact, and any SAS-mismatch warnings")
    f.add_argument("contact", metavar="CONTACT_AOR")
    f.add_argument("--qr", action="store_true", help="also draw the QR code in the terminal")
    f.set_defaults(func=_run(cmd_contacts.run_fingerprint))
    v = csub.add_parser("verify", help="mark a contact's key verified after comparing safety numbers")
    v.add_argument("contact", metavar="CONTACT_AOR")
    group = v.add_mutually_exclusive_group()
    group.add_argument("--safety-number", metavar="DIGITS", help="the 60 digits the contact sees")
    group.add_argument("--qr-payload", metavar="TEXT", help="the text of the contact's scanned QR code")
    v.add_argument("--yes", action="store_true", help="confirm you compared the numbers (no prompt)")
    v.set_defaults(func=_run(cmd_contacts.run_verify))
    a = csub.add_parser("accept", help="accept a contact's changed key (it stays unverified)")
    a.add_argument("contact", metavar="CONTACT_AOR")
    a.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    a.set_defaults(func=_run(cmd_contacts.run_accept_key))


def user_folder(args: argparse.Namespace) -> tuple[Path, str | None]:
    """The fronted user's folder and outside AOR (None in flag mode: the store remembers it per contact)."""
    name: str = args.user
    if args.contacts_config is None:
        folder, aor = args.home / "users" / name, None
    else:
        from voipgw.gateway.runtime import user_dir
        from voipgw.ops.config import load_gateway_config

        try:
            config = load_gateway_config(args.contacts_config)
        except ConfigError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        user = config.users.get(name)
        if user is None:
            known = ", ".join(sorted(config.users)) or "none"
            raise CliError(f"--user {name!r}: no [users.{name}] in {args.contacts_config} (users: {known})", EXIT_USAGE)
        folder, aor = user_dir(config, args.home, name), user.outside_aor
    if not (folder / "contacts.db").is_file():
        raise CliError(f"no contact store for {name} in {folder} (the gateway creates it at its first start)")
    return folder, aor


def _run(command: Command) -> Command:
    def run(args: argparse.Namespace) -> int:
        folder, aor = user_folder(args)
        args.home = folder
        args.aor = aor
        for name, default in (("qr", False), ("qr_payload", None), ("safety_number", None), ("yes", False)):
            if not hasattr(args, name):
                setattr(args, name, default)
        return command(args)

    return run
