"""Connects the web phone to the gateway it runs in: the gateway's inside SIP address and RTP host, and the view of
a web call's bridge that the page shows. The one place ``voipgw.web`` reads the B2BUA's state; it writes one
flag: a bridge whose SAS the page was shown may take ``*1`` (``Bridge.sas_told``), as after the spoken SAS."""

from __future__ import annotations

from typing import Any

from voipgw.gateway.b2bua import Gateway
from voipgw.ops.config import GatewayConfig
from voipgw.web.calls import WebLink


def gateway_link(config: GatewayConfig, gateway: Gateway) -> WebLink:
    host = config.inside.listen[0]

    def view(inside_call_id: str) -> dict[str, Any] | None:
        bridge = next(
            (b for b in gateway.bridges if b.inside_sip is not None and b.inside_sip.call_id == inside_call_id), None
        )
        if bridge is None or bridge.outside is None:
            return None
        rec = bridge.outside.record
        if rec.sas is not None:
            bridge.sas_told = True  # it is on the page now: the user can compare it, so "SAS matches" may count
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
        }

    return WebLink((host, gateway.port), config.inside.rtp_host, view)
