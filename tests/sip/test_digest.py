"""Server-side digest: RFC 7616 vectors, the Authorization parser (property-tested: only DigestParseError),
stateless nonces going stale, nc replay with a bounded table, and INVITE challenges over a real socket."""

from __future__ import annotations

import asyncio
import secrets
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.testbed.sip_peer import running_stack
from voipgw.sip import IncomingCall
from voipgw.sip.digest import (
    Authenticated,
    Challenge,
    DigestAuthenticator,
    DigestCredentials,
    DigestParseError,
    Forbidden,
    digest_response,
    parse_authorization,
)
from voipgw.sip.registrar import Registrar

REPLY_WAIT = 2.0
WAIT_S = 10.0

# RFC 7616 §3.9.1
VECTOR = {
    "username": "Mufasa",
    "password": "Circle of Life",
    "realm": "http-auth@example.org",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "uri": "/dir/index.html",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
}


@pytest.mark.parametrize(
    ("alg", "want"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(alg: str, want: str) -> None:
    v = VECTOR
    got = digest_response(
        alg, v["username"], v["realm"], v["password"], "GET", v["uri"], v["nonce"], "00000001", v["cnonce"], "auth"
    )
    assert got == want


def test_parser_handles_quoting_escapes_spacing_and_case() -> None:
    cred = parse_authorization(
        'digest  USERNAME="al\\"ice" ,realm="r,1", nonce=abc, uri="sip:x;a=b,c", response="FF", '
        'algorithm=SHA-256,qop=auth,nc=0000000a,cnonce="c c", opaque="o", extra=1'
    )
    assert cred == DigestCredentials(
        username='al"ice', realm="r,1", nonce="abc", uri="sip:x;a=b,c", response="FF", algorithm="SHA-256",
        qop="auth", nc="0000000a", cnonce="c c", opaque="o",
    )  # fmt: skip
    assert parse_authorization('Digest username="a", realm="r", nonce="n", uri="u", response="0"').algorithm == "MD5"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Digest",
        "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        'Digest username="a", realm="r", nonce="n", uri="u"',  # no response
        'Digest username="a, realm="r", nonce="n", uri="u", response="0"',  # unterminated quote
        'Digest username="a" realm="r", nonce="n", uri="u", response="0"',  # missing comma
        'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="0"',
        'Digest username="a", realm="r", nonce="n", uri="u", response="0", qop=auth',  # qop without nc
        'Digest username="a", realm="r", nonce="n", uri="u", response="0", qop=auth, nc=1, cnonce="c"',
        'Digest username, realm="r"',
        'Digest username="a\\',
        "Digest =x",
        "Digest " + ", ".join(f"p{i}=1" for i in range(40)),
        'Digest username="' + "a" * 5000 + '"',
    ],
)
def test_parser_rejects_malformed_values_with_its_typed_error(value: str) -> None:
    with pytest.raises(DigestParseError):
        parse_authorization(value)


_param_names = st.sampled_from(
    ["username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce", "algorithm", "opaque", "x", "Digest"]
)
_fragments = st.one_of(
    st.text(max_size=30),
    st.sampled_from(['"', "\\", ",", "=", " ", "\t", "Digest ", '="', '\\"', "auth", "00000001"]),
    st.builds(lambda n, v: f'{n}="{v}"', _param_names, st.text(max_size=12)),
    st.builds(lambda n, v: f"{n}={v}", _param_names, st.text(alphabet="abc019-.", max_size=8)),
)


@settings(max_examples=600, deadline=None)
@given(st.lists(_fragments, max_size=14).map("".join))
def test_parser_never_raises_anything_but_its_typed_error(value: str) -> None:
    for candidate in (value, "Digest " + value):
        try:
            cred = parse_authorization(candidate)
        except DigestParseError:
            continue
        assert isinstance(cred, DigestCredentials)


_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=300, deadline=None)
@given(username=_values, realm=_values, nonce=_values, uri=_values, cnonce=_values)
def test_parser_round_trips_any_quoted_values(username: str, realm: str, nonce: str, uri: str, cnonce: str) -> None:
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    header = (
        f"Digest username={q(username)}, realm={q(realm)}, nonce={q(nonce)}, uri={q(uri)}, "
        f'response="00", qop=auth, nc=00000001, cnonce={q(cnonce)}'
    )
    cred = parse_authorization(header)
    assert (cred.username, cred.realm, cred.nonce, cred.uri, cred.cnonce) == (username, realm, nonce, uri, cnonce)


