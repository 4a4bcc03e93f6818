"""``zones.stream_tls``: which TLS each zone's SIP stack gets from the gateway's TLS settings (table test)."""

from __future__ import annotations

import pytest

from voipgw.gateway.zones import stream_tls
from voipgw.sip import TlsOptions

CERT = TlsOptions(ca_file="ca.pem", cert_file="gw.crt", key_file="gw.key", port=5061)
CLIENT_ONLY = TlsOptions(ca_file="ca.pem", port=5061)
OUTSIDE = ("192.0.2.1", 5080)


@pytest.mark.parametrize(
    ("tls", "transport", "outside_listen", "outside", "inside"),
    [
        # Two zones: the phones' TLS listener on inside.tls_port whenever there is a certificate ...
        (CERT, "udp", OUTSIDE, None, CERT),
        (CERT, "auto", OUTSIDE, None, CERT),
        (CERT, "tcp", OUTSIDE, None, CERT),
        # ... and TLS toward the PBX only with outside.transport = "tls", listening on the outside port number.
        (CERT, "tls", OUTSIDE, TlsOptions(ca_file="ca.pem", cert_file="gw.crt", key_file="gw.key", port=5080), CERT),
        (CLIENT_ONLY, "tls", OUTSIDE, TlsOptions(ca_file="ca.pem", port=5080), None),
        (None, "tls", OUTSIDE, TlsOptions(port=5080), None),
        (CLIENT_ONLY, "udp", OUTSIDE, None, None),
        (None, "udp", OUTSIDE, None, None),
        # Flag mode (one listener): the single TLS listener of before, no inside one.
        (CERT, "udp", None, CERT, None),
        (CERT, "tls", None, CERT, None),
        (None, "tls", None, TlsOptions(), None),
        (CLIENT_ONLY, "udp", None, None, None),
        (None, "udp", None, None, None),
    ],
)
def test_stream_tls_splits_the_tls_settings_between_the_zones(
    tls: TlsOptions | None,
    transport: str,
    outside_listen: tuple[str, int] | None,
    outside: TlsOptions | None,
    inside: TlsOptions | None,
) -> None:
    split = stream_tls(tls, transport, outside_listen)
    assert (split.outside, split.inside) == (outside, inside)
