"""The inside registrar: baresip registers to SipStack+Registrar (auth on and off), INVITEs are challenged, raw
malformed REGISTERs get the right 4xx, and the bookkeeping (expiry, removal, Contact: *) is exact."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.requires import requires
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from tests.testbed.sip_peer import SipPeer, running_stack
from voipgw.sip import IncomingCall, SipStack
from voipgw.sip.digest import digest_response
from voipgw.sip.registrar import Binding, ContactSpec, RegisterReply, RegisterRequest, Registrar

WAIT_S = 15.0
REPLY_WAIT = 2.0


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return speech.make_tone(tmp_path / "tone.wav", 8000, 20.0)


async def poll(predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


# --- raw REGISTERs ----------------------------------------------------------------------------------------


class RawPhone:
    """A loopback UDP socket speaking just enough REGISTER to probe the registrar byte by byte."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(REPLY_WAIT)
        self.lport = self.sock.getsockname()[1]
        self.call_id = secrets.token_hex(6)
        self.cseq = 0

    def close(self) -> None:
        self.sock.close()

    def options(self) -> str:
        msg = (
            f"OPTIONS sip:127.0.0.1:{self.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.lport};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
            f"From: <sip:alice@127.0.0.1>;tag=o1\r\nTo: <sip:127.0.0.1:{self.port}>\r\n"
            f"Call-ID: {secrets.token_hex(6)}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        self.sock.sendto(msg.encode(), ("127.0.0.1", self.port))
        return self.sock.recv(65535).decode()

    def register(
        self, contact: str | None = None, *, user: str = "alice", expires: str | None = None, extra: str = ""
    ) -> tuple[int, str]:
        self.cseq += 1
        contact_hf = f"Contact: {contact}\r\n" if contact is not None else ""
        expires_hf = f"Expires: {expires}\r\n" if expires is not None else ""
        msg = (
            f"REGISTER sip:127.0.0.1:{self.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.lport};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
            f"From: <sip:{user}@127.0.0.1>;tag=f{self.cseq}\r\nTo: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: {self.cseq} REGISTER\r\n{contact_hf}{expires_hf}{extra}"
            "User-Agent: rawphone\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        self.sock.sendto(msg.encode(), ("127.0.0.1", self.port))
        text = self.sock.recv(65535).decode()
        return int(text.split(" ", 2)[1]), text


def pcmu_sdp(port: int) -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )


def header_values(text: str, name: str) -> list[str]:
    out = []
    for line in text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        n, _, v = line.partition(":")
        if n.strip().lower() == name.lower():
            out.append(v.strip())
    return out


def test_raw_registers_bind_refresh_remove_and_get_the_right_4xx() -> None:
    registrar = Registrar({"alice": None, "bob": None}, min_expires=60, max_expires=600)

    async def main() -> None:
        async with running_stack(registrar=registrar) as stack:
            phone = RawPhone(stack.local_port)
            try:

                def reg(*a: object, **kw: object) -> tuple[int, str]:
                    return phone.register(*a, **kw)  # type: ignore[arg-type]

                code, text = await asyncio.to_thread(reg, "<sip:alice@127.0.0.1:7001>", expires="120")
                assert code == 200, text
                assert header_values(text, "Contact") == ["<sip:alice@127.0.0.1:7001>;expires=120"]
                b = registrar.lookup("alice")
                assert b is not None and b.contact_uri == "sip:alice@127.0.0.1:7001"
                assert b.source == ("127.0.0.1", phone.lport) and b.user_agent == "rawphone"
                # a second contact; too long an expiry is clamped to max_expires
                code, text = await asyncio.to_thread(reg, "<sip:alice@127.0.0.1:7002>;expires=99999")
                assert code == 200
                assert sorted(header_values(text, "Contact")) == [
                    "<sip:alice@127.0.0.1:7001>;expires=120",
                    "<sip:alice@127.0.0.1:7002>;expires=600",
                ]
                # a query (no Contact) lists the bindings and changes nothing
                code, text = await asyncio.to_thread(reg, None)
                assert code == 200 and len(header_values(text, "Contact")) == 2
                # 423 with Min-Expires for too short an interval, and the binding is untouched
                code, text = await asyncio.to_thread(reg, "<sip:alice@127.0.0.1:7001>;expires=5")
                assert code == 423 and header_values(text, "Min-Expires") == ["60"]
                assert len(registrar.bindings()) == 2
                # 403 for an unknown user
                code, _ = await asyncio.to_thread(reg, "<sip:mallory@127.0.0.1:7003>", user="mallory")
                assert code == 403
                # 400 for malformed Contact / Expires values, with a Warning saying why
                for contact, expires in [
                    ("<sip:alice@>", None),
                    ("<sip:alice@127.0.0.1:7001>;expires=soon", None),
                    ("<sip:alice@127.0.0.1:7001>", "-1"),
                    ("<sip:alice@127.0.0.1:7001>", "soon"),
                    ("<mailto:alice@example.org>", None),
                    ("*", None),  # Contact: * without Expires: 0
                    ("*, <sip:alice@127.0.0.1:7001>", "0"),
                ]:
                    code, text = await asyncio.to_thread(reg, contact, expires=expires)
                    assert code == 400, (contact, expires, text)
                    assert header_values(text, "Warning"), text
                assert len(registrar.bindings()) == 2
                # expires=0 removes one contact, Contact: * with Expires: 0 removes all
                code, text = await asyncio.to_thread(reg, "<sip:alice@127.0.0.1:7002>;expires=0")
                assert code == 200 and header_values(text, "Contact") == ["<sip:alice@127.0.0.1:7001>;expires=120"]
                code, text = await asyncio.to_thread(reg, "*", expires="0")
                assert code == 200 and header_values(text, "Contact") == [] and header_values(text, "Expires") == ["0"]
                assert registrar.lookup("alice") is None and registrar.bindings() == []
                assert stack.stats.register_malformed == 7
                # OPTIONS keep-alives from phones are answered 200
                assert (await asyncio.to_thread(phone.options)).startswith("SIP/2.0 200 ")
            finally:
                phone.close()

    asyncio.run(asyncio.wait_for(main(), 30.0))


def test_without_a_registrar_register_gets_405_and_options_200() -> None:
    async def main() -> None:
        async with running_stack() as stack:
            phone = RawPhone(stack.local_port)
            try:
                code, text = await asyncio.to_thread(phone.register, "<sip:alice@127.0.0.1:7001>")
                assert code == 405 and "INVITE" in header_values(text, "Allow")[0]
            finally:
                phone.close()

    asyncio.run(asyncio.wait_for(main(), 20.0))


def test_bindings_expire_on_the_registrar_clock() -> None:
    now = [1000.0]
    registrar = Registrar({"alice": None}, min_expires=60, clock=lambda: now[0])
    req = RegisterRequest(
        user="alice",
        contacts=(ContactSpec("sip:alice@127.0.0.1:7001", None),),
        wildcard=False,
        expires_header=90,
        authorization=(),
        source=("127.0.0.1", 7001),
        user_agent=None,
    )
    reply = registrar.handle_register(req)
    assert reply.code == 200 and reply.contacts == (("sip:alice@127.0.0.1:7001", 90),)
    assert registrar.lookup("alice") == Binding("alice", "sip:alice@127.0.0.1:7001", ("127.0.0.1", 7001), 1090.0, None)
    now[0] = 1089.9
    assert registrar.lookup("alice") is not None
    now[0] = 1090.0
    assert registrar.lookup("alice") is None and registrar.bindings() == []
    with pytest.raises(ValueError):
        Registrar({"alice": None}, auth=True)  # auth needs passwords
    assert "pw" not in repr(Registrar({"alice": "pw"}, auth=True))


def test_raw_register_digest_round_trip_wrong_password_and_replay() -> None:
    registrar = Registrar({"alice": "s3cret"}, realm="inside", auth=True, algorithms=("SHA-256", "MD5"))

    def authorization(challenge: str, password: str, nc: str, alg: str, port: int) -> str:
        fields = dict(p.strip().split("=", 1) for p in challenge[len("Digest ") :].split(","))
        nonce = fields["nonce"].strip('"')
        uri = f"sip:127.0.0.1:{port}"
        resp = digest_response(alg, "alice", "inside", password, "REGISTER", uri, nonce, nc, "abc", "auth")
        return (
            f'Authorization: Digest username="alice", realm="inside", nonce="{nonce}", uri="{uri}", '
            f'response="{resp}", algorithm={alg}, qop=auth, nc={nc}, cnonce="abc"\r\n'
        )

    async def main() -> None:
        async with running_stack(registrar=registrar) as stack:
            phone = RawPhone(stack.local_port)
            port = stack.local_port
            try:
                contact = "<sip:alice@127.0.0.1:7001>;expires=120"
                code, text = await asyncio.to_thread(phone.register, contact)
                assert code == 401
                challenges = header_values(text, "WWW-Authenticate")
                assert [c.split("algorithm=")[1].split(",")[0] for c in challenges] == ["SHA-256", "MD5"]
                # Both challenges carry one nonce, so the MD5 round continues its nonce count.
                for challenge, alg, nc in zip(challenges, ["SHA-256", "MD5"], [1, 3], strict=True):
                    auth = authorization(challenge, "wrong", f"{nc:08x}", alg, port)
                    code, _ = await asyncio.to_thread(phone.register, contact, extra=auth)
                    assert code == 403
                    if alg == "SHA-256":
                        assert registrar.lookup("alice") is None
                    auth = authorization(challenge, "s3cret", f"{nc:08x}", alg, port)
                    code, text = await asyncio.to_thread(phone.register, contact, extra=auth)
                    assert code == 200, text
                    # the same nonce count again is a replay: a stale challenge, not a success
                    code, text = await asyncio.to_thread(phone.register, contact, extra=auth)
                    assert code == 401 and "stale=true" in header_values(text, "WWW-Authenticate")[0]
                    # the next count on the same nonce is fine
                    auth = authorization(challenge, "s3cret", f"{nc + 1:08x}", alg, port)
                    code, _ = await asyncio.to_thread(phone.register, contact, extra=auth)
                    assert code == 200
                # credentials for alice cannot register bob's AOR
                registrar_b = registrar  # same registrar, other user: unknown -> 403 before any digest
                code, _ = await asyncio.to_thread(phone.register, contact, user="bob")
                assert code == 403 and registrar_b.lookup("bob") is None
            finally:
                phone.close()

    asyncio.run(asyncio.wait_for(main(), 30.0))


# --- baresip ----------------------------------------------------------------------------------------------


@pytest.mark.interop
@requires("baresip")
@pytest.mark.integration
@pytest.mark.parametrize("auth", [False, True], ids=["open", "digest"])
def test_baresip_registers_binding_appears_and_unregister_removes_it(tmp_path: Path, clip: Path, auth: bool) -> None:
    registrar = Registrar({"alice": "alicepw" if auth else None}, auth=auth, min_expires=60)

    async def main() -> None:
        async with running_stack(registrar=registrar) as stack:
            phone = Baresip(
                tmp_path,
                user="alice",
                play=clip,
                registrar=f"127.0.0.1:{stack.local_port}",
                password="alicepw" if auth else None,
                regint=120,
            )
            await asyncio.to_thread(phone.start)
            try:
                await asyncio.to_thread(phone.wait_registered, WAIT_S)
                b = registrar.lookup("alice")
                assert b is not None
                # baresip's Contact user is "alice-0x<pointer>"; its host:port is where it listens
                assert b.contact_uri.startswith("sip:alice")
                assert f"@127.0.0.1:{phone.sip_port}" in b.contact_uri
                assert b.source == ("127.0.0.1", phone.sip_port)
                assert b.user_agent is not None and "baresip" in b.user_agent.lower()
                assert stack.stats.register_ok >= 1
                if auth:
                    assert stack.stats.auth_challenged >= 1
            finally:
                await asyncio.to_thread(phone.stop)  # baresip un-REGISTERs on exit
            await poll(lambda: registrar.lookup("alice") is None)

    asyncio.run(asyncio.wait_for(main(), 40.0))


@pytest.mark.interop
@requires("baresip")
@pytest.mark.integration
def test_baresip_with_a_wrong_password_is_refused(tmp_path: Path, clip: Path) -> None:
    registrar = Registrar({"alice": "alicepw"}, auth=True)

    async def main() -> None:
        async with running_stack(registrar=registrar) as stack:
            with Baresip(
                tmp_path, user="alice", play=clip, registrar=f"127.0.0.1:{stack.local_port}", password="nope"
            ) as phone:
                await asyncio.to_thread(phone.wait_reg_state, "ERR", WAIT_S)
                assert registrar.lookup("alice") is None
                assert stack.stats.auth_refused >= 1

    asyncio.run(asyncio.wait_for(main(), 40.0))


@pytest.mark.interop
@requires("baresip")
@pytest.mark.integration
def test_baresip_invite_is_challenged_then_accepted_with_its_user(tmp_path: Path, clip: Path) -> None:
    registrar = Registrar({"alice": "alicepw"}, auth=True)
    asked: list[tuple[tuple[str, int], str]] = []

    def must_auth(source: tuple[str, int], from_user: str) -> bool:
        asked.append((source, from_user))
        return True

    async def main() -> None:
        async with running_stack(registrar=registrar) as stack:
            stack.authenticate_invites(must_auth)
            with Baresip(
                tmp_path, user="alice", play=clip, registrar=f"127.0.0.1:{stack.local_port}", password="alicepw"
            ) as phone:
                await asyncio.to_thread(phone.wait_registered, WAIT_S)
                challenged_before = stack.stats.auth_challenged
                await asyncio.to_thread(phone.dial, f"sip:bob@127.0.0.1:{stack.local_port}")
                call = await asyncio.wait_for(stack.incoming.get(), WAIT_S)
                assert isinstance(call, IncomingCall)
                assert call.authenticated_user == "alice"
                assert call.from_aor.startswith("sip:alice@")
                # exactly one INVITE was challenged and none reached the application before this one
                assert stack.stats.auth_challenged == challenged_before + 1
                assert stack.incoming.empty()
                assert [u for _, u in asked] == ["alice", "alice"]
                call.answer(pcmu_sdp(phone.rtp_range[0] + 40))
                await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", timeout=WAIT_S)
                call.hangup()
                await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", timeout=WAIT_S)
                assert stack.active_calls == 0

    asyncio.run(asyncio.wait_for(main(), 40.0))


def test_authenticate_invites_needs_an_auth_registrar() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError):
            SipStack("127.0.0.1", 0, loop).authenticate_invites(lambda s, u: True)
        with pytest.raises(ValueError):
            SipStack("127.0.0.1", 0, loop, registrar=Registrar({"a": None})).authenticate_invites(lambda s, u: True)
    finally:
        loop.close()


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
def test_a_to_uri_sippy_cannot_read_gets_400_not_silence(method: str) -> None:
    """sippy parses To lazily, outside its error handling: a tel: To used to leave the sender unanswered."""
    registrar = Registrar({"alice": None})

    async def main() -> None:
        async with running_stack(registrar=registrar) as stack:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                s.settimeout(REPLY_WAIT)
                lport = s.getsockname()[1]
                msg = (
                    f"{method} sip:alice@127.0.0.1:{stack.local_port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
                    f"From: <sip:alice@127.0.0.1>;tag=t1\r\nTo: <tel:+14155550100>\r\n"
                    f"Call-ID: {secrets.token_hex(6)}\r\nCSeq: 1 {method}\r\nContact: <sip:alice@127.0.0.1:{lport}>\r\n"
                    "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                )
                s.sendto(msg.encode(), ("127.0.0.1", stack.local_port))
                reply = await asyncio.to_thread(s.recv, 65535)
                assert reply.startswith(b"SIP/2.0 400 "), reply
                assert stack.stats.replied_400 == 1 and registrar.bindings() == []

    asyncio.run(asyncio.wait_for(main(), 20.0))


def test_a_failing_registrar_answers_500_and_the_stack_keeps_serving() -> None:
    class Broken(Registrar):
        def handle_register(self, req: RegisterRequest) -> RegisterReply:
            raise RuntimeError("disk full")

    async def main() -> None:
        async with running_stack(registrar=Broken({"alice": None})) as stack:
            phone = RawPhone(stack.local_port)
            try:
                code, _ = await asyncio.to_thread(phone.register, "<sip:alice@127.0.0.1:7001>")
                assert code == 500 and stack.stats.sippy_errors == 1
                assert (await asyncio.to_thread(phone.options)).startswith("SIP/2.0 200 ")
            finally:
                phone.close()

    asyncio.run(asyncio.wait_for(main(), 20.0))


@pytest.mark.integration
def test_a_sipstack_registers_to_a_sipstack_registrar_sha256_and_follows_423() -> None:
    """Our REGISTER client against our registrar (two processes): SHA-256 digest, and a 423 is followed."""
    registrar = Registrar({"alice": "pw"}, auth=True, min_expires=120, algorithms=("SHA-256", "MD5"))

    async def main() -> None:
        async with running_stack(registrar=registrar) as stack:
            with SipPeer() as peer:
                peer.send(
                    op="register", registrar=["127.0.0.1", stack.local_port], aor="sip:alice@127.0.0.1",
                    username="alice", password="pw", expires=60,
                )  # fmt: skip
                state = (await peer.aexpect("registered", WAIT_S))["state"]
                assert state["registered"] and state["code"] == 200 and state["granted_expires"] == 120
                b = registrar.lookup("alice")
                assert b is not None and b.contact_uri == f"sip:alice@127.0.0.1:{peer.port}"
                assert b.user_agent == "voipgw-peer"
                peer.send(
                    op="register", registrar=["127.0.0.1", stack.local_port], aor="sip:alice@127.0.0.1",
                    username="alice", password="bad", expires=300,
                )  # fmt: skip
                with pytest.raises(RuntimeError, match=r"RegistrationFailed.*403"):
                    await peer.aexpect("registered", WAIT_S)

    asyncio.run(asyncio.wait_for(main(), 40.0))


def test_a_reordered_register_cannot_undo_a_later_one() -> None:
    registrar = Registrar({"alice": None}, min_expires=60)

    def req(cseq: int, expires: int, call_id: str = "c1", wildcard: bool = False) -> RegisterRequest:
        contacts = () if wildcard else (ContactSpec("sip:alice@127.0.0.1:7001", expires),)
        return RegisterRequest(
            user="alice", contacts=contacts, wildcard=wildcard, expires_header=0 if wildcard else None,
            authorization=(), source=("127.0.0.1", 7001), user_agent=None, call_id=call_id, cseq=cseq,
        )  # fmt: skip

    assert registrar.handle_register(req(5, 120)).code == 200
    assert registrar.handle_register(req(6, 0)).code == 200  # the phone unregisters ...
    late = registrar.handle_register(req(4, 120))  # ... and an older refresh arrives late
    assert late.code == 500 and registrar.lookup("alice") is None
    assert registrar.handle_register(req(6, 120)).code == 500  # same CSeq: also not newer
    assert registrar.handle_register(req(7, 120)).code == 200 and registrar.lookup("alice") is not None
    assert registrar.handle_register(req(8, 0, wildcard=True)).code == 200
    assert registrar.handle_register(req(7, 120)).code == 500 and registrar.lookup("alice") is None
    # another Call-ID (a restarted phone) starts its own sequence
    assert registrar.handle_register(req(1, 120, call_id="c2")).code == 200
    assert registrar.lookup("alice") is not None


_uris = st.sampled_from(["sip:alice@127.0.0.1:7001", "sip:alice@127.0.0.1:7002", "sip:x@h"])
_secs = st.one_of(st.none(), st.integers(min_value=-5, max_value=10**7))
_requests = st.builds(
    RegisterRequest,
    user=st.sampled_from(["alice", "bob", "", "mallory"]),
    contacts=st.lists(st.builds(ContactSpec, _uris, _secs), max_size=4).map(tuple),
    wildcard=st.booleans(),
    expires_header=_secs,
    authorization=st.lists(st.text(max_size=40), max_size=2).map(tuple),
    source=st.just(("127.0.0.1", 7001)),
    user_agent=st.none(),
    call_id=st.sampled_from(["", "c1", "c2"]),
    cseq=st.integers(min_value=0, max_value=5),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_requests, min_size=1, max_size=8), st.booleans())
