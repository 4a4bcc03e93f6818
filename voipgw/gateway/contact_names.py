"""The gateway user's own name for the far end of a call (``voipgw gateway contacts --user U name AOR NAME``),
looked up by the AOR the key exchange signed, for the ringing label (``voipgw.gateway.labels``). Read from the
contact store off the event loop; a store that cannot be read costs the name (the AOR's user part is shown, the
label is unchanged), never the call."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from ratchet.errors import RatchetError
from voipgw.call import CallRecord
from voipgw.logutil import RateLimitedLog
from voipgw.store.errors import ContactStoreError
from voipgw.trust import TrustStore

log = logging.getLogger("voipgw.gateway.b2bua")  # the gateway's log lines keep the name operators filter on
_unreadable = RateLimitedLog(log)


async def contact_name(trust: TrustStore | None, rec: CallRecord) -> str | None:
    """The stored name for ``rec.remote_aor``; None without a store, a name, or a sealed call (in the clear the
    AOR is whatever the From header said: no local name is ever put next to it)."""
    if trust is None or not rec.secure or not rec.remote_aor:
        return None
    try:
        contact = await asyncio.to_thread(trust.store.get, rec.remote_aor)
    except (ContactStoreError, sqlite3.Error, RatchetError) as exc:
        reason = getattr(exc, "reason", type(exc).__name__)
        _unreadable("contact-name", logging.WARNING, "gateway call %s: no local name for %s (contact store: %s)",
                    rec.call_id, rec.remote_aor, reason)  # fmt: skip
        return None
    return None if contact is None else contact.name


__all__ = ["contact_name"]
