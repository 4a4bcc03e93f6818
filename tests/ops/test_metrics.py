"""Gateway metrics: the counters move as calls and frames do, and the HTTP endpoint serves them on loopback."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from voipgw.ops.metrics import (
    MAX_LABEL_VALUES,
    NO_KEY_EXCHANGE,
    GatewayMetrics,
    MetricsError,
    MetricsServer,
    handshake_failure_reason,
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(server: MetricsServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{server.host}:{server.port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        return samples(resp.read().decode())


def test_call_and_frame_metrics_scraped_over_http() -> None:
    m = GatewayMetrics()
    server = MetricsServer(m, "127.0.0.1", 0)
    assert server.running
    try:
        assert scrape(server)[("voipgw_frames_sealed_total", ())] == 0
        m.call_started("secure, unverified", transcoding=True)
        m.call_started("secure, unverified", transcoding=False)
        m.call_started("NOT SECURE", transcoding=False)
        m.call_security_changed("secure, unverified", "secure, verified")
        m.call_ended("secure, unverified", transcoding=True)
        m.handshake_failed("BadSignature")
        m.handshake_failed("BadSignature")
        m.handshake_failed("StaleTimestamp")
        m.sealed(500)
        m.opened(498)
        m.refused("ReplayedFrame", 2)
        m.set_registered(2)
        got = scrape(server)
    finally:
        server.close()
    assert got[("voipgw_calls_total", (("security", "secure_unverified"),))] == 2
    assert got[("voipgw_calls_total", (("security", "not_secure"),))] == 1
    assert ("voipgw_calls_total", (("security", "secure_verified"),)) not in got, "a verification is not a new call"
    assert got[("voipgw_calls_active", (("security", "secure_unverified"),))] == 0
    assert got[("voipgw_calls_active", (("security", "secure_verified"),))] == 1
    assert got[("voipgw_calls_active", (("security", "not_secure"),))] == 1
    assert got[("voipgw_handshake_failures_total", (("reason", "badsignature"),))] == 2
    assert got[("voipgw_handshake_failures_total", (("reason", "staletimestamp"),))] == 1
    assert got[("voipgw_frames_sealed_total", ())] == 500
    assert got[("voipgw_frames_opened_total", ())] == 498
    assert got[("voipgw_frames_refused_total", (("reason", "replayedframe"),))] == 2
    assert got[("voipgw_transcoded_calls_total", ())] == 1
    assert got[("voipgw_transcoding_calls_active", ())] == 0
    assert got[("voipgw_registrations", ())] == 2
    assert not server.running, "close() stops the thread and the listening socket"


def test_label_values_are_bounded() -> None:
    m = GatewayMetrics()
    for i in range(MAX_LABEL_VALUES + 10):
        m.handshake_failed(f"reason{i}")
    m.handshake_failed("sip:eve@evil\x00\n{}")
    m.handshake_failed("x" * 200)
    got = samples(m.exposition().decode())
    reasons = {dict(k[1])["reason"] for k in got if k[0] == "voipgw_handshake_failures_total"}
    assert len(reasons) == MAX_LABEL_VALUES + 1
    assert got[("voipgw_handshake_failures_total", (("reason", "other"),))] == 12


def test_two_instances_do_not_share_a_registry() -> None:
    a, b = GatewayMetrics(), GatewayMetrics()
    a.sealed(3)
    assert samples(b.exposition().decode())[("voipgw_frames_sealed_total", ())] == 0


def test_port_in_use_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(MetricsError, match=rf"^metrics endpoint 127\.0\.0\.1:{port}: Address already in use$"):
            MetricsServer(GatewayMetrics(), "127.0.0.1", port)


def test_live_gauges_are_read_at_scrape_time_and_finished_calls_counted_once() -> None:
    m = GatewayMetrics()
    live: list[tuple[str, bool]] = [("secure, unverified", True), ("secure, unverified", False), ("NOT SECURE", False)]
    m.track_active(lambda: list(live))
    got = samples(m.exposition().decode())
    assert got[("voipgw_calls_active", (("security", "secure_unverified"),))] == 2
    assert got[("voipgw_calls_active", (("security", "not_secure"),))] == 1
    assert got[("voipgw_calls_active", (("security", "refused"),))] == 0, "every state is exported, 0 too"
    assert got[("voipgw_transcoding_calls_active", ())] == 1
    live.pop(0)
    m.call_finished("secure, unverified", True, sealed=300, opened=290, refused={"tampered": 3, "replayed": 0})
    m.call_finished("refused", False, sealed=0, opened=0, refused={}, handshake_failure="bad-signature")
    got = samples(m.exposition().decode())
    assert got[("voipgw_calls_active", (("security", "secure_unverified"),))] == 1
    assert got[("voipgw_transcoding_calls_active", ())] == 0
    assert got[("voipgw_calls_total", (("security", "secure_unverified"),))] == 1
    assert got[("voipgw_calls_total", (("security", "refused"),))] == 1
    assert got[("voipgw_transcoded_calls_total", ())] == 1
    assert got[("voipgw_frames_sealed_total", ())] == 300 and got[("voipgw_frames_opened_total", ())] == 290
    assert got[("voipgw_frames_refused_total", (("reason", "tampered"),))] == 3
    assert ("voipgw_frames_refused_total", (("reason", "replayed"),)) not in got
    assert got[("voipgw_handshake_failures_total", (("reason", "bad_signature"),))] == 1


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("488 voipgw gateway: outside leg: 488 Not Acceptable Here (voipgw: key exchange refused: bad-signature)",
         "bad-signature"),
        ("key exchange refused: malformed-identity-key", "malformed-identity-key"),
        ("outside: call-id-mismatch", "call-id-mismatch"),
        ("voipgw: end-to-end encryption is required here and the offer carries no voipgw key exchange (a=voipgw)",
         NO_KEY_EXCHANGE),
        ("488 voipgw gateway: outside leg: answered without the voipgw key exchange", NO_KEY_EXCHANGE),
        ("sas-commitment-mismatch: possible man in the middle", "sas_commitment_mismatch"),
        ("key exchange refused: something new", "other"),
        ("486 Busy Here", None),
        ("488 voipgw gateway: outside leg: 488 Not Acceptable Here", None),
        ("488 voipgw gateway: outside leg: 488 Not Acceptable Here: the far end has no voipgw (no key exchange; its "
         "refusal carries no voipgw reason)", NO_KEY_EXCHANGE),
        ("outside leg: remote hangup: voipgw: answer refused: key exchange failed: bad-signature", "bad-signature"),
        ("488 Not Acceptable Here (voipgw: key exchange refused: reflected-offer)", "reflected-offer"),
        ("key exchange failed: reflected-answer: signed with our own identity key", "reflected-answer"),
        ("488 Not Acceptable Here (voipgw: a known voipgw contact must use end-to-end encryption)",
         "pinned_contact_unencrypted"),
        ("a known voipgw contact answered without the voipgw key exchange (a=voipgw stripped on the way?); hung up",
         "pinned_contact_unencrypted"),
        ("488 Not Acceptable Here (voipgw: call refused for a key change)", "key_changed"),
    ],
)  # fmt: skip
def test_handshake_failure_reason_reads_the_typed_reason(text: str, reason: str | None) -> None:
    assert handshake_failure_reason(text) == reason


def test_frames_of_calls_in_progress_count_at_scrape_time_and_never_twice() -> None:
    m = GatewayMetrics()
    live: dict[object, tuple[int, int, dict[str, int]]] = {"c1": (100, 90, {"tampered": 1})}
    m.track_frames(lambda: list(live.items()))

    def totals() -> tuple[float, float, float]:
        got = samples(m.exposition().decode())
        return (
            got[("voipgw_frames_sealed_total", ())],
            got[("voipgw_frames_opened_total", ())],
            got.get(("voipgw_frames_refused_total", (("reason", "tampered"),)), 0.0),
        )

    assert totals() == (100, 90, 1)
    assert totals() == (100, 90, 1), "a second scrape adds nothing new"
    live["c1"] = (250, 240, {"tampered": 2})
    live["c2"] = (10, 0, {})
    assert totals() == (260, 240, 2)
    del live["c1"]  # the call ended: gone from the live list before its final count arrives
    assert totals() == (260, 240, 2), "counters never go backwards"
    m.call_finished("secure, unverified", False, sealed=300, opened=290, refused={"tampered": 2}, key="c1")
    assert totals() == (310, 290, 2)
    m.call_finished("NOT SECURE", False, sealed=20, opened=0, refused={}, key="c2")
    del live["c2"]
    assert totals() == (320, 290, 2)


def test_calls_are_counted_by_the_label_their_phone_was_shown() -> None:
    m = GatewayMetrics()
    m.call_finished("secure, unverified", False, sealed=10, opened=0, refused={}, label="unverifiable")
    m.call_finished("secure, unverified", False, sealed=10, opened=10, refused={}, label="first-contact")
    m.call_finished("refused", False, sealed=0, opened=0, refused={})
    got = samples(m.exposition().decode())
    assert got[("voipgw_calls_labelled_total", (("label", "unverifiable"),))] == 1
    assert got[("voipgw_calls_labelled_total", (("label", "first_contact"),))] == 1
    assert sum(v for (name, _), v in got.items() if name == "voipgw_calls_labelled_total") == 2


def test_zone_refusals_are_read_from_the_gateway_at_each_scrape() -> None:
    m = GatewayMetrics()
    counts = {"register_on_outside": 2}
    m.track_zone_refusals(lambda: dict(counts))
    got = samples(m.exposition().decode())
    assert got[("voipgw_zone_refusals_total", (("reason", "register_on_outside"),))] == 2
    counts["pbx_on_inside"] = 1
    got = samples(m.exposition().decode())
    assert got[("voipgw_zone_refusals_total", (("reason", "pbx_on_inside"),))] == 1


def test_degraded_calls_are_counted_at_the_end_and_shown_live_by_reason() -> None:
    m = GatewayMetrics()
    live = {"no-peer-dh-step": 2}
    m.track_degraded(lambda: dict(live), ["no-peer-dh-step", "no-sas-reveal"])
    got = samples(m.exposition().decode())
    assert got[("voipgw_calls_degraded_active", (("reason", "no_peer_dh_step"),))] == 2
    assert got[("voipgw_calls_degraded_active", (("reason", "no_sas_reveal"),))] == 0
    live.clear()
    m.call_finished("secure, unverified", False, sealed=1, opened=1, refused={}, degraded=["no-sas-reveal"])
    m.call_finished("secure, unverified", False, sealed=1, opened=1, refused={})
    got = samples(m.exposition().decode())
    assert got[("voipgw_calls_degraded_active", (("reason", "no_peer_dh_step"),))] == 0
    assert got[("voipgw_calls_degraded_total", (("reason", "no_sas_reveal"),))] == 1


def test_calls_are_counted_by_where_their_key_exchange_travelled_and_in_band_refusals_by_reason() -> None:
    m = GatewayMetrics()
    m.call_finished("secure, unverified", False, sealed=10, opened=10, refused={}, key_exchange="sdp")
    m.call_finished(
        "secure, unverified", False, sealed=10, opened=10, refused={}, key_exchange="media",
        inband_refused={"inband-malformed": 3, "inband-conflict": 0},
    )  # fmt: skip
    m.call_finished("refused", False, sealed=0, opened=0, refused={})
    got = samples(m.exposition().decode())
    assert got[("voipgw_calls_key_exchange_total", (("path", "sdp"),))] == 1
    assert got[("voipgw_calls_key_exchange_total", (("path", "media"),))] == 1
    assert got[("voipgw_calls_key_exchange_total", (("path", "none"),))] == 1
    assert got[("voipgw_inband_refused_total", (("reason", "inband_malformed"),))] == 3
    assert ("voipgw_inband_refused_total", (("reason", "inband_conflict"),)) not in got