# --- the authenticator ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def credentials(ch: Challenge, user: str, password: str, nc: int = 1, *, alg: str = "MD5", realm: str = "r") -> str:
    nonce = ch.headers[0].split('nonce="')[1].split('"')[0]
    ncs = f"{nc:08x}"
    resp = digest_response(alg, user, realm, password, "REGISTER", "sip:r", nonce, ncs, "cn", "auth")
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="sip:r", response="{resp}", '
        f'algorithm={alg}, qop=auth, nc={ncs}, cnonce="cn"'
    )


def test_nonces_go_stale_forged_ones_are_rechallenged_and_replays_refused() -> None:
    clock = Clock()
    users = {"alice": "pw"}
    auth = DigestAuthenticator("r", users.get, clock=clock, nonce_ttl_s=300, max_tracked_nonces=2)
    ch = auth.challenge()
    assert all('qop="auth"' in h and "stale" not in h for h in ch.headers)
    none = auth.verify([], "REGISTER", "alice")
    assert isinstance(none, Challenge) and none.reason == "no credentials"
    assert auth.verify([credentials(ch, "alice", "pw")], "REGISTER", "alice") == Authenticated("alice")
    # replay of nc=1, then the next count
    replay = auth.verify([credentials(ch, "alice", "pw")], "REGISTER", "alice")
    assert isinstance(replay, Challenge) and "stale=true" in replay.headers[0]
    assert auth.verify([credentials(ch, "alice", "pw", 2)], "REGISTER", "alice") == Authenticated("alice")
    # wrong password, someone else's name, unknown user: 403 material
    assert isinstance(auth.verify([credentials(ch, "alice", "nope", 3)], "REGISTER", "alice"), Forbidden)
    assert isinstance(auth.verify([credentials(ch, "alice", "pw", 3)], "REGISTER", "bob"), Forbidden)
    assert isinstance(auth.verify([credentials(ch, "bob", "pw", 3)], "REGISTER", "bob"), Forbidden)
    # a nonce we never issued (or from a previous process) is re-challenged, not refused
    forged = credentials(ch, "alice", "pw", 5).replace(ch.headers[0].split('nonce="')[1].split('"')[0], "AAAA")
    verdict = auth.verify([forged], "REGISTER", "alice")
    assert isinstance(verdict, Challenge) and "stale" not in verdict.headers[0]
    # another realm's credentials are ignored (a challenge), an unparsable one too
    assert isinstance(auth.verify([credentials(ch, "alice", "pw", 6, realm="other")], "REGISTER", "alice"), Challenge)
    assert isinstance(auth.verify(['Digest username="a'], "REGISTER", "alice"), Challenge)
    # SHA-256 credentials are not accepted when only MD5 was offered
    assert isinstance(auth.verify([credentials(ch, "alice", "pw", 7, alg="SHA-256")], "REGISTER", "alice"), Challenge)
    # time passes: the right answer on an old nonce gets stale=true, a fresh nonce works
    clock.now += 301
    stale = auth.verify([credentials(ch, "alice", "pw", 8)], "REGISTER", "alice")
    assert isinstance(stale, Challenge) and "stale=true" in stale.headers[0]
    fresh = auth.challenge()
    assert auth.verify([credentials(fresh, "alice", "pw")], "REGISTER", "alice") == Authenticated("alice")
    # the replay table is bounded: once ch's nonce is forgotten only nc=1 could start it again, so later
    # counts are re-challenged rather than trusted
    clock.now -= 301
    for _ in range(3):
        other = auth.challenge()
        assert auth.verify([credentials(other, "alice", "pw")], "REGISTER", "alice") == Authenticated("alice")
    assert len(auth._nc_seen) == 2
    assert isinstance(auth.verify([credentials(ch, "alice", "pw", 9)], "REGISTER", "alice"), Challenge)
    assert "pw" not in repr(auth) and "pw" not in repr(ch)


def test_sha256_is_verified_when_offered() -> None:
    auth = DigestAuthenticator("r", {"alice": "pw"}.get, algorithms=("SHA-256", "MD5"))
    ch = auth.challenge()
    assert [h.split("algorithm=")[1].split(",")[0] for h in ch.headers] == ["SHA-256", "MD5"]
    cred = credentials(ch, "alice", "pw", alg="SHA-256")
    assert auth.verify([cred], "REGISTER", "alice") == Authenticated("alice")
    with pytest.raises(ValueError):
        DigestAuthenticator("r", {"alice": "pw"}.get, algorithms=("SHA-512",))


# --- INVITEs over a real socket --------------------------------------------------------------------------


