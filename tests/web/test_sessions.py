"""Web phone logins (voipgw.web.sessions) and frames (voipgw.web.protocol): the pure parts, table-tested."""

from __future__ import annotations

import pytest

from voipgw.web.protocol import Answer, BadMessage, CallCommand, Dial, ErrorReason, Login, Logout, Resume, parse
from voipgw.web.sessions import FAILURE_WINDOW_S, MAX_FAILURES, LoginRefusal, LoginRefused, Sessions


def test_login_gives_a_token_that_resumes_until_it_expires() -> None:
    s = Sessions({"alice": "pw-a"}, ttl_s=100.0)
    session = s.login("alice", "pw-a", "127.0.0.1", now=0.0)
    assert session.user == "alice" and len(session.token) >= 40
    assert s.resume(session.token, now=99.0) is session
    with pytest.raises(LoginRefused) as exc:
        s.resume(session.token, now=100.0)
    assert exc.value.reason is LoginRefusal.SESSION_EXPIRED
    with pytest.raises(LoginRefused) as exc:
        s.resume(session.token, now=100.0)  # gone now: never valid again
    assert exc.value.reason is LoginRefusal.SESSION_UNKNOWN


@pytest.mark.parametrize(
    ("user", "password"), [("alice", "wrong"), ("bob", "pw-a"), ("nobody", ""), ("alice", "pw-a "), ("carol", "x")]
)
def test_bad_credentials_are_one_reason(user: str, password: str) -> None:
    s = Sessions({"alice": "pw-a", "carol": ""}, ttl_s=100.0)
    with pytest.raises(LoginRefused) as exc:
        s.login(user, password, "127.0.0.1", now=0.0)
    assert exc.value.reason is LoginRefusal.BAD_CREDENTIALS
    assert s.refused == {"bad-credentials": 1} and len(s) == 0


def test_guessing_is_throttled_per_source_for_a_window() -> None:
    s = Sessions({"alice": "pw-a"}, ttl_s=100.0)
    for _ in range(MAX_FAILURES):
        with pytest.raises(LoginRefused):
            s.login("alice", "guess", "10.0.0.9", now=1.0)
    with pytest.raises(LoginRefused) as exc:
        s.login("alice", "pw-a", "10.0.0.9", now=2.0)  # even the right password waits
    assert exc.value.reason is LoginRefusal.TOO_MANY_ATTEMPTS
    assert s.login("alice", "pw-a", "10.0.0.8", now=2.0).user == "alice"  # another source is not blocked
    assert s.login("alice", "pw-a", "10.0.0.9", now=1.0 + FAILURE_WINDOW_S).user == "alice"


def test_logout_and_expire() -> None:
    s = Sessions({"alice": "pw-a", "bob": "pw-b"}, ttl_s=10.0)
    a = s.login("alice", "pw-a", "x", now=0.0)
    b = s.login("bob", "pw-b", "x", now=5.0)
    s.logout(a.token)
    with pytest.raises(LoginRefused):
        s.resume(a.token, now=1.0)
    assert s.expire(now=14.0) == [] and [x.user for x in s.expire(now=15.0)] == ["bob"] and len(s) == 0
    assert b.expired(15.0)


@pytest.mark.parametrize(
    ("frame", "want"),
    [
        ('{"type":"login","user":"alice","password":"p"}', Login("alice", "p")),
        ('{"type":"resume","token":"t"}', Resume("t")),
        ('{"type":"logout"}', Logout()),
        ('{"type":"dial","to":"201","sdp":"v=0 x"}', Dial("201", "v=0 x")),
        ('{"type":"answer","sdp":"v=0 y"}', Answer("v=0 y")),
        ('{"type":"hangup"}', CallCommand.HANGUP),
        ('{"type":"sas-matches"}', CallCommand.SAS_MATCHES),
        ('{"type":"sas-mismatch"}', CallCommand.SAS_MISMATCH),
    ],
)
def test_parse_accepts_each_message(frame: str, want: object) -> None:
    assert parse(frame) == want


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("{", ErrorReason.BAD_JSON),
        (b'{"type":"logout"}', ErrorReason.BAD_JSON),
        ("[" * 100_000, ErrorReason.BAD_JSON),
        ("[1]", ErrorReason.NOT_AN_OBJECT),
        ('{"type":"shell"}', ErrorReason.UNKNOWN_TYPE),
        ("{}", ErrorReason.UNKNOWN_TYPE),
        ('{"type":"login","user":"alice"}', ErrorReason.BAD_FIELD),
        ('{"type":"login","user":"alice","password":7}', ErrorReason.BAD_FIELD),
        ('{"type":"dial","to":"","sdp":"v=0"}', ErrorReason.BAD_FIELD),
        ('{"type":"dial","to":"201"}', ErrorReason.BAD_FIELD),
        ('{"type":"answer"}', ErrorReason.BAD_FIELD),
        ('{"type":"dial","to":"201","sdp":"hello"}', ErrorReason.BAD_FIELD),
        ('{"type":"dial","sdp":"v=0","to":"' + "9" * 300 + '"}', ErrorReason.BAD_FIELD),
    ],
)
def test_parse_refuses_with_the_reason(frame: str | bytes, reason: ErrorReason) -> None:
    with pytest.raises(BadMessage) as exc:
        parse(frame)
    assert exc.value.reason is reason
