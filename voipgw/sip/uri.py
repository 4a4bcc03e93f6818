"""SIP URIs and AORs as text: the one place every layer (stack, phone, gateway) reads a user or a host:port from.

Pure string work: no sippy, no sockets. ``user_part``/``hostport``/``aor`` are total (they never raise, whatever the
text: a routing decision on a malformed URI gets "" or the default port); only ``sip_uri`` refuses, with UriError.

Forms understood: ``sip:``/``sips:`` (any case) or no scheme (a bare ``user@host[:port]`` AOR or a bare host),
an optional ``"Display" <...>`` wrapper, ``user:password@``, IPv6 references (``[::1]:5060``, brackets kept, as sippy
writes them), ``;params`` and ``?headers``. Text with another scheme (``tel:``) is read as a bare ``host:port``.
"""

from __future__ import annotations

DEFAULT_PORT = 5060
_SCHEMES = ("sip:", "sips:")


class UriError(ValueError):
    """Text that is not a sip:/sips: URI nor a bare user@host AOR (the only error this module raises)."""


def _inner(text: str) -> str:
    """``text`` without a display name and angle brackets (``"Bob" <sip:b@h>;tag=1`` -> ``sip:b@h``), stripped."""
    text = text.strip()
    if "<" in text:
        text = text.split("<", 1)[1].split(">", 1)[0].strip()
    return text


def _after_scheme(text: str) -> tuple[bool, str]:
    """(whether a sip:/sips: scheme was there, the text after it)."""
    lowered = text[:5].lower()
    for scheme in _SCHEMES:
        if lowered.startswith(scheme):
            return True, text[len(scheme) :]
    return False, text


def user_part(uri: str) -> str:
    """The user of a URI or AOR (``sip:bob@h:5062;transport=tcp`` -> ``bob``), "" when it has none."""
    had_scheme, text = _after_scheme(_inner(uri))
    if "@" not in text:
        return ""
    user = text.split("@", 1)[0]
    # In a sip:/sips: URI a colon in the userinfo starts a password (RFC 3261 19.1.1), never part of the user.
    return user.split(":", 1)[0] if had_scheme else user


def hostport(uri: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """(host, port) of a URI or AOR; ``default_port`` when the port is absent or not a number.

    An IPv6 host keeps its brackets (``sip:b@[::1]:5062`` -> ``("[::1]", 5062)``), as sippy addresses are written.
    """
    _, text = _after_scheme(_inner(uri))
    text = text.split("@", 1)[-1].split(";", 1)[0].split("?", 1)[0].split(">", 1)[0]
    if text.startswith("[") and "]" in text:
        end = text.index("]") + 1
        host, rest = text[:end], text[end:]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    return host, int(port) if port.isdecimal() else default_port


def sip_uri(uri: str) -> str:
    """The absolute ``sip:``/``sips:`` URI for a URI (``<...>`` allowed) or a bare ``user@host[:port]`` AOR.

    Raises UriError for any other scheme (``tel:``, ``http:``); the URI itself is checked by whoever parses it.
    """
    text = uri.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if ":" not in text.split("@", 1)[0]:
        text = "sip:" + text  # a bare "user@host[:port]" AOR
    if not text.lower().startswith(_SCHEMES):
        raise UriError(f"not a sip: or sips: URI: {uri!r}")
    return text


def aor(user: str | None, host: str, port: object = None) -> str:
    """The ``sip:user@host[:port]`` address-of-record (no parameters; a sips: URI's AOR is written sip:)."""
    userinfo = f"{user}@" if user else ""
    suffix = f":{port}" if port else ""
    return f"sip:{userinfo}{host}{suffix}"


__all__ = ["DEFAULT_PORT", "UriError", "aor", "hostport", "sip_uri", "user_part"]
