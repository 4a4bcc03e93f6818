"""The gateway's lookup of the user's own name for a call's far end (voipgw.gateway.contact_names): the signed
AOR's name from a real contact store, nothing for a call in the clear, and a store that cannot be read costs the
name (logged), never the call."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from ratchet.identity import IdentityKey
from voipgw.call import CallRecord, Security
from voipgw.gateway.contact_names import contact_name
from voipgw.trust import TrustStore

ALICE = "alice@example.org"


def _named_store(home: Path) -> TrustStore:
    trust = TrustStore(home)
    trust.store.add_first_contact(ALICE, IdentityKey.generate().public.serialize(), local_aor=None, now=1.0)
    trust.store.set_name(ALICE, "Alice Smith", now=2.0)
    return trust


@pytest.mark.parametrize(
    ("security", "aor", "name"),
    [
        (Security.SECURE_UNVERIFIED, ALICE, "Alice Smith"),
        (Security.SECURE_VERIFIED, "sip:alice@EXAMPLE.org", "Alice Smith"),
        (Security.KEY_CHANGED, ALICE, "Alice Smith"),
        (Security.SECURE_UNVERIFIED, "carol@example.org", None),  # not a contact
        (Security.NOT_SECURE, ALICE, None),  # in the clear nothing signed the AOR
        (Security.PENDING, ALICE, None),
        (Security.REFUSED, ALICE, None),
    ],
)
def test_the_name_comes_from_the_store_for_a_signed_aor_only(
    tmp_path: Path, security: Security, aor: str, name: str | None
) -> None:
    with _named_store(tmp_path) as trust:
        rec = CallRecord(call_id="c1", remote_aor=aor, security=security)
        assert asyncio.run(contact_name(trust, rec)) == name
        assert asyncio.run(contact_name(None, rec)) is None


def test_an_unreadable_store_costs_the_name_and_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    trust = _named_store(tmp_path)
    trust.close()  # every query now fails inside SQLite
    rec = CallRecord(call_id="c2", remote_aor=ALICE, security=Security.SECURE_UNVERIFIED)
    with caplog.at_level(logging.WARNING, logger="voipgw.gateway.b2bua"):
        assert asyncio.run(contact_name(trust, rec)) is None
    assert "no local name for alice@example.org" in caplog.text and "c2" in caplog.text
