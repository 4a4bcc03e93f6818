"""``voipgw id show`` and ``voipgw id new``: our identity's fingerprint (text and QR) and key rotation.

It shows public data only; rotation keeps the old key file (mode 0600) and never deletes it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from ratchet.errors import IdentityFileError
from ratchet.fingerprint import side_fingerprint
from ratchet.identity import IdentityKey
from voipgw.cli.cmd_contacts import aor_arg, confirm, fmt_time, open_trust, our_identity, print_qr
from voipgw.cli.errors import CliError
from voipgw.cli.passphrase import ask_new_passphrase, unlock_identity
from voipgw.store.keyfile import IDENTITY_FILENAME, load_identity, passphrase_from_env, save_identity
from voipgw.trust import identity_qr


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("id", help="our identity: fingerprint, QR code, rotation")
    isub = p.add_subparsers(dest="id_command", metavar="ACTION")
    s = isub.add_parser("show", help="our AOR(s), identity fingerprint and key (created on first use)")
    s.add_argument("--aor", help="our AOR (default: the ones seen in calls)")
    s.add_argument("--qr", action="store_true", help="draw a QR code of our identity in the terminal")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=run_show)
    n = isub.add_parser("new", help="create a new identity key (rotation: every contact sees a changed key)")
    n.add_argument("--force", action="store_true", help="replace an existing key (the old one is kept aside)")
    n.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    n.set_defaults(func=run_new)
    pp = isub.add_parser(
        "passphrase",
        help="add, change or remove the passphrase of our identity key (the key itself stays the same)",
        description="Re-encrypts identity.pem under a new passphrase (typed twice on a terminal; without one, read "
        "from VOIPGW_NEW_PASSPHRASE), or removes it (--remove). The current passphrase is asked for on a terminal "
        "or read from VOIPGW_PASSPHRASE. The file is replaced atomically and stays mode 0600; contacts see no change.",
    )
    pp.add_argument("--remove", action="store_true", help="store the key without a passphrase")
    pp.set_defaults(func=run_passphrase)
    p.set_defaults(func=lambda a: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def _fmt30(digits: str) -> str:
    return " ".join(digits[i : i + 5] for i in range(0, 30, 5))


def run_show(args: argparse.Namespace) -> int:
    key = our_identity(args).public.serialize()
    aors: list[tuple[str, float | None]]
    if args.aor:
        aors = [(aor_arg(args.aor, "--aor"), None)]
    else:
        with open_trust(args) as trust:
            aors = [(aor, last) for aor, _key, _first, last in trust.store.local_aors()]
    rows = [(aor, side_fingerprint(key, aor.encode()), last) for aor, last in aors]
    if args.json:
        out = {
            "identity_file": str(args.home / IDENTITY_FILENAME),
            "identity_key": key.hex(),
            "aors": [{"aor": aor, "fingerprint": fp, "last_used": last} for aor, fp, last in rows],
            "qr_payload": identity_qr(rows[0][0], key) if rows else None,
        }
        print(json.dumps(out, indent=2))
        return 0
    print(f"Identity file: {args.home / IDENTITY_FILENAME}")
    print(f"Identity key:  {key.hex()}")
    if not rows:
        print("Our fingerprint depends on our AOR, and no call has used one yet: pass --aor alice@example.org")
    for aor, fp, last in rows:
        used = f" (last used {fmt_time(last)})" if last is not None else ""
        print(f"AOR:           {aor}{used}")
        print(f"  fingerprint: {_fmt30(fp)}")
    if rows:
        payload = identity_qr(rows[0][0], key)
        print(f"QR payload:    {payload}")
        print("  (others add or verify you before any call with: voipgw contacts add PAYLOAD --verified)")
        if args.qr:
            print_qr(payload)
    elif args.qr:
        raise CliError("--qr needs our AOR: pass --aor")
    return 0


def run_passphrase(args: argparse.Namespace) -> int:
    home: Path = args.home
    path = home / IDENTITY_FILENAME
    if not path.exists():
        raise CliError(f"no identity key at {path} yet (it is created on first use; 'voipgw id new' creates one)")
    key = unlock_identity(home)
    new = ask_new_passphrase(args.remove)
    try:
        save_identity(path, key, new, overwrite=True)  # temp file 0600, fsync, rename: never a half-written key
        again = load_identity(path, new)
    except (IdentityFileError, OSError) as exc:
        raise CliError(f"cannot rewrite {path} ({getattr(exc, 'strerror', None) or exc}); it is unchanged") from None
    assert again.public.serialize() == key.public.serialize()
    if new is None:
        print(f"{path} is now stored without a passphrase (same key)")
    else:
        print(f"{path} is now protected by the new passphrase (same key; set VOIPGW_PASSPHRASE or type it when asked)")
    return 0


def run_new(args: argparse.Namespace) -> int:
    home: Path = args.home
    path = home / IDENTITY_FILENAME
    if path.exists():
        if not args.force:
            raise CliError(f"{path} exists; rotating it needs --force (every contact will see a changed key)")
        try:
            load_identity(path, passphrase_from_env())
        except (IdentityFileError, OSError) as exc:
            raise CliError(f"cannot read the current identity {path}: {exc}; nothing changed") from None
        print("Rotating the identity key means:")
        print("  - every contact sees a CHANGED KEY on the next call; those who verified you are BLOCKED by default")
        print("    until they run 'voipgw accept-key' (or verify you again);")
        print("  - all safety numbers change: compare them again with each contact;")
        print("  - the old key is kept (not deleted) next to the new one.")
        confirm("Create a new identity key?", args.yes)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        old = path.with_name(f"{IDENTITY_FILENAME}.old-{stamp}")
        try:
            os.link(path, old)  # the same inode keeps its 0600 mode; replace below is atomic
            os.chmod(old, 0o600)
            save_identity(path, IdentityKey.generate(), passphrase_from_env(), overwrite=True)
        except OSError as exc:
            raise CliError(f"rotation failed ({exc.strerror}); {path} is unchanged") from None
        print(f"old key kept as {old}")
    else:
        try:
            save_identity(path, IdentityKey.generate(), passphrase_from_env(), overwrite=False)
        except OSError as exc:
            raise CliError(f"cannot create {path}: {exc.strerror}") from None
    key = our_identity(args).public.serialize()
    print(f"new identity key: {key.hex()}")
    return 0
