"""The inside zone's own SIP-over-TLS listener (``SipStack(inside_tls=...)``), driven from raw TLS client sockets:
a REGISTER on it reaches the registrar (401 without credentials), the same REGISTER on the outside TLS listener is
refused 403; an INVITE on it is an inside call answered on the phone's connection with an inside TLS Contact, its
dialog's BYE on the outside listener gets 481; a call the stack places in the inside zone to the phone's address
reuses the phone's own connection."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

from tests.support.pki import make_pki
from tests.support.sip_tls_client import TlsSipClient, header, sdp
from tests.testbed.sip_peer import running_stack
from voipgw.sip import Registrar, TlsOptions, Zone

WAIT_S = 5.0


def test_the_inside_tls_listener_is_the_inside_zone(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_inside_tls(tmp_path), 60.0))


async def _inside_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    cert, key = pki.kamailio  # a certificate for 127.0.0.1 signed by the test CA
    tls = TlsOptions(ca_file=str(pki.ca), cert_file=str(cert), key_file=str(key))
    registrar = Registrar({"alice": "pw"}, auth=True)
    async with running_stack(registrar=registrar, inside=("127.0.0.1", 0), tls=tls, inside_tls=tls) as stack:
        inside, outside = stack.inside_tls_port, stack.tls_port
        assert inside is not None and outside is not None and inside != outside
        phone = await asyncio.to_thread(TlsSipClient, inside, pki.ca)
        pbx = await asyncio.to_thread(TlsSipClient, outside, pki.ca)
        try:
            # REGISTER: the inside TLS listener is the registrar's (digest: 401), the outside one refuses it (403).
            await asyncio.to_thread(phone.request, "REGISTER", inside, secrets.token_hex(8), user="alice")
            challenged = await asyncio.to_thread(phone.final, "REGISTER")
            assert challenged.startswith("SIP/2.0 401 ") and "WWW-Authenticate" in challenged, challenged
            await asyncio.to_thread(pbx.request, "REGISTER", outside, secrets.token_hex(8), user="alice")
            refused = await asyncio.to_thread(pbx.final, "REGISTER")
            assert refused.startswith("SIP/2.0 403 ") and "outside listener" in header(refused, "warning"), refused
            assert stack.stats.refused.get("register_on_outside") == 1, stack.stats.refused

            # An INVITE on the inside TLS listener is an inside call over TLS, answered on the phone's connection
            # with a Contact naming the inside TLS listener.
            call_id = secrets.token_hex(8)
            await asyncio.to_thread(phone.request, "INVITE", inside, call_id)
            call = await asyncio.wait_for(stack.incoming.get(), WAIT_S)
            assert call.zone is Zone.INSIDE and call.transport == "tls", (call.zone, call.transport)
            call.answer(sdp(40000))
            ok = await asyncio.to_thread(phone.final, "INVITE")
            assert ok.startswith("SIP/2.0 200 "), ok
            assert f"127.0.0.1:{inside};transport=tls" in header(ok, "contact"), ok
            to_tag = header(ok, "to").rpartition("tag=")[2]
            await asyncio.to_thread(phone.request, "ACK", inside, call_id, 1, to_tag)

            # That dialog's BYE on the outside TLS listener (someone who learnt its tags): not this dialog's.
            await asyncio.to_thread(pbx.request, "BYE", outside, call_id, 2, to_tag)
            bye = await asyncio.to_thread(pbx.final, "BYE")
            assert bye.startswith("SIP/2.0 481 "), bye
            assert stack.stats.refused.get("cross_zone_in_dialog") == 1, stack.stats.refused
            assert not call.finished
            call.hangup()
            our_bye = await asyncio.to_thread(phone.final, "BYE")  # the gateway's BYE, on the phone's connection
            assert our_bye.startswith("BYE "), our_bye

            # A call placed in the inside zone to the phone's TLS address reuses the phone's open connection.
            out = await stack.place_call(
                f"sip:alice@127.0.0.1:{phone.port};transport=tls", "sip:gw@127.0.0.1", lambda _c: sdp(40002),
                zone=Zone.INSIDE, timeout_s=WAIT_S,
            )  # fmt: skip
            invite = await asyncio.to_thread(phone.final, "INVITE")
            assert invite.startswith("INVITE ") and header(invite, "call-id") == out.call_id, invite
            assert f"127.0.0.1:{inside};transport=tls" in header(invite, "contact"), invite
            assert header(invite, "via").startswith(f"SIP/2.0/TLS 127.0.0.1:{inside}"), invite
            out.hangup()
            stats = stack.inside_tls_stats
            assert stats is not None and stats.connected == 0, stats  # no connection of our own was opened
        finally:
            phone.close()
            pbx.close()


def test_a_tls_phone_re_registers_on_a_new_connection(tmp_path: Path) -> None:
    """The gateway closes an idle phone connection after 120 s: the phone's next REGISTER comes on a new one, from
    another port, and keeps its binding (a UDP phone's other port would be refused: another phone)."""
    asyncio.run(asyncio.wait_for(_reconnect(tmp_path), 60.0))


async def _reconnect(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    cert, key = pki.kamailio
    tls = TlsOptions(ca_file=str(pki.ca), cert_file=str(cert), key_file=str(key))
    registrar = Registrar({"alice": None})
    async with running_stack(registrar=registrar, inside=("127.0.0.1", 0), inside_tls=tls) as stack:
        port = stack.inside_tls_port
        assert port is not None and stack.tls_port is None  # no outside TLS asked for: none
        sources = []
        for _ in range(2):
            phone = await asyncio.to_thread(TlsSipClient, port, pki.ca)
            try:
                await asyncio.to_thread(phone.request, "REGISTER", port, secrets.token_hex(8), user="alice")
                granted = await asyncio.to_thread(phone.final, "REGISTER")
                assert granted.startswith("SIP/2.0 200 "), granted
                sources.append(("127.0.0.1", phone.port))
            finally:
                phone.close()
        binding = registrar.lookup("alice")
        assert binding is not None and binding.source == sources[1] != sources[0], (binding, sources)
        assert "transport=tls" in binding.contact_uri, binding
