"""What an unmodified phone shows for a gateway call: the security label FIRST, then a name the PBX cannot choose
(the gateway user's local name for the contact, else the user part of the signed AOR), never the unsigned From
display name. Pure: no I/O, no clock. The scheme is documented in docs/OPERATIONS.md ("What the phones show").

Why this shape: the label is the only defence an unmodified phone has against a PBX acting as a man in the middle,
so nothing the far side or the PBX writes may look like, push aside or follow a label. Names lose every bracket,
quote, control, format (bidi) and unassigned character, and runs of white space, before they are shown
(``voipgw.names``: the contact store cleans a local name with the same rule)."""

from __future__ import annotations

import enum
import string
from dataclasses import dataclass

from voipgw.call import Security
from voipgw.names import MAX_NAME, clean_name
from voipgw.trust import TrustState

DISPLAY_WIDTH = 16
"""Characters a typical desk phone shows on its caller line: every label leaves room for a name's start."""
MIN_NAME_SHOWN = 4
"""Characters of the name that fit next to the longest label on a DISPLAY_WIDTH display."""
SAS_LEN = 4
SAS_ALPHABET = frozenset(string.ascii_lowercase + string.digits)
FALLBACK_NAME = "unknown"
"""Shown when no name survives the cleaning (the label still says everything that matters)."""
_URI_SAFE = frozenset(string.ascii_letters + string.digits + "-_.!~*'&=+$,;?/:@%")


class LabelKind(enum.Enum):
    """The distinct things a phone can be told about a call's far end."""

    VERIFIED = "verified"
    """Sealed, and this very key was verified (SAS or safety number) earlier."""
    KNOWN = "known"
    """Sealed, with the key we have seen before, never verified."""
    FIRST_CONTACT = "first-contact"
    """Sealed, with a key seen for the first time (trust on first use: a MITM here looks like this)."""
    KEY_CHANGED = "key-changed"
    """Sealed, but the peer's identity key is not the one we knew (the loud one)."""
    NOT_SECURE = "not-secure"
    """In the clear (policy ``opportunistic``, a far end without voipgw)."""
    UNVERIFIABLE = "unverifiable"
    """Sealed, but the peer's SAS reveal did not arrive in time: nothing to compare, so never shown as plain E2E."""


TAGS: dict[LabelKind, str] = {
    LabelKind.VERIFIED: "SAFE",
    LabelKind.KNOWN: "E2E",
    LabelKind.FIRST_CONTACT: "NEW",
    LabelKind.KEY_CHANGED: "!KEY",
    LabelKind.NOT_SECURE: "INSECURE",
    LabelKind.UNVERIFIABLE: "NO SAS",
}
"""The word inside the brackets; the kinds with a usable SAS add it after a space (``[NEW 4xj9]``)."""
WITH_SAS = frozenset({LabelKind.VERIFIED, LabelKind.KNOWN, LabelKind.FIRST_CONTACT, LabelKind.KEY_CHANGED})


@dataclass(frozen=True)
class Shown:
    """What the phone is shown: its kind, the label and the whole display text (label first)."""

    kind: LabelKind
    label: str
    text: str


def choose_kind(security: Security, trust_state: TrustState | None, sas: str | None) -> LabelKind:
    """The label for a call's security state, the contact store's verdict (None: no store, so the key is new to
    us) and the SAS (None: the reveal has not arrived)."""
    if security in (Security.NOT_SECURE, Security.PENDING, Security.REFUSED):
        return LabelKind.NOT_SECURE
    if security is Security.KEY_CHANGED or trust_state is TrustState.KEY_CHANGED:
        return LabelKind.KEY_CHANGED  # louder than a missing SAS: shown even without one
    if clean_sas(sas) is None:
        return LabelKind.UNVERIFIABLE
    if security is Security.SECURE_VERIFIED:
        return LabelKind.VERIFIED
    if trust_state is TrustState.KNOWN:
        return LabelKind.KNOWN
    return LabelKind.FIRST_CONTACT


def clean_sas(sas: str | None) -> str | None:
    """The SAS as shown (4 base32 characters, lower case), None when there is none or it is not one."""
    if sas is None:
        return None
    low = sas.strip().lower()
    return low if len(low) == SAS_LEN and set(low) <= SAS_ALPHABET else None


def label_text(kind: LabelKind, sas: str | None) -> str:
    """``[NEW 4xj9]``, ``[!KEY]`` (a key change without a SAS), ``[INSECURE]``..."""
    shown = clean_sas(sas) if kind in WITH_SAS else None
    return f"[{TAGS[kind]} {shown}]" if shown else f"[{TAGS[kind]}]"


def aor_user(aor: str) -> str:
    """The user part of an AOR (``alice@example.org`` -> ``alice``); the AOR itself when it has none."""
    user, at, _host = aor.partition("@")
    return user if at else aor


def shown_for(
    security: Security, trust_state: TrustState | None, sas: str | None, aor: str, contact_name: str | None = None
) -> Shown:
    """What the phone shows for a call with the peer ``aor`` (the AOR the key exchange signed): the label, then
    ``contact_name`` (the gateway user's own name for that contact) or the AOR's user part, cleaned. A call in
    the clear never shows the contact name: nothing signed its AOR, and the user's own words for a contact would
    lend a forged From address a weight its user part does not have."""
    kind = choose_kind(security, trust_state, sas)
    label = label_text(kind, sas)
    own = clean_name(contact_name) if kind is not LabelKind.NOT_SECURE else ""
    name = own or clean_name(aor_user(aor)) or FALLBACK_NAME
    return Shown(kind, label, f"{label} {name}")


def identity_headers(display: str, aor: str, party: str) -> tuple[tuple[str, str], ...]:
    """``P-Asserted-Identity`` and ``Remote-Party-ID`` carrying ``display`` (a :func:`shown_for` text) for desk
    phones that show those over the From/To; ``party`` is ``calling`` (an INVITE) or ``called`` (its 200 OK).
    None of them when the AOR has characters a URI cannot carry (the display alone is then shown)."""
    if not aor or not set(aor) <= _URI_SAFE:
        return ()
    name = display.replace('"', "").replace("\\", "")
    address = f'"{name}" <sip:{aor}>'
    return (
        ("P-Asserted-Identity", address),
        ("Remote-Party-ID", f"{address};party={party};screen=yes;privacy=off"),
    )


def trust_state_of(value: str | None) -> TrustState | None:
    """The record's ``trust_state`` text as the enum (None for none or an unknown value)."""
    try:
        return TrustState(value) if value is not None else None
    except ValueError:
        return None


__all__ = [
    "DISPLAY_WIDTH",
    "MAX_NAME",
    "LabelKind",
    "Shown",
    "choose_kind",
    "clean_name",
    "identity_headers",
    "label_text",
    "shown_for",
    "trust_state_of",
]