def test_registrar_answers_any_register_sequence_with_a_known_code(reqs: list[RegisterRequest], auth: bool) -> None:
    now = [100.0]
    registrar = Registrar(
        {"alice": "pw", "bob": "pw2"}, auth=auth, min_expires=60, max_expires=600, clock=lambda: now[0]
    )
    for r in reqs:
        reply = registrar.handle_register(r)
        assert reply.code in ({200, 400, 403, 423, 500} | ({401} if auth else set()))
        assert all(0 < secs <= 600 for _, secs in reply.contacts)
        if auth:
            assert reply.code != 200  # no request here carries valid credentials
        now[0] += 7
    assert all(b.user in ("alice", "bob") for b in registrar.bindings())
    assert len(registrar.bindings()) <= 2 * 3


def _reg(source: tuple[str, int], expires: int = 90, user: str = "alice") -> RegisterRequest:
    return RegisterRequest(
        user=user,
        contacts=(ContactSpec(f"sip:{user}@{source[0]}:{source[1]}", None),),
        wildcard=False,
        expires_header=expires,
        authorization=(),
        source=source,
        user_agent=None,
    )


PHONE = ("192.168.1.20", 5060)
ELSEWHERE = ("127.0.0.66", 5060)


@pytest.mark.parametrize(
    ("second", "after_s", "code", "refusal"),
    [
        (_reg(PHONE), 10.0, 200, None),  # the phone's own refresh
        (_reg(PHONE, expires=0), 10.0, 200, None),  # the phone's own unregister
        (_reg(ELSEWHERE), 10.0, 403, "binding_other_source"),  # another source while the binding lives
        (_reg(ELSEWHERE, expires=0), 10.0, 403, "binding_other_source"),  # nor may it remove the binding
        (_reg(("192.168.1.20", 5062)), 10.0, 403, "binding_other_source"),  # same host, another port
        (_reg(ELSEWHERE), 90.0, 200, None),  # the binding lapsed: a phone that moved registers again
        (_reg(ELSEWHERE, user="bob"), 10.0, 200, None),  # another user is not concerned
    ],
)
def test_a_binding_from_another_source_never_silently_replaces_a_live_one(
    second: RegisterRequest, after_s: float, code: int, refusal: str | None
) -> None:
    now = [1000.0]
    registrar = Registrar({"alice": None, "bob": None}, min_expires=60, clock=lambda: now[0])
    assert registrar.handle_register(_reg(PHONE)).code == 200
    now[0] += after_s
    reply = registrar.handle_register(second)
    assert (reply.code, reply.refusal) == (code, refusal)
    if refusal is not None:
        assert any(name == "Warning" and "another address" in value for name, value in reply.headers), reply
        binding = registrar.lookup("alice")
        assert binding is not None and binding.source == PHONE


