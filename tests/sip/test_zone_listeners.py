"""One SipStack, two listeners (the gateway's inside and outside zones), driven byte by byte from raw loopback
sockets: each INVITE says which listener it arrived on, a dialog's requests leave from and are accepted on its own
listener only, and REGISTER is answered on the inside one only."""

from __future__ import annotations

import asyncio
import secrets
import socket

from tests.testbed.sip_peer import running_stack
from voipgw.sip import Ended, Registrar, SipStack, Zone

WAIT_S = 5.0
ATTACKER = "127.0.0.66"


def sdp(port: int) -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )


class Raw:
    """A UDP socket speaking just enough SIP by hand."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(WAIT_S)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def send(self, port: int, text: str) -> None:
        self.sock.sendto(text.encode(), ("127.0.0.1", port))

    async def final(self, cseq_method: str, call_id: str = "") -> tuple[str, tuple[str, int]]:
        """The next final response (or request) for ``cseq_method`` (of ``call_id``), with where it came from."""
        while True:
            data, addr = await asyncio.to_thread(self.sock.recvfrom, 65535)
            text = data.decode()
            first = text.split("\r\n", 1)[0]
            if f" {cseq_method}\r\n" not in text.split("\r\n\r\n", 1)[0] + "\r\n":
                continue
            if call_id and header(text, "call-id") != call_id:
                continue
            if first.startswith("SIP/2.0 1"):
                continue
            return text, addr

    def request(self, method: str, port: int, call_id: str, from_tag: str, to_tag: str = "", cseq: int = 1) -> str:
        body = sdp(self.port + 2) if method == "INVITE" else ""
        to = f"<sip:bob@127.0.0.1:{port}>" + (f";tag={to_tag}" if to_tag else "")
        text = (
            f"{method} sip:bob@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
            f"From: <sip:alice@{self.host}:{self.port}>;tag={from_tag}\r\nTo: {to}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:alice@{self.host}:{self.port}>\r\n"
            "Max-Forwards: 70\r\n"
            + ("Content-Type: application/sdp\r\n" if body else "")
            + f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        self.send(port, text)
        return text


def header(text: str, name: str) -> str:
    for line in text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        n, _, v = line.partition(":")
        if n.strip().lower() == name:
            return v.strip()
    raise AssertionError(f"no {name} in {text}")


def test_two_listeners_keep_their_dialogs_apart() -> None:
    asyncio.run(asyncio.wait_for(_two_listeners(), 60.0))


async def _two_listeners() -> None:
    registrar = Registrar({"alice": None})
    phone, attacker = Raw(), Raw(ATTACKER)
    try:
        async with running_stack(registrar=registrar, inside=("127.0.0.1", 0)) as stack:
            assert isinstance(stack, SipStack)
            inside, outside = stack.inside_port, stack.local_port
            assert inside is not None and inside != outside

            # An INVITE on the inside listener is an inside call, answered from there with an inside Contact.
            call_id = secrets.token_hex(8)
            phone.request("INVITE", inside, call_id, "ph1")
            call = await asyncio.wait_for(stack.incoming.get(), WAIT_S)
            assert call.zone is Zone.INSIDE and call.source_addr == ("127.0.0.1", phone.port)
            call.answer(sdp(40000))
            ok, came_from = await phone.final("INVITE")
            assert ok.startswith("SIP/2.0 200 ") and came_from[1] == inside, (ok, came_from)
            assert f"127.0.0.1:{inside}" in header(ok, "contact"), ok
            to_tag = header(ok, "to").rpartition("tag=")[2]
            phone.request("ACK", inside, call_id, "ph1", to_tag)

            # The same dialog's BYE on the outside listener (an attacker who learnt its tags): not this dialog's.
            attacker.request("BYE", outside, call_id, "ph1", to_tag, cseq=2)
            refused, _ = await attacker.final("BYE")
            assert refused.startswith("SIP/2.0 481 "), refused
            assert stack.stats.refused.get("cross_zone_in_dialog") == 1, stack.stats.refused
            assert not call.finished

            # The phone's BYE on its own listener ends it.
            phone.request("BYE", inside, call_id, "ph1", to_tag, cseq=2)
            bye_ok, _ = await phone.final("BYE")
            assert bye_ok.startswith("SIP/2.0 200 "), bye_ok
            while not isinstance(await asyncio.wait_for(call.next_event(), WAIT_S), Ended):
                pass

            # An INVITE on the outside listener is an outside call, even from the phone's own address.
            phone.request("INVITE", outside, secrets.token_hex(8), "ph2")
            call2 = await asyncio.wait_for(stack.incoming.get(), WAIT_S)
            assert call2.zone is Zone.OUTSIDE
            call2.reject(486, "Busy Here")
            busy, came_from = await phone.final("INVITE")
            assert busy.startswith("SIP/2.0 486 ") and came_from[1] == outside, busy

            # REGISTER: the outside listener refuses it (with the reason), the inside one registers.
            reg = (
                "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bK{b}\r\n"
                "From: <sip:alice@127.0.0.1>;tag=r1\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: {cid}\r\n"
                "CSeq: {n} REGISTER\r\nContact: <sip:alice@127.0.0.1:{lp}>\r\nExpires: 120\r\nContent-Length: 0\r\n\r\n"
            )
            cid = secrets.token_hex(6)
            phone.send(outside, reg.format(port=outside, lp=phone.port, b=secrets.token_hex(6), cid=cid, n=1))
            refused, _ = await phone.final("REGISTER")
            assert refused.startswith("SIP/2.0 403 ") and "outside listener" in header(refused, "warning"), refused
            assert registrar.lookup("alice") is None
            phone.send(inside, reg.format(port=inside, lp=phone.port, b=secrets.token_hex(6), cid=cid, n=2))
            granted, _ = await phone.final("REGISTER")
            assert granted.startswith("SIP/2.0 200 "), granted
            assert stack.stats.refused.get("register_on_outside") == 1, stack.stats.refused

            # Calls placed from each zone leave from that zone's socket, with that zone's Contact.
            for zone, port in ((Zone.INSIDE, inside), (Zone.OUTSIDE, outside)):
                out = await stack.place_call(
                    f"sip:alice@127.0.0.1:{phone.port}",
                    "sip:gw@127.0.0.1",
                    lambda _call_id: sdp(40002),
                    zone=zone,
                    timeout_s=WAIT_S,
                )
                invite, came_from = await phone.final("INVITE", out.call_id)
                assert invite.startswith("INVITE ") and came_from == ("127.0.0.1", port), (zone, came_from)
                assert f"127.0.0.1:{port}" in header(invite, "contact"), invite
                out.hangup()
        for port in (inside, outside):  # stop() closed both listeners
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", port))
    finally:
        phone.close()
        attacker.close()
