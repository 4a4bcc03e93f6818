"""``voipgw contacts add PAYLOAD``: add (and optionally verify) a contact from the payload of its ``voipgw id show
--qr`` code, before any call. It checks the payload's own fingerprint digits; it never replaces a stored key."""

from __future__ import annotations

import argparse
import time
from urllib.parse import unquote

from ratchet.errors import MalformedAor, RatchetError
from ratchet.fingerprint import side_fingerprint
from voipgw.cli.cmd_contacts import aor_arg, open_trust
from voipgw.cli.errors import CliError
from voipgw.store.contacts import VerifyMethod, checked_aor, checked_key
from voipgw.trust import ID_QR_PREFIX


class BadIdentityPayload(ValueError):
    """The text is not a well-formed ``voipgw-id:1:`` payload, or its fingerprint digits do not match its key."""


def parse_identity_payload(text: str) -> tuple[str, bytes]:
    """``(AOR, identity key)`` from ``voipgw-id:1:<AOR>:<key hex>:<30 digits>`` (what ``id show`` prints), after
    checking that the 30 digits are that key's fingerprint for that AOR (a typo or a cut payload is refused)."""
    text = text.strip()
    if not text.startswith(ID_QR_PREFIX):
        raise BadIdentityPayload(f"not a voipgw identity payload (it must start with {ID_QR_PREFIX!r})")
    parts = text[len(ID_QR_PREFIX) :].split(":")
    if len(parts) != 3:
        raise BadIdentityPayload("an identity payload is AOR:KEY:DIGITS after the prefix")
    quoted, key_hex, digits = parts
    try:
        aor = checked_aor(unquote(quoted, errors="strict"))
        key = checked_key(bytes.fromhex(key_hex))
    except (MalformedAor, UnicodeDecodeError) as exc:
        raise BadIdentityPayload(f"bad AOR in the payload ({exc})") from None
    except (ValueError, RatchetError):
        raise BadIdentityPayload("bad identity key in the payload") from None
    if digits != side_fingerprint(key, aor.encode()):
        raise BadIdentityPayload("the fingerprint digits do not match the key (a damaged or altered payload)")
    return aor, key


def verify_by_identity_payload(args: argparse.Namespace, aor: str) -> int:
    """``verify AOR --qr-payload voipgw-id:...``: verified if the payload is AOR's and carries its stored key (or
    its changed, blocked key, which is then accepted); anything else changes nothing."""
    try:
        given_aor, key = parse_identity_payload(args.qr_payload)
    except BadIdentityPayload as exc:
        raise CliError(f"--qr-payload: {exc}") from None
    if given_aor != aor:
        raise CliError(f"the QR code is {given_aor}'s, not {aor}'s; nothing changed")
    with open_trust(args) as trust:
        contact = trust.store.require(aor)
        if key not in (contact.identity_key, contact.pending_key):
            raise CliError(
                f"the key in the QR code is NOT the one stored for {aor}; {aor} was NOT marked verified (someone may "
                f"be intercepting your calls, or {aor} changed keys: confirm in person before trusting these calls)"
            )
        trust.mark_verified(aor, key, VerifyMethod.QR, now=time.time())
    new = " (its NEW key, now accepted)" if key == contact.pending_key else ""
    print(f"{aor} is now VERIFIED (qr){new}; calls with this key show as verified")
    return 0


def register_add(csub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