def _tls_reg(source: tuple[str, int], stream: bool = True) -> RegisterRequest:
    tls = ContactSpec("sip:alice@192.168.1.20:5061;transport=tls", None)
    return dataclasses.replace(_reg(source), contacts=(tls,), stream=stream)


@pytest.mark.parametrize(
    ("first", "second", "code"),
    [
        # A TLS phone's next connection (after an idle close) has another port: the same phone, its binding follows.
        (_tls_reg(PHONE), _tls_reg(("192.168.1.20", 40001)), 200),
        (_tls_reg(PHONE), _tls_reg(ELSEWHERE), 403),  # another host, over TLS too
        (_tls_reg(PHONE), _tls_reg(("192.168.1.20", 40001), stream=False), 403),  # that host's other UDP port
        (_tls_reg(PHONE, stream=False), _tls_reg(("192.168.1.20", 40001)), 403),  # a UDP binding is its port's
    ],
)
def test_a_tls_phone_keeps_its_binding_across_connections(
    first: RegisterRequest, second: RegisterRequest, code: int
) -> None:
    now = [1000.0]
    registrar = Registrar({"alice": None}, min_expires=60, clock=lambda: now[0])
    assert registrar.handle_register(first).code == 200
    now[0] += 10.0
    reply = registrar.handle_register(second)
    assert reply.code == code, reply
    binding = registrar.lookup("alice")
    assert binding is not None and binding.source == (second.source if code == 200 else first.source), binding


def test_with_auth_a_wrong_password_is_refused_before_the_binding_rule() -> None:
    registrar = Registrar({"alice": "pw"}, auth=True)
    reply = registrar.handle_register(_reg(ELSEWHERE))
    assert reply.code == 401 and reply.refusal is None  # a challenge is not a refusal
