"""Connects the web phone to the gateway it runs in: the gateway's inside SIP address and RTP host, and the view of
a web call's bridge that the page shows. The one place ``voipgw.web`` reads the B2BUA's state; it writes one
flag: a bridge whose SAS the page was shown may take ``*1`` (``Bridge.sas_told``), as after the spoken SAS."""

from __future__ import annotations

import asyncio
from typing import Any

import segno

from voipgw.gateway.b2bua import Gateway
from voipgw.ops.config import GatewayConfig
from voipgw.trust import safety_number_qr
from voipgw.web.calls import WebLink

QR_KEPT = 64
HISTORY_KEPT = 50
SETTLE_S = 3.0
"""How long a call's end may take to reach the gateway's books after the page's dialog ended."""


def gateway_link(config: GatewayConfig, gateway: Gateway) -> WebLink:
    host = config.inside.listen[0]
    qr_codes: dict[str, tuple[str, str]] = {}
    """Inside Call-ID -> (payload, SVG data URI) of its safety-number QR code (computed once, off the loop)."""

    async def view(inside_call_id: str) -> dict[str, Any] | None:
        bridge = next(
            (b for b in gateway.bridges if b.inside_sip is not None and b.inside_sip.call_id == inside_call_id), None
        )
        if bridge is None or bridge.outside is None:
            return None
        rec = bridge.outside.record
        if rec.sas is not None:
            bridge.sas_told = True  # it is on the page now: the user can compare it, so "SAS matches" may count
        qr = qr_codes.get(inside_call_id)
        if qr is None and rec.local_identity is not None and rec.remote_identity is not None:
            payload = await asyncio.to_thread(
                safety_number_qr, rec.local_aor, rec.local_identity, rec.remote_aor, rec.remote_identity
            )
            qr = qr_codes[inside_call_id] = (payload, segno.make(payload, error="m").svg_data_uri(scale=4))
            if len(qr_codes) > QR_KEPT:
                del qr_codes[next(iter(qr_codes))]
        return {
            "security": rec.security.value,
            "label": bridge.label,
            "display": bridge.display,
            "remote_aor": rec.remote_aor,
            "sas": rec.sas,
            "sas_words": list(rec.sas_words) if rec.sas_words else None,
            "safety_number": rec.safety_number,
            "sas_check": bridge.sas_check.value if bridge.sas_check is not None else None,
            "trust_state": rec.trust_state,
            # A key change: the old and new safety numbers, when, what to do (the page shows it full-page).
            "trust_warning": rec.trust_warning,
            # What a phone scans to compare (docs/PROTOCOL.md D.2): the payload, and its QR code as an SVG image.
            "safety_qr_text": qr[0] if qr is not None else None,
            "safety_qr": qr[1] if qr is not None else None,
        }

    async def directory(user: str, after_call: str | None = None) -> dict[str, Any]:
        """The user's contacts (from its contact store, off the loop) and its calls since the gateway started;
        ``after_call``: an inside Call-ID that just ended, waited for (bounded) so the list includes it."""
        for _ in range(int(SETTLE_S / 0.05)):
            if after_call is None or any(c.get("inside_call_id") == after_call for c in list(gateway.finished)):
                break
            await asyncio.sleep(0.05)
        trust = gateway.trust.get(user)
        contacts = await asyncio.to_thread(trust.store.contacts) if trust is not None else []
        calls = [c for c in list(gateway.finished) if c.get("user") == user][-HISTORY_KEPT:]
        return {
            "contacts": [
                {
                    "aor": c.aor,
                    "name": c.name,
                    "verified": c.verified,
                    "key_changed": c.changed_at is not None or c.pending_key is not None,
                    "calls": c.call_count,
                    "last_seen": c.last_seen,
                }
                for c in contacts
            ],
            "history": [
                {
                    "direction": c["direction"],
                    "remote_aor": c["remote_aor"],
                    "security": c["security"],
                    "reason": c["reason"],
                    "started_at": c["started_at"],
                    "ended_at": c["ended_at"],
                }
                for c in reversed(calls)
            ],
        }

    return WebLink((host, gateway.port), config.inside.rtp_host, view, directory)
