"""``voipgw contacts`` (list, ``name``, export, import), ``fingerprint``, ``verify``, ``accept-key`` and ``forget``:
the contact store, its local names and safety numbers from the command line. Every failure is one line
(CliError); every confirmation has ``--yes``.

It prints public keys and safety numbers only; it never reads or shows our private key.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ratchet.aor import normalize_aor
from ratchet.errors import MalformedAor
from ratchet.fingerprint import format_safety_number
from ratchet.identity import IdentityKey
from voipgw.cli.errors import CliError
from voipgw.cli.id_payload import BadIdentityPayload, parse_identity_payload
from voipgw.cli.passphrase import unlock_identity
from voipgw.names import MAX_NAME, clean_name
from voipgw.store.contacts import EVENT_SAS_MISMATCH, Contact, VerifyMethod, quarantine_corrupt
from voipgw.store.errors import ContactStoreError
from voipgw.store.export import MAX_IMPORT_BYTES, export_document, parse_document
from voipgw.trust import (
    ID_QR_PREFIX,
    MalformedQrPayload,
    TrustStore,
    parse_safety_number_qr,
    safety_number_qr,
)

EXIT_USAGE = 2

# --- shared helpers (cmd_id uses them too) --------------------------------------------------------------------


@contextlib.contextmanager
def open_trust(args: argparse.Namespace) -> Iterator[TrustStore]:
    """The trust store in ``--home``; store failures (corrupt, insecure, too new, unknown AOR) become one line."""
    try:
        trust = TrustStore(args.home, warm=False)
    except (ContactStoreError, OSError) as exc:
        raise CliError(str(exc)) from None
    try:
        yield trust
    except ContactStoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        trust.close()


def our_identity(args: argparse.Namespace) -> IdentityKey:
    return unlock_identity(args.home)


def aor_arg(text: str, what: str = "AOR") -> str:
    try:
        return normalize_aor(text)
    except MalformedAor as exc:
        raise CliError(f"{what} {text!r} is not a SIP address of record ({exc.detail or exc})") from None


def confirm(question: str, yes: bool) -> None:
    """Ask on the terminal unless ``--yes``; without a terminal, refuse rather than guess."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(f"{question} -- no terminal to ask on: pass --yes to confirm")
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise CliError("cancelled; nothing was changed")


def print_qr(payload: str) -> None:
    import segno

    segno.make(payload, error="m").terminal(out=sys.stdout, compact=True)
    sys.stdout.flush()


def fmt_time(ts: float | None) -> str:
    """``2026-12-07 16:05 CET``: the user's local time and zone (``--json`` keeps epoch seconds)."""
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(ts))


def contact_state(c: Contact) -> str:
    if c.pending_key is not None:
        return "key-changed (blocked)"
    return "key-changed" if c.changed_at is not None else "known"


def sas_mismatch_at(events: list[tuple[float, str, str]], c: Contact) -> float | None:
    """When a user last reported that the SAS with ``c``'s current key did not match (``x`` in a call), unless the
    contact was verified again since; None if not."""
    reported = [at for at, kind, _ in events if kind == EVENT_SAS_MISMATCH and at >= c.key_first_seen]
    if not reported or (c.verified_at is not None and c.verified_at > max(reported)):
        return None
    return max(reported)


def who(c: Contact) -> str:
    """``Alice Smith <alice@example.org>`` when the user named the contact, else the AOR alone."""
    return f"{c.name} <{c.aor}>" if c.name else c.aor


def _contact_json(c: Contact, mismatch_at: float | None = None) -> dict[str, Any]:
    return {
        "sas_mismatch_at": mismatch_at,
        "aor": c.aor,
        "name": c.name,
        "state": contact_state(c),
        "verified": c.verified,
        "verified_method": None if c.verified_method is None else c.verified_method.value,
        "verified_at": c.verified_at,
        "first_seen": c.first_seen,
        "last_seen": c.last_seen,
        "calls": c.call_count,
        "identity_key": c.identity_key.hex(),
        "pending_key": None if c.pending_key is None else c.pending_key.hex(),
        "local_aor": c.local_aor,
    }


def _local_aor(args: argparse.Namespace, contact: Contact) -> str:
    if args.aor:
        return aor_arg(args.aor, "--aor")
    if contact.local_aor:
        return contact.local_aor
    raise CliError(f"our AOR with {contact.aor} is not known yet: pass --aor OURS (e.g. --aor alice@example.org)")


def _digits(text: str) -> str:
    digits = "".join(text.split())
    if len(digits) != 60 or not digits.isascii() or not digits.isdigit():
        raise CliError(f"a safety number is 60 digits (spaces ignored); got {len(digits)} characters")
    return digits


