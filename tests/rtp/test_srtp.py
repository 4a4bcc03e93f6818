"""SRTP through libsrtp (voipgw.rtp.srtp) and the endpoint that uses it on the inside leg: what authenticates is
delivered, a forged, replayed or foreign-key packet is refused and counted by reason, and a packet from another
address than the phone's is dropped before anything else (real UDP sockets on loopback)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable

import pytest

from voipgw.rtp.endpoint import RtpEndpoint
from voipgw.rtp.packet import RtpPacket, build_rtp
from voipgw.rtp.source import SourceRule
from voipgw.rtp.srtp import SrtpAuthFailed, SrtpContext, SrtpKeys, SrtpMalformed, SrtpReplay

A, B = os.urandom(30), os.urandom(30)


def _pair() -> tuple[SrtpContext, SrtpContext]:
    return SrtpContext(SrtpKeys(local=A, remote=B)), SrtpContext(SrtpKeys(local=B, remote=A))


def test_protect_unprotect_and_refusals() -> None:
    alice, bob = _pair()
    clear = build_rtp(0, 1, 160, 0x1234, b"\xff" * 160)
    sealed = alice.protect(clear)
    assert sealed[12:172] != clear[12:]  # the payload is encrypted
    assert bob.unprotect(sealed) == clear
    with pytest.raises(SrtpReplay):
        bob.unprotect(sealed)
    forged = bytearray(alice.protect(build_rtp(0, 2, 320, 0x1234, b"\xff" * 160)))
    forged[20] ^= 1
    with pytest.raises(SrtpAuthFailed):
        bob.unprotect(bytes(forged))
    with pytest.raises(SrtpAuthFailed):  # the attacker's own key
        bob.unprotect(SrtpContext(SrtpKeys(local=os.urandom(30), remote=A)).protect(build_rtp(0, 9, 9, 0x1234, b"x")))
    with pytest.raises(SrtpAuthFailed):  # plain RTP where SRTP is expected
        bob.unprotect(build_rtp(0, 3, 480, 0x1234, b"\xff" * 170))
    with pytest.raises(SrtpMalformed):
        bob.unprotect(b"\x80\x00\x00")
    assert bob.unprotect_rtcp(alice.protect_rtcp(b"\x80\xc9\x00\x01" + b"\x00\x00\x12\x34"))[:4] == b"\x80\xc9\x00\x01"
    assert A.hex() not in repr(alice)


def test_keys_repr_hides_material() -> None:
    keys = SrtpKeys(local=A, remote=B)
    assert A.hex() not in repr(keys) and repr(A) not in repr(keys)


async def _until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def test_secured_endpoint_drops_wrong_source_and_bad_srtp() -> None:
    async def main() -> None:
        phone_ctx, gw_ctx = _pair()
        gw = await RtpEndpoint.open("127.0.0.1", payload_type=0, latch=False, rtcp_interval=0)
        gw.hold = True
        got: list[bytes] = []

        def on_payload(pkt: RtpPacket, addr: tuple[str, int]) -> bool:
            got.append(pkt.payload)
            return True

        gw.on_payload = on_payload
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker,
        ):
            phone.bind(("127.0.0.1", 0))
            attacker.bind(("127.0.0.66", 0))
            phone.setblocking(False)
            # The phone's first packet, before the gateway knows its address and key: held, then delivered.
            phone.sendto(phone_ctx.protect(build_rtp(0, 1, 160, 7, b"early")), gw.local)
            attacker.sendto(phone_ctx.protect(build_rtp(0, 2, 320, 7, b"spoof")), gw.local)
            await _until(lambda: len(gw._held) == 2)
            gw.secure(SourceRule("127.0.0.1", phone.getsockname()[1]), gw_ctx)
            assert got == [b"early"]
            assert gw.stats.refused == {"wrong-source": 1}
            assert gw.remote == phone.getsockname() and not gw.latch
            # Attacker: right key stolen or not, from the wrong address it is dropped before decryption.
            for seq in range(3, 13):
                attacker.sendto(phone_ctx.protect(build_rtp(0, seq, 160 * seq, 7, b"x")), gw.local)
            # From the phone's address: a forged tag, a replay, and plain RTP are each refused.
            good = phone_ctx.protect(build_rtp(0, 20, 3200, 7, b"voice"))
            phone.sendto(good, gw.local)
            phone.sendto(good, gw.local)
            forged = phone_ctx.protect(build_rtp(0, 22, 3520, 7, b"fake"))
            phone.sendto(forged[:-1] + bytes([forged[-1] ^ 1]), gw.local)
            phone.sendto(build_rtp(0, 21, 3360, 7, b"clear" * 4), gw.local)
            await _until(lambda: sum(gw.stats.refused.values()) >= 14)
            assert got == [b"early", b"voice"]
            assert gw.stats.refused == {"wrong-source": 11, "srtp-replay": 1, "srtp-auth": 2}, gw.stats.refused
            assert gw.remote == phone.getsockname() and gw.stats.latches == 0
            # What the gateway sends is SRTP the phone opens.
            assert gw.send(b"to the phone")
            await asyncio.sleep(0.05)
            data = phone.recv(2048)
            assert b"to the phone" not in data
            assert phone_ctx.unprotect(data).endswith(b"to the phone")
        await gw.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_nat_rule_pins_the_first_port_and_never_moves() -> None:
    async def main() -> None:
        gw = await RtpEndpoint.open("127.0.0.1", payload_type=0, latch=False, rtcp_interval=0)
        got: list[tuple[str, int]] = []

        def on_payload(pkt: RtpPacket, addr: tuple[str, int]) -> bool:
            got.append(addr)
            return True

        gw.on_payload = on_payload
        gw.secure(SourceRule("127.0.0.1", None), None)
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nat,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker,
        ):
            for s, host in ((nat, "127.0.0.1"), (other, "127.0.0.1"), (attacker, "127.0.0.66")):
                s.bind((host, 0))
            nat.sendto(build_rtp(0, 1, 160, 7, b"a"), gw.local)
            await _until(lambda: len(got) == 1)
            other.sendto(build_rtp(0, 2, 320, 7, b"b"), gw.local)
            attacker.sendto(build_rtp(0, 3, 480, 7, b"c"), gw.local)
            await _until(lambda: sum(gw.stats.refused.values()) == 2)
            assert got == [nat.getsockname()] and gw.remote == nat.getsockname()
            assert gw.stats.refused == {"wrong-port": 1, "wrong-source": 1}
        await gw.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_set_remote_takes_the_peers_new_key_and_keeps_ours() -> None:
    alice, bob = _pair()
    sent = alice.protect(build_rtp(0, 1, 160, 0x1234, b"old key"))
    assert bob.unprotect(sent).endswith(b"old key")
    fresh = os.urandom(30)
    bob.set_remote(fresh)
    rekeyed_alice = SrtpContext(SrtpKeys(local=fresh, remote=B))
    assert bob.unprotect(rekeyed_alice.protect(build_rtp(0, 2, 320, 0x1234, b"new key"))).endswith(b"new key")
    with pytest.raises(SrtpAuthFailed):
        bob.unprotect(alice.protect(build_rtp(0, 3, 480, 0x1234, b"old key again")))
    # bob's own sending context is unchanged: alice still opens it.
    assert alice.unprotect(bob.protect(build_rtp(0, 9, 9, 0x99, b"to alice"))).endswith(b"to alice")
