"""AOR normalization: reduces a SIP/SIPS URI, name-addr or bare ``user@host`` to the ``user@host`` form that
handshakes sign and compare. Pure string handling; it never resolves names or talks to the network.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote

from .errors import MalformedAor

MAX_AOR_INPUT = 2048
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*\.?$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_BAD_USER_CHARS = set('@<>"\\ \t\r\n%:')
_OTHER_SCHEMES = frozenset({"tel", "urn", "mailto", "http", "https", "im", "pres", "fax", "modem"})
"""Schemes refused even when followed by digits ("tel:123" is not the host "tel" on port 123)."""


def _strip_name_addr(text: str) -> str:
    """``"Display" <uri>;params`` -> ``uri``; a bare addr-spec loses any trailing header parameters later."""
    if "<" in text:
        start = text.index("<")
        end = text.find(">", start)
        if end < 0:
            raise MalformedAor("unterminated <...>")
        return text[start + 1 : end].strip()
    if ">" in text:
        raise MalformedAor("stray '>'")
    return text


def _normalize_host(hostport: str) -> str:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise MalformedAor("unterminated IPv6 reference")
        try:
            addr = ipaddress.IPv6Address(hostport[1:end])
        except ValueError as exc:
            raise MalformedAor("invalid IPv6 address") from exc
        rest = hostport[end + 1 :]
        if rest and not (rest.startswith(":") and _PORT.match(rest[1:])):
            raise MalformedAor("invalid port")
        return f"[{addr.compressed}]"
    host, sep, port = hostport.partition(":")
    if sep and not _PORT.match(port):
        raise MalformedAor("invalid port")
    host = host.lower()
    if not host or not _HOSTNAME.match(host):
        raise MalformedAor("invalid host")
    return host.rstrip(".")


def normalize_aor(uri_or_aor: str) -> str:
    """Return ``user@host`` (or ``host``): no display name, scheme, password, port, parameters or headers;
    the host lower-cased, the user part percent-decoded but otherwise case-preserved (RFC 3261 §19.1.4).

    Raises MalformedAor for anything that is not a sip:/sips: URI or a bare ``[user@]host[:port]``.
    """
    if not isinstance(uri_or_aor, str) or len(uri_or_aor) > MAX_AOR_INPUT:
        raise MalformedAor("not a string of reasonable length")
    text = _strip_name_addr(uri_or_aor.strip())
    m = _SCHEME.match(text)
    if m:
        scheme = m.group(1).lower()
        if scheme in ("sip", "sips"):
            text = text[m.end() :]
        elif scheme in _OTHER_SCHEMES or not _PORT.match(re.split(r"[;?]", text[m.end() :], maxsplit=1)[0]):
            # "host:5060" looks like a scheme but is a bare host with a port.
            raise MalformedAor(f"unsupported URI scheme {scheme!r}")
    user: str | None = None
    at = text.find("@")
    if at >= 0:
        user = text[:at].split(":", 1)[0]  # drop an (obsolete) password
        text = text[at + 1 :]
        if "%" in user:
            try:
                user = unquote(user, errors="strict")
            except UnicodeDecodeError as exc:
                raise MalformedAor("user part is not UTF-8") from exc
        if not user or any(c in _BAD_USER_CHARS or ord(c) < 0x20 or ord(c) == 0x7F for c in user):
            raise MalformedAor("invalid user part")
    hostport = re.split(r"[;?]", text, maxsplit=1)[0].strip()
    host = _normalize_host(hostport)
    return f"{user}@{host}" if user is not None else host
