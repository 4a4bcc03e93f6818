"""``voipgw contacts add PAYLOAD``: add (and optionally verify) a contact from the payload of its ``voipgw id show
--qr`` code, before any call. It checks the payload's own fingerprint digits; it never replaces a stored key."""

from __future__ import annotations

import argparse
import time

from voipgw.cli.cmd_contacts import aor_arg, open_trust
from voipgw.cli.errors import CliError
from voipgw.cli.id_payload import BadIdentityPayload, parse_identity_payload
from voipgw.store.contacts import VerifyMethod


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``add`` under ``contacts`` (registered by ``cmd_contacts``, which must come first in main)."""
    contacts = sub.choices["contacts"]
    csub = next(a for a in contacts._actions if isinstance(a, argparse._SubParsersAction))
    a = csub.add_parser(
        "add",
        help="add a contact from its 'voipgw id show' QR payload, before the first call",
        description="Adds the contact with the key in the payload (the text under the QR code of 'voipgw id show "
        "--qr', or what a scanner reads from it). With --verified it is marked verified: only if you got the "
        "payload from the person directly (scanned their screen, or over a channel you trust).",
    )
    a.add_argument("payload", metavar="PAYLOAD", help="voipgw-id:1:AOR:KEY:DIGITS")
    a.add_argument("--verified", action="store_true", help="mark the contact verified (method qr)")
    a.add_argument("--aor", help="our own AOR with this contact (default: the one of the first call)")
    a.set_defaults(func=run_add)


def run_add(args: argparse.Namespace) -> int:
    try:
        aor, key = parse_identity_payload(args.payload)
    except BadIdentityPayload as exc:
        raise CliError(f"contacts add: {exc}") from None
    ours = aor_arg(args.aor, "--aor") if args.aor else None
    now = time.time()
    with open_trust(args) as trust:
        contact, inserted = trust.store.add_first_contact(aor, key, local_aor=ours, now=now)
        if contact.identity_key != key:
            raise CliError(
                f"{aor} is already stored with a different key; nothing changed (compare safety numbers with "
                f"'voipgw fingerprint {aor}', or 'voipgw forget {aor}' first)"
            )
        if args.verified:
            trust.mark_verified(aor, key, VerifyMethod.QR, now=now)
    what = "added" if inserted else "already known with this key"
    state = "VERIFIED (qr)" if args.verified else "unverified (verify with 'voipgw verify' or add --verified)"
    print(f"{aor}: {what}; {state}")
    return 0
