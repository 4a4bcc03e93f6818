"""How voipgw reads the URIs and AORs its callers and peers hand it (voipgw.sip.uri), by table and by property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voipgw.sip.sippy_glue import parse_sip_url
from voipgw.sip.uri import UriError, aor, hostport, sip_uri, user_part


@pytest.mark.parametrize(
    ("given", "aor_text"),
    [
        ("sip:bob@127.0.0.1:5082", "sip:bob@127.0.0.1:5082"),
        ("alice@127.0.0.1", "sip:alice@127.0.0.1"),
        ("bob@example.org:5070", "sip:bob@example.org:5070"),
        ("<sip:carol@10.0.0.1>", "sip:carol@10.0.0.1"),
        ("sip:dave@127.0.0.1;transport=udp", "sip:dave@127.0.0.1"),
        ("sips:erin@127.0.0.1:5061", "sip:erin@127.0.0.1:5061"),
    ],
)
def test_uris_and_bare_aors_are_accepted(given: str, aor_text: str) -> None:
    url = parse_sip_url(given)
    assert aor(url.username, url.host, url.port) == aor_text


@pytest.mark.parametrize("bad", ["tel:+15551234", "http://x@y"])
def test_other_schemes_are_refused(bad: str) -> None:
    with pytest.raises(UriError):
        sip_uri(bad)
    with pytest.raises(ValueError):  # UriError is a ValueError, as the stack's callers have always caught
        parse_sip_url(bad)


@pytest.mark.parametrize(
    ("given", "user", "host_port"),
    [
        ("sip:bob@127.0.0.1:5070", "bob", ("127.0.0.1", 5070)),
        ("sips:bob@example.org", "bob", ("example.org", 5060)),
        ("SIP:Bob@Example.org:5080", "Bob", ("Example.org", 5080)),
        ("bob@example.org", "bob", ("example.org", 5060)),
        ("example.org", "", ("example.org", 5060)),
        ("example.org:5070", "", ("example.org", 5070)),
        ("sip:example.org:5070;transport=tcp", "", ("example.org", 5070)),
        ("sip:bob@h;transport=tls;lr", "bob", ("h", 5060)),
        ("sip:bob@h:5062?subject=hi", "bob", ("h", 5062)),
        ("sip:bob;phone-context=x@h", "bob;phone-context=x", ("h", 5060)),
        ("sip:bob:secret@h:5070", "bob", ("h", 5070)),
        ("<sip:bob@h:5062>", "bob", ("h", 5062)),
        ('"Bob B." <sip:bob@h:5062;transport=udp>;tag=abc', "bob", ("h", 5062)),
        ("Bob <sips:bob@h>", "bob", ("h", 5060)),
        ("sip:bob@[::1]:5062", "bob", ("[::1]", 5062)),
        ("sip:[2001:db8::5]", "", ("[2001:db8::5]", 5060)),
        ("<sip:alice@[fe80::1];transport=tcp>", "alice", ("[fe80::1]", 5060)),
        ("  sip:bob@h  ", "bob", ("h", 5060)),
        ("sip:bob@h:notaport", "bob", ("h", 5060)),
        ("sip:@h", "", ("h", 5060)),
        ("", "", ("", 5060)),
    ],
)
def test_user_and_hostport(given: str, user: str, host_port: tuple[str, int]) -> None:
    assert user_part(given) == user
    assert hostport(given) == host_port


def test_hostport_default_port() -> None:
    assert hostport("sips:bob@h", default_port=5061) == ("h", 5061)
    assert hostport("sips:bob@h:5070", default_port=5061) == ("h", 5070)


@given(st.text())
@settings(max_examples=500, deadline=None)
def test_readers_never_raise(text: str) -> None:
    """The lenient readers are total: routing on a garbled URI gets "" or the default port, never an exception."""
    assert isinstance(user_part(text), str)
    host, port = hostport(text)
    assert isinstance(host, str) and isinstance(port, int) and port >= 0
    try:
        assert sip_uri(text).lower().startswith(("sip:", "sips:"))
    except UriError:
        pass  # the only error the module raises
