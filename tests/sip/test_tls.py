"""SIP over TLS against a real Kamailio (kamailio-tls-modules) with a CA made by the test: registration and a
mixed-transport call (TLS to the proxy, UDP to the callee), a pinned certificate, and clear refusals."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.pki import Pki, make_pki
from tests.support.requires import requires
from tests.testbed.kamailio import Kamailio
from tests.testbed.sip_peer import SipPeer, running_stack, sdp
from voipgw.sip import Answered, Ended, Failed, RegistrationFailed, TlsOptions

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio")]

EVENT_TIMEOUT = 10.0


def sha256_of(cert_pem: Path) -> str:
    der = x509.load_pem_x509_certificate(cert_pem.read_bytes()).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
def udp_peer() -> Iterator[SipPeer]:
    with SipPeer() as p:
        yield p


def test_register_and_call_over_tls_to_kamailio_which_relays_over_udp(
    tmp_path: Path, pki: Pki, udp_peer: SipPeer
) -> None:
    answer = sdp(5002, "a=answer-side\r\n")
    udp_peer.set_mode(incoming="answer", answer_sdp=answer)
    opts = TlsOptions(ca_file=str(pki.ca), cert_file=str(pki.phone[0]), key_file=str(pki.phone[1]))

    async def main(k: Kamailio) -> None:
        udp_peer.send(op="register", registrar=list(k.addr), aor="sip:bob@127.0.0.1")
        await udp_peer.aexpect("registered")
        async with running_stack(tls=opts) as stack:
            tls_hop = ("127.0.0.1", k.tls_port)
            reg = await stack.register(tls_hop, "sip:alice@127.0.0.1", transport="tls")
            assert reg.state is not None and reg.state.registered
            call = await stack.place_call(
                f"sip:bob@127.0.0.1:{k.port}",
                "sip:alice@127.0.0.1",
                lambda _: sdp(4002),
                proxy=tls_hop,
                transport="tls",
            )
            ev = None
            while not isinstance(ev, Answered):
                ev = await call.next_event(EVENT_TIMEOUT)
                assert not isinstance(ev, Failed | Ended), ev
            assert ev.remote_sdp == answer
            inc = await udp_peer.aexpect("incoming")
            assert inc["remote_sdp"] == sdp(4002)
            # The callee hangs up: Kamailio brings the BYE to our TLS listener (Contact ;transport=tls).
            udp_peer.send(op="hangup")
            ended = await call.next_event(EVENT_TIMEOUT)
            assert isinstance(ended, Ended) and ended.by_remote, ended
            stats = stack.tls_stats
            assert stats is not None and stats.connected >= 1 and stats.accepted >= 1, stats
            assert stack.stats.datagrams_in == stats.messages_in  # all of it over TLS, nothing over UDP
            await reg.unregister()

    with Kamailio(tmp_path, tls_cert=pki.kamailio) as k:
        asyncio.run(asyncio.wait_for(main(k), 60.0))


def test_pinned_certificate_is_accepted_and_a_wrong_pin_or_an_unknown_ca_refused_with_the_reason(
    tmp_path: Path, pki: Pki
) -> None:
    right = TlsOptions(pinned_sha256=sha256_of(pki.kamailio[0]))
    wrong = TlsOptions(pinned_sha256=sha256_of(pki.phone[0]))
    (tmp_path / "other").mkdir()
    other_ca = TlsOptions(ca_file=str(make_pki(tmp_path / "other", "another CA").ca))

    async def register(k: Kamailio, opts: TlsOptions) -> None:
        async with running_stack(tls=opts) as stack:
            await stack.register(("127.0.0.1", k.tls_port), "sip:alice@127.0.0.1", transport="tls")

    with Kamailio(tmp_path, tls_cert=pki.kamailio) as k:
        asyncio.run(asyncio.wait_for(register(k, right), 30.0))
        with pytest.raises(RegistrationFailed) as err:
            asyncio.run(asyncio.wait_for(register(k, wrong), 30.0))
        with pytest.raises(RegistrationFailed) as untrusted:
            asyncio.run(asyncio.wait_for(register(k, other_ca), 30.0))
    assert err.value.code == 503
    assert "TLS certificate rejected: its SHA-256 fingerprint is not the pinned one" in str(err.value)
    assert untrusted.value.code == 503
    assert "TLS certificate rejected: unable to get local issuer certificate" in str(untrusted.value)


def test_certificate_for_another_name_is_refused_with_the_reason(tmp_path: Path, pki: Pki) -> None:
    async def call(k: Kamailio, opts: TlsOptions) -> Failed:
        async with running_stack(tls=opts) as stack:
            placed = await stack.place_call(
                "sip:bob@127.0.0.1", "sip:alice@127.0.0.1", lambda _: sdp(4002),
                proxy=("127.0.0.1", k.tls_port), transport="tls",
            )  # fmt: skip
            ev = await placed.next_event(EVENT_TIMEOUT)
            assert isinstance(ev, Failed), ev
            return ev

    with Kamailio(tmp_path, tls_cert=pki.wrong_name) as k:
        mismatch = asyncio.run(asyncio.wait_for(call(k, TlsOptions(ca_file=str(pki.ca))), 30.0))
    assert mismatch.code == 503, mismatch
    assert "TLS certificate rejected: IP address mismatch, certificate is not valid for '127.0.0.1'" in mismatch.reason


def test_sips_uri_means_tls_and_needs_it_enabled() -> None:
    async def main() -> None:
        async with running_stack() as stack:
            with pytest.raises(Exception, match="SIP over TLS is not enabled"):
                await stack.place_call("sips:bob@127.0.0.1:5061", "sip:alice@127.0.0.1", lambda _: "")

    asyncio.run(asyncio.wait_for(main(), 20.0))


def test_unusable_tls_settings_fail_with_one_clear_line(tmp_path: Path, pki: Pki) -> None:
    from voipgw.sip import TlsConfigError
    from voipgw.sip.tls import client_context, server_context

    with pytest.raises(TlsConfigError, match="32 bytes"):
        client_context(TlsOptions(pinned_sha256="abcd"))
    with pytest.raises(TlsConfigError, match="not a hex"):
        client_context(TlsOptions(pinned_sha256="zz" * 32))
    with pytest.raises(TlsConfigError, match="cannot load the CA bundle"):
        client_context(TlsOptions(ca_file=str(tmp_path / "missing.pem")))
    with pytest.raises(TlsConfigError, match="cannot load the TLS certificate"):
        server_context(TlsOptions(cert_file=str(pki.phone[0]), key_file=str(pki.kamailio[1])))
    with pytest.raises(TlsConfigError, match="verify_clients needs ca_file"):
        server_context(TlsOptions(cert_file=str(pki.phone[0]), key_file=str(pki.phone[1]), verify_clients=True))
    ctx = server_context(TlsOptions(cert_file=str(pki.phone[0]), key_file=str(pki.phone[1])))
    assert ctx is not None and ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    pinned = client_context(TlsOptions(pinned_sha256=":".join(["ab"] * 32)))
    assert pinned.verify_mode is ssl.CERT_NONE  # the pin is checked after the handshake instead