# --- register -------------------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("contacts", help="list, export or import contacts and their verification state")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(func=run_list)
    csub = c.add_subparsers(dest="contacts_command", metavar="ACTION")
    n = csub.add_parser("name", help="give a contact your own name (shown next to the security label)")
    add_name_arguments(n)
    n.set_defaults(func=run_name)
    e = csub.add_parser("export", help="write contacts (public keys, verification, history) as JSON")
    e.add_argument("file", metavar="FILE", help="output file (mode 0600; '-' for stdout); never overwritten")
    e.set_defaults(func=run_export)
    i = csub.add_parser("import", help="merge a JSON export; refuses malformed files and changed keys")
    i.add_argument("file", metavar="FILE", type=Path)
    i.add_argument("--skip-conflicts", action="store_true", help="import the rest when some AORs have another key")
    i.set_defaults(func=run_import)
    q = csub.add_parser("quarantine", help="move a corrupt contacts.db aside (never deletes) so a new one starts")
    q.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    q.set_defaults(func=run_quarantine)

    f = sub.add_parser("fingerprint", help="the 60-digit safety number with a contact (and a QR payload)")
    f.add_argument("contact", metavar="AOR")
    f.add_argument("--aor", help="our AOR (default: the one used in the last call with this contact)")
    f.add_argument("--qr", action="store_true", help="also draw the QR code in the terminal")
    f.add_argument("--json", action="store_true", help="print JSON")
    f.set_defaults(func=run_fingerprint)

    v = sub.add_parser("verify", help="compare safety numbers and mark a contact verified on an exact match")
    v.add_argument("contact", metavar="AOR")
    v.add_argument("--aor", help="our AOR (default: the one used in the last call with this contact)")
    group = v.add_mutually_exclusive_group()
    group.add_argument("--safety-number", metavar="DIGITS", help="one-shot: the 60 digits the contact sees")
    group.add_argument(
        "--qr-payload",
        metavar="TEXT",
        help="the text of a scanned QR code: 'voipgw fingerprint --qr' (voipgw-sn:) or the contact's own "
        "'voipgw id show --qr' (voipgw-id:)",
    )
    v.add_argument("--yes", action="store_true", help="confirm you compared the numbers (no prompt)")
    v.set_defaults(func=run_verify)

    a = sub.add_parser("accept-key", help="accept a contact's changed identity key")
    a.add_argument("contact", metavar="AOR")
    a.add_argument("--aor", help="our AOR (to show the safety numbers)")
    a.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    a.set_defaults(func=run_accept_key)

    g = sub.add_parser("forget", help="delete a contact and its key history (the next call is a first contact)")
    g.add_argument("contact", metavar="AOR")
    g.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    g.set_defaults(func=run_forget)


def add_name_arguments(p: argparse.ArgumentParser) -> None:
    """``AOR NAME`` or ``AOR --clear`` (``voipgw gateway contacts ... name`` takes the same)."""
    p.add_argument("contact", metavar="AOR")
    p.add_argument("name", metavar="NAME", nargs="?", help=f"your name for the contact (cleaned, {MAX_NAME} chars max)")
    p.add_argument("--clear", action="store_true", help="remove the name (the AOR's user part is shown again)")


