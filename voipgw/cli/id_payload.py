"""The identity QR payload ``voipgw-id:1:<AOR>:<key hex>:<30 digits>`` (printed by ``voipgw id show``), parsed
and checked for ``contacts add`` and ``verify --qr-payload``. Pure: no files, no store."""

from __future__ import annotations

from urllib.parse import unquote

from ratchet.errors import MalformedAor, RatchetError
from ratchet.fingerprint import side_fingerprint
from voipgw.store.contacts import checked_aor, checked_key
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
