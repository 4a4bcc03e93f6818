"""``voipgw_inside_media_dropped_total``: inside-leg drops by reason, fed from a finished call's counters."""

from __future__ import annotations

from voipgw.ops.metrics import GatewayMetrics


def test_inside_drops_are_counted_by_normalised_reason() -> None:
    metrics = GatewayMetrics()
    metrics.inside_dropped({"wrong-source": 3, "srtp-auth": 2, "srtp-replay": 0})
    metrics.inside_dropped({"wrong-source": 1})
    text = metrics.exposition().decode()
    assert 'voipgw_inside_media_dropped_total{reason="wrong_source"} 4.0' in text, text
    assert 'voipgw_inside_media_dropped_total{reason="srtp_auth"} 2.0' in text
    assert "srtp_replay" not in text
