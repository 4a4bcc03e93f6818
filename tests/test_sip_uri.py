"""How voipgw reads the URIs and AORs its callers and peers hand it (voipgw.sip.uri), by table and by property."""

from __future__ import annotations

import string

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


# --- parity with the gateway's own helpers, which the gateway swaps for these at merge time ----------------------
# The integrator deletes this section when voipgw/gateway stops defining _user_part/_uri_hostport.

from voipgw.gateway.b2bua import _uri_hostport, _user_part  # noqa: E402

_PASSWORD_OR_PORT = st.sampled_from(["", ":5060", ":5070", ":65535", ":x", ":"])


def _differs_on_purpose(text: str) -> bool:
    """Inputs the gateway helpers read wrongly and uri.py reads properly (see test_user_and_hostport):
    surrounding blanks, ``<...>``/display names, an upper-case scheme, IPv6 brackets, ``?headers``, and a
    ``user:password`` userinfo."""
    if text != text.strip() or any(ch in text for ch in "<[?"):
        return True
    if text[:5].lower().startswith(("sip:", "sips:")) and not text.startswith(("sip:", "sips:")):
        return True
    if text.startswith(("sip:", "sips:")):
        rest = text.split(":", 1)[1]
        return "@" in rest and ":" in rest.split("@", 1)[0]
    return False


def _old(text: str) -> tuple[str, tuple[str, int]] | None:
    try:
        return _user_part(text), _uri_hostport(text)
    except ValueError:  # e.g. a superscript digit as the port: the gateway helper raised, so it "accepted" nothing
        return None


_token = st.text(alphabet=string.ascii_letters + string.digits + "-_.!~*'+", min_size=1, max_size=12)
_host = st.one_of(
    st.from_regex(r"\A[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}\Z"),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
)
_params = st.lists(st.tuples(_token, st.one_of(st.just(""), _token)), max_size=3).map(
    lambda ps: "".join(f";{k}={v}" if v else f";{k}" for k, v in ps)
)


@st.composite
def _uris(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["sip:", "sips:", ""]))
    user = draw(st.one_of(st.just(""), _token))
    return f"{scheme}{user + '@' if user else ''}{draw(_host)}{draw(_PASSWORD_OR_PORT)}{draw(_params)}"


_GATEWAY_TABLE = [
    "sip:alice@127.0.0.1:5062",
    "bob@example.org",
    "sip:bob@127.0.0.1:5070",
    "example.org",
    "sip:bob@127.0.0.1:5070;transport=tcp",
    "sips:carol@10.0.0.9:5061;transport=tls",
    "sip:+15551234@pbx.example.org;user=phone",
    "sip:pbx.example.org:5080",
    "tel:+15551234",
    "sip:bob@h:99999",
    "sip:bob@h:١٢",
    "sip:bob@h:²",
    "sip:",
    "@",
    "",
]


@pytest.mark.parametrize("text", _GATEWAY_TABLE)
def test_same_as_gateway_helpers_table(text: str) -> None:
    old = _old(text)
    if old is not None:
        assert (user_part(text), hostport(text)) == old


@given(st.one_of(_uris(), st.text(), st.text(alphabet="sip:@;=.>5060abx ", max_size=20)))
@settings(max_examples=1500, deadline=None)
def test_same_as_gateway_helpers_property(text: str) -> None:
    old = _old(text)
    if old is not None and not _differs_on_purpose(text):
        assert (user_part(text), hostport(text)) == old


@pytest.mark.parametrize(
    "text",
    ["<sip:bob@h>", "SIP:bob@h", "sip:bob@[::1]:5060", "sip:bob@h?x=y", "sip:bob:pw@h", " sip:bob@h"],
)
def test_deliberate_differences_are_fixes(text: str) -> None:
    """Where the gateway helpers read a URI wrongly, uri.py differs, and only there."""
    assert _differs_on_purpose(text)
    assert (user_part(text), hostport(text)) != _old(text)
