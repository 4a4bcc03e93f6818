"""SRTP/SRTCP protection of whole RTP/RTCP packets through libsrtp (pylibsrtp), one context per call leg: our key
protects what we send, the peer's (from its ``a=crypto`` line) authenticates and decrypts what it sends. A packet
that fails is refused with a typed error (auth failure, replay, malformed); nothing unauthenticated is returned."""

from __future__ import annotations

from dataclasses import dataclass, field

import pylibsrtp

from voipgw.rtp.sdes import KEY_SALT_BYTES


class SrtpRefused(Exception):
    """A received packet that did not authenticate; ``reason`` is its counter's name."""

    reason = "srtp-refused"


class SrtpAuthFailed(SrtpRefused):
    """Its authentication tag is wrong: forged, altered, or sealed with another key (or not SRTP at all)."""

    reason = "srtp-auth"


class SrtpReplay(SrtpRefused):
    """An index seen before, or too old for the replay window."""

    reason = "srtp-replay"


class SrtpMalformed(SrtpRefused):
    """Too short or otherwise not parseable as SRTP/SRTCP."""

    reason = "srtp-malformed"


_REASONS: dict[str, type[SrtpRefused]] = {
    "authentication failure": SrtpAuthFailed,
    "replay check failed (bad index)": SrtpReplay,
    "replay check failed (index too old)": SrtpReplay,
    "packet index is too old to consider": SrtpReplay,
    "error parsing data": SrtpMalformed,
    "unsupported parameter": SrtpMalformed,  # libsrtp's answer to a packet shorter than a header
}


def _refused(exc: pylibsrtp.Error) -> SrtpRefused:
    return _REASONS.get(str(exc), SrtpRefused)(str(exc))


@dataclass(frozen=True)
class SrtpKeys:
    """The two master key||salt values of a leg. Never printed: the repr hides both."""

    local: bytes = field(repr=False)
    """Ours: protects what we send (it went into our SDP)."""
    remote: bytes = field(repr=False)
    """The peer's, from its SDP: opens what it sends."""

    def __post_init__(self) -> None:
        if len(self.local) != KEY_SALT_BYTES or len(self.remote) != KEY_SALT_BYTES:
            raise ValueError(f"SRTP master key and salt must be {KEY_SALT_BYTES} bytes")


class SrtpContext:
    """Protect outgoing and unprotect incoming RTP and RTCP of one leg (AES_CM_128_HMAC_SHA1_80, any SSRC)."""

    def __init__(self, keys: SrtpKeys) -> None:
        profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
        self._tx = pylibsrtp.Session(
            pylibsrtp.Policy(key=keys.local, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        )
        self._rx = pylibsrtp.Session(
            pylibsrtp.Policy(key=keys.remote, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
        )

    def set_remote(self, key: bytes) -> None:
        """The peer re-keyed (a new ``a=crypto`` in a re-offer): open what it sends with ``key`` from now on. Our
        sending context is kept: a fresh one would restart its rollover counter, which the peer would not follow."""
        if len(key) != KEY_SALT_BYTES:
            raise ValueError(f"SRTP master key and salt must be {KEY_SALT_BYTES} bytes")
        self._rx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=key,
                ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
            )
        )

    def __repr__(self) -> str:
        return "SrtpContext(AES_CM_128_HMAC_SHA1_80)"

    def protect(self, packet: bytes) -> bytes:
        return bytes(self._tx.protect(packet))

    def protect_rtcp(self, packet: bytes) -> bytes:
        return bytes(self._tx.protect_rtcp(packet))

    def unprotect(self, packet: bytes) -> bytes:
        """The authenticated, decrypted RTP packet; raises SrtpRefused (a subclass) otherwise."""
        try:
            return bytes(self._rx.unprotect(packet))
        except pylibsrtp.Error as exc:
            raise _refused(exc) from None

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        try:
            return bytes(self._rx.unprotect_rtcp(packet))
        except pylibsrtp.Error as exc:
            raise _refused(exc) from None
