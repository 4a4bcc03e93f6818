"""How the SIP adapter reads the URIs and AORs its callers hand it."""

from __future__ import annotations

import pytest

from voipgw.sip.stack import _aor, _parse_uri


@pytest.mark.parametrize(
    ("given", "aor"),
    [
        ("sip:bob@127.0.0.1:5082", "sip:bob@127.0.0.1:5082"),
        ("alice@127.0.0.1", "sip:alice@127.0.0.1"),
        ("bob@example.org:5070", "sip:bob@example.org:5070"),
        ("<sip:carol@10.0.0.1>", "sip:carol@10.0.0.1"),
        ("sip:dave@127.0.0.1;transport=udp", "sip:dave@127.0.0.1"),
        ("sips:erin@127.0.0.1:5061", "sip:erin@127.0.0.1:5061"),
    ],
)
def test_uris_and_bare_aors_are_accepted(given: str, aor: str) -> None:
    assert _aor(_parse_uri(given)) == aor


@pytest.mark.parametrize("bad", ["tel:+15551234", "http://x@y"])
def test_other_schemes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        _parse_uri(bad)