def invite(port: int, lport: int, call_id: str, cseq: int, extra: str = "", contact: str | None = None) -> bytes:
    body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
    contact = contact or f"<sip:alice@127.0.0.1:{lport}>"
    return (
        f"INVITE sip:bob@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
        f"From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
        f"CSeq: {cseq} INVITE\r\nContact: {contact}\r\nMax-Forwards: 70\r\n{extra}"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def final_reply(sock: socket.socket) -> str:
    while True:
        text = sock.recv(65535).decode()
        if int(text.split(" ", 2)[1]) >= 200:
            return text


@pytest.mark.integration  # takes seconds
def test_raw_invite_challenged_refused_then_accepted_on_the_same_call_id() -> None:
    registrar = Registrar({"alice": "pw"}, auth=True)

    async def main() -> None:
        async with running_stack(registrar=registrar) as stack:
            stack.authenticate_invites(lambda source, user: user == "alice")
            port = stack.local_port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                s.settimeout(REPLY_WAIT)
                lport = s.getsockname()[1]
                call_id = secrets.token_hex(8)

                def exchange(data: bytes) -> str:
                    s.sendto(data, ("127.0.0.1", port))
                    return final_reply(s)

                text = await asyncio.to_thread(exchange, invite(port, lport, call_id, 1))
                assert text.startswith("SIP/2.0 401 "), text
                challenge = next(ln for ln in text.split("\r\n") if ln.startswith("WWW-Authenticate: "))
                nonce = challenge.split('nonce="')[1].split('"')[0]

                def auth_hf(password: str, nc: int) -> str:
                    uri = f"sip:bob@127.0.0.1:{port}"
                    ncs = f"{nc:08x}"
                    resp = digest_response("MD5", "alice", "voipgw", password, "INVITE", uri, nonce, ncs, "x", "auth")
                    # a quoted comma in the uri: valid, and exactly what sippy's own parser chokes on
                    return (
                        f'Authorization: Digest username="alice",realm="voipgw",nonce="{nonce}",uri="{uri}",'
                        f'response="{resp}",algorithm=MD5,qop=auth,nc={ncs},cnonce="x",opaque="a,b"\r\n'
                    )

                text = await asyncio.to_thread(exchange, invite(port, lport, call_id, 2, auth_hf("wrong", 1)))
                assert text.startswith("SIP/2.0 403 "), text
                assert stack.incoming.empty() and stack.active_calls == 0
                # the challenged and the refused INVITE left no dialog behind for this Call-ID
                assert call_id not in stack._tm.req_consumers
                s.sendto(invite(port, lport, call_id, 3, auth_hf("pw", 1)), ("127.0.0.1", port))
                call = await asyncio.wait_for(stack.incoming.get(), WAIT_S)
                assert isinstance(call, IncomingCall)
                assert call.call_id == call_id and call.authenticated_user == "alice"
                call.reject(486, "Busy Here")
                text = await asyncio.to_thread(final_reply, s)
                assert text.startswith("SIP/2.0 486 "), text
                # a caller the predicate exempts is not challenged and has no authenticated user
                s2 = invite(port, lport, secrets.token_hex(8), 1).replace(
                    b"<sip:alice@127.0.0.1>;tag", b"<sip:bob@x>;tag"
                )
                s.sendto(s2, ("127.0.0.1", port))
                free = await asyncio.wait_for(stack.incoming.get(), WAIT_S)
                assert free.authenticated_user is None
                free.reject(486, "Busy Here")
                stats = stack.stats
                assert stats.auth_challenged == 1 and stats.auth_refused == 1

    asyncio.run(asyncio.wait_for(main(), 30.0))


@pytest.mark.integration  # takes seconds
def test_invite_after_a_bad_one_on_the_same_call_id_is_a_fresh_call() -> None:
    """An INVITE that sippy rejects mid-parse (mangled Contact) must leave no dialog state behind."""

    async def main() -> None:
        async with running_stack() as stack:
            port = stack.local_port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                s.settimeout(REPLY_WAIT)
                lport = s.getsockname()[1]
                call_id = secrets.token_hex(8)
                s.sendto(invite(port, lport, call_id, 1, contact="<sip:@>"), ("127.0.0.1", port))
                text = await asyncio.to_thread(final_reply, s)
                assert text.startswith("SIP/2.0 400 "), text
                # Without our own check sippy parses this (valid) header itself and raises on the quoted comma.
                weird = 'Authorization: Digest username="a", realm="x,y", nonce="n", uri="u", response="0"\r\n'
                s.sendto(invite(port, lport, call_id, 2, weird), ("127.0.0.1", port))
                call = await asyncio.wait_for(stack.incoming.get(), WAIT_S)
                assert call.call_id == call_id and call.authenticated_user is None
                call.reject(603, "Decline")
                assert (await asyncio.to_thread(final_reply, s)).startswith("SIP/2.0 603 ")

    asyncio.run(asyncio.wait_for(main(), 30.0))