# --- contacts -------------------------------------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    with open_trust(args) as trust:
        contacts = trust.store.contacts()
        mismatches = {c.aor: sas_mismatch_at(trust.store.events(c.aor), c) for c in contacts}
    if args.json:
        print(json.dumps([_contact_json(c, mismatches[c.aor]) for c in contacts], indent=2))
        return 0
    if not contacts:
        print("no contacts yet (a contact is added on the first call)")
        return 0
    rows = [("AOR", "NAME", "STATE", "VERIFIED", "LAST SEEN", "CALLS")]
    for c in contacts:
        verified = f"yes ({c.verified_method})" if c.verified else "no"
        state = contact_state(c)
        if mismatches[c.aor] is not None:
            state += f", SAS MISMATCH {fmt_time(mismatches[c.aor])}"
        rows.append((c.aor, c.name or "-", state, verified, fmt_time(c.last_seen), str(c.call_count)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def run_name(args: argparse.Namespace) -> int:
    """Set or clear the local name: only the user gives names (a call never does), so the PBX cannot choose one."""
    aor = aor_arg(args.contact)
    if args.clear == (args.name is not None):
        raise CliError("give either a NAME or --clear (voipgw contacts name AOR 'Alice Smith')", EXIT_USAGE)
    if args.name is not None and not clean_name(args.name):
        raise CliError(f"{args.name!r} has nothing left to show once brackets, quotes and controls go; use --clear "
                       f"to remove a name", EXIT_USAGE)  # fmt: skip
    with open_trust(args) as trust:
        contact = trust.store.set_name(aor, None if args.clear else args.name, now=time.time())
    if contact.name is None:
        print(f"{aor} has no name now (calls show its user part)")
    else:
        changed = " (cleaned)" if contact.name != " ".join(args.name.split()) else ""
        print(f"{aor} is now shown as {contact.name!r}{changed}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    with open_trust(args) as trust:
        doc = export_document(trust.store, now=time.time())
    text = json.dumps(doc, indent=2) + "\n"
    if args.file == "-":
        sys.stdout.write(text)
        return 0
    path = Path(args.file)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        raise CliError(f"{path} exists; choose another file name (exports never overwrite)") from None
    except OSError as exc:
        raise CliError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    print(f"exported {len(doc['contacts'])} contact(s) to {path}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_IMPORT_BYTES + 1)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_IMPORT_BYTES:
        raise CliError(f"{path} is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MiB; not a contacts export")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CliError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise CliError(f"{path} is nested too deeply to be a contacts export") from None
    try:
        records = parse_document(doc)
    except ContactStoreError as exc:
        raise CliError(f"{path}: {exc}; nothing imported") from None
    with open_trust(args) as trust:
        added, merged, skipped = trust.store.import_contacts(records, skip_conflicts=args.skip_conflicts)
    print(f"imported {added} new contact(s), merged {merged} already known")
    if skipped:
        print(f"skipped {len(skipped)} stored with a different key: {', '.join(skipped)}")
    return 0


def run_quarantine(args: argparse.Namespace) -> int:
    confirm(f"Move {args.home / 'contacts.db'} aside (kept, not deleted) and start an empty contact store?", args.yes)
    try:
        target = quarantine_corrupt(args.home, now=time.time())
    except ContactStoreError as exc:
        raise CliError(str(exc)) from None
    print(f"moved the corrupt store to {target}; a new contacts.db starts with the next call")
    return 0


# --- fingerprint / verify / accept-key / forget ----------------------------------------------------------------


def run_fingerprint(args: argparse.Namespace) -> int:
    aor = aor_arg(args.contact)
    me = our_identity(args).public.serialize()
    with open_trust(args) as trust:
        contact = trust.store.require(aor)
        ours = _local_aor(args, contact)
        number = trust.safety_number(contact, ours, me)
        pending = trust.safety_number(contact, ours, me, pending=True) if contact.pending_key else None
        events = trust.store.events(aor)
    payload = safety_number_qr(ours, me, aor, contact.identity_key)
    if args.json:
        out = {
            "aor": aor,
            "name": contact.name,
            "local_aor": ours,
            "safety_number": number,
            "formatted": format_safety_number(number),
            "qr_payload": payload,
            "verified": contact.verified,
            "state": contact_state(contact),
            "pending_safety_number": pending,
            "events": [{"at": at, "kind": kind, "detail": detail} for at, kind, detail in events],
        }
        print(json.dumps(out, indent=2))
        return 0
    groups = format_safety_number(number).split(" ")
    print(f"Safety number with {who(contact)} (you: {ours}):")
    print("  " + " ".join(groups[:6]))
    print("  " + " ".join(groups[6:]))
    if contact.verified:
        print(f"verified ({contact.verified_method}, {fmt_time(contact.verified_at)})")
    else:
        print(f"not verified: compare it with {aor} (they run: voipgw fingerprint {ours}), then: voipgw verify {aor}")
    for at, kind, detail in events:
        print(f"WARNING: {kind} reported on {fmt_time(at)}{': ' + detail if detail else ''}")
    if pending:
        print(f"A CHANGED KEY was seen for {aor} and blocked; its safety number would be:")
        print(f"  {format_safety_number(pending)}")
    print(f"QR payload: {payload}")
    if args.qr:
        print_qr(payload)
    return 0


def _mismatch(aor: str, ours: str) -> CliError:
    return CliError(
        f"safety numbers do NOT match; {aor} was NOT marked verified. Check that you both compared the numbers for "
        f"this pair ({ours} and {aor}); if they still differ, someone may be intercepting your calls or one of you "
        f"changed keys: do not trust these calls until you have confirmed the number in person or on another channel"
    )


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


def run_verify(args: argparse.Namespace) -> int:
    aor = aor_arg(args.contact)
    if args.qr_payload is not None and args.qr_payload.strip().startswith(ID_QR_PREFIX):
        return verify_by_identity_payload(args, aor)
    me = our_identity(args).public.serialize()
    with open_trust(args) as trust:
        contact = trust.store.require(aor)
        ours = _local_aor(args, contact)
        current = trust.safety_number(contact, ours, me)
        pending = trust.safety_number(contact, ours, me, pending=True) if contact.pending_key else None
        method = VerifyMethod.SAFETY_NUMBER
        if args.qr_payload is not None:
            try:
                given, aor_a, aor_b = parse_safety_number_qr(args.qr_payload)
            except MalformedQrPayload as exc:
                raise CliError(f"--qr-payload: {exc}") from None
            if {aor_a, aor_b} != {aor, ours}:
                raise CliError(f"the QR code is for {aor_a} and {aor_b}, not for {ours} and {aor}; nothing changed")
            method = VerifyMethod.QR
        elif args.safety_number is not None:
            given = _digits(args.safety_number)
        else:
            given = _interactive(aor, ours, current, pending, args.yes)
        if given == current and contact.pending_key is None:
            trust.mark_verified(aor, contact.identity_key, method, now=time.time())
            print(f"{aor} is now VERIFIED ({method}); calls with this key show as verified")
            return 0
        if pending is not None and given == pending:
            assert contact.pending_key is not None
            trust.mark_verified(aor, contact.pending_key, method, now=time.time())
            print(f"{aor}'s NEW key matches: accepted and marked VERIFIED ({method})")
            return 0
        if given == current:
            trust.mark_verified(aor, contact.identity_key, method, now=time.time())
            print(f"{aor} is VERIFIED ({method}) with the key you knew; the changed key stays blocked")
            return 0
        raise _mismatch(aor, ours)


def _interactive(aor: str, ours: str, current: str, pending: str | None, yes: bool) -> str:
    """Show the number and read the contact's digits (or a 'y' after comparing on screen)."""
    shown = pending or current
    groups = format_safety_number(shown).split(" ")
    which = "NEW (changed, blocked) key" if pending else "key"
    print(f"Safety number with {aor} (you: {ours}), {which}:")
    print("  " + " ".join(groups[:6]))
    print("  " + " ".join(groups[6:]))
    print(f"Ask {aor} to run 'voipgw fingerprint {ours}' and read their number to you (or show it side by side).")
    if yes:
        return shown
    if not sys.stdin.isatty():
        raise CliError("no terminal to compare on: pass --safety-number DIGITS (or --yes if you compared them)")
    try:
        answer = input("Type their 60 digits (spaces ignored), or 'y' if every group matches: ").strip()
    except EOFError:
        answer = ""
    if answer.lower() in ("y", "yes"):
        return shown
    if not answer or answer.lower() in ("n", "no"):
        raise CliError(f"not verified; nothing changed (run 'voipgw verify {aor}' again when you can compare)")
    return _digits(answer)


def run_accept_key(args: argparse.Namespace) -> int:
    aor = aor_arg(args.contact)
    with open_trust(args) as trust:
        contact = trust.store.require(aor)
        if contact.pending_key is None and contact.changed_at is None:
            raise CliError(f"{aor} has no changed key to accept (state: known)")
        if args.aor or contact.local_aor:
            me = our_identity(args).public.serialize()
            ours = _local_aor(args, contact)
            if contact.pending_key is not None:
                old, new = trust.safety_number(contact, ours, me), trust.safety_number(contact, ours, me, pending=True)
                print(f"{aor} presented a NEW identity key (first seen {fmt_time(contact.pending_first_seen)}).")
                print(f"  old safety number: {format_safety_number(old)}")
                print(f"  new safety number: {format_safety_number(new)}")
            else:
                print(f"{aor}'s key changed on {fmt_time(contact.changed_at)}; current safety number:")
                print(f"  {format_safety_number(trust.safety_number(contact, ours, me))}")
        print("Accept it only if you know why it changed (new phone, reinstall, key rotation).")
        confirm(f"Accept the new key of {aor} (it stays unverified)?", args.yes)
        trust.store.accept_change(aor, now=time.time())
    print(f"accepted the new key of {aor}; calls proceed, unverified (run 'voipgw verify {aor}' to verify)")
    return 0


def run_forget(args: argparse.Namespace) -> int:
    aor = aor_arg(args.contact)
    with open_trust(args) as trust:
        trust.store.require(aor)
        confirm(f"Forget {aor}, its key and its key history? The next call will be a first contact.", args.yes)
        trust.store.forget(aor)
    print(f"forgot {aor}")
    return 0
