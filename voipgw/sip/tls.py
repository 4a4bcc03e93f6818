"""TLS settings for SIP over TLS (RFC 3261 §26.2): builds Python ``ssl`` contexts and checks pinned certificates.

Owns certificate policy only; never opens sockets (voipgw.sip.tcp does) and never logs key material.
End-to-end media security never depends on TLS: it protects signalling metadata on one hop.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
from dataclasses import dataclass

from voipgw.sip.events import SipError


class TlsConfigError(SipError):
    """The TLS settings are unusable (missing file, bad key, bad fingerprint)."""


@dataclass(frozen=True)
class TlsOptions:
    """How we verify TLS peers and who we are. TLS 1.3 is preferred, 1.2 the minimum."""

    ca_file: str | None = None
    """PEM bundle that server certificates (and client certificates, with ``verify_clients``) must chain to;
    None: the system's default trust store."""
    pinned_sha256: str | None = None
    """Hex SHA-256 of the server certificate (DER); when set it replaces CA and host-name verification."""
    cert_file: str | None = None
    """Our certificate chain (PEM): needed to listen, and sent as a client certificate when asked."""
    key_file: str | None = None
    verify_clients: bool = False
    """Require a client certificate that chains to ``ca_file`` on inbound connections."""
    port: int = 0
    """TLS listening port (0: any free port); listening needs ``cert_file``."""

    @property
    def pin(self) -> bytes | None:
        if self.pinned_sha256 is None:
            return None
        text = self.pinned_sha256.replace(":", "").strip().lower()
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise TlsConfigError("pinned_sha256: not a hex SHA-256 fingerprint") from None
        if len(raw) != hashlib.sha256().digest_size:
            raise TlsConfigError("pinned_sha256: a SHA-256 fingerprint has 32 bytes")
        return raw


def _versions(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED  # 1.3 when both ends have it
    return ctx


def _load_identity(ctx: ssl.SSLContext, options: TlsOptions) -> None:
    if options.cert_file is None:
        return
    try:
        ctx.load_cert_chain(options.cert_file, options.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot load the TLS certificate {options.cert_file}: {exc}") from None


def client_context(options: TlsOptions) -> ssl.SSLContext:
    ctx = _versions(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if options.pin is not None:
        # The pin is checked after the handshake (fingerprint_matches); a CA chain is not required then.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        try:
            if options.ca_file is not None:
                ctx.load_verify_locations(cafile=options.ca_file)
            else:
                ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"cannot load the CA bundle {options.ca_file}: {exc}") from None
    _load_identity(ctx, options)
    return ctx


def server_context(options: TlsOptions) -> ssl.SSLContext | None:
    """None without ``cert_file``: then we only connect out over TLS and do not listen."""
    if options.cert_file is None:
        return None
    ctx = _versions(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    # No TLS 1.3 session tickets: nobody resumes, and the ticket writes that follow the handshake stalled the
    # first SIP answer by one delayed ACK (measured: ~45 ms on loopback, 1-2 ms without them).
    ctx.num_tickets = 0
    _load_identity(ctx, options)
    if options.verify_clients:
        if options.ca_file is None:
            raise TlsConfigError("verify_clients needs ca_file (the CA client certificates must chain to)")
        try:
            ctx.load_verify_locations(cafile=options.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"cannot load the CA bundle {options.ca_file}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def fingerprint_matches(der: bytes | None, pin: bytes) -> bool:
    return der is not None and hmac.compare_digest(hashlib.sha256(der).digest(), pin)


def describe_failure(exc: BaseException) -> str:
    """One clear line for a failed TCP or TLS connection (the transport's name goes in front of it)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"handshake failed: {exc.reason or exc}"
    return f"connect failed: {getattr(exc, 'strerror', None) or exc}"


__all__ = [
    "TlsConfigError",
    "TlsOptions",
    "client_context",
    "describe_failure",
    "fingerprint_matches",
    "server_context",
]
