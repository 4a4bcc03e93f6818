"""The stack's REGISTER server side: reads a sippy REGISTER into a RegisterRequest, lets the Registrar decide, and
builds the sippy response (400 with a Warning for a malformed Contact or Expires). Runs on the reactor thread.
"""

from __future__ import annotations

import logging
from typing import Any

from voipgw.sip.guard import SipStats
from voipgw.sip.registrar import ContactSpec, RegisterReply, RegisterRequest, Registrar
from voipgw.sip.sippy_glue import auth_values, response_to, sippy_ratelog

log = logging.getLogger("voipgw.sip")


class _BadRegister(ValueError):
    """A REGISTER whose Contact or Expires cannot be understood (answered 400)."""


def answer_register(req: Any, registrar: Registrar, stats: SipStats, local_host: str) -> Any:
    """Parse a REGISTER into a RegisterRequest (400 if its Contact/Expires are malformed) and answer it."""
    source = req.getSource()
    src = getattr(source, "address", source)
    stream = str(req.getSource(2)[1] or "udp").lower() in ("tcp", "tls")
    try:
        parsed = _register_request(req, (str(src[0]), int(src[1])), stream)
    except _BadRegister as exc:
        stats.register_malformed += 1
        sippy_ratelog("register", logging.WARNING, "malformed REGISTER from %s: %s", src, exc)
        warning = str(exc).replace('"', "'")[:120]
        return response_to(req, 400, "Bad Request", (("Warning", f'399 {local_host} "{warning}"'),))
    reply: RegisterReply = registrar.handle_register(parsed)
    if reply.code == 200:
        stats.register_ok += 1
    elif reply.code == 401:
        stats.auth_challenged += 1
    elif reply.code == 400:
        stats.register_malformed += 1
    elif reply.code == 403:
        stats.auth_refused += 1
        sippy_ratelog(
            f"register-{reply.refusal}", logging.WARNING, "REGISTER for %r from %s:%d refused (403): %s",
            parsed.user, *parsed.source, reply.refusal,
        )  # fmt: skip
    if reply.refusal is not None:
        stats.refused[reply.refusal] = stats.refused.get(reply.refusal, 0) + 1
    headers = list(reply.headers)
    headers += [("Contact", f"<{uri}>;expires={secs}") for uri, secs in reply.contacts]
    if reply.code == 200 and not reply.contacts:
        headers.append(("Expires", "0"))
    return response_to(req, reply.code, reply.reason, tuple(headers))


def _register_request(req: Any, source: tuple[str, int], stream: bool = False) -> RegisterRequest:
    user = req.getHFBody("to").getUrl().username
    if not user:
        raise _BadRegister("To has no user part")
    expires: int | None = None
    if req.countHFs("expires"):
        text = str(req.getHFs("expires")[0].body).strip()
        if not text.isdigit() or len(text) > 10:
            raise _BadRegister("Expires is not a number of seconds")
        expires = int(text)
    contacts: list[ContactSpec] = []
    wildcard = False
    for hf in req.getHFs("contact"):
        try:
            body = hf.getBody()
            if body.asterisk:
                wildcard = True
                continue
            url = body.getUrl()
            if url is None or not url.host:
                raise ValueError("no host")
            value = body.address.params.get("expires")
            uri = str(url)
        except Exception as exc:
            raise _BadRegister(f"unparsable Contact: {type(exc).__name__}") from None
        c_exp: int | None = None
        if value is not None:
            if not str(value).isdigit() or len(str(value)) > 10:
                raise _BadRegister("Contact expires is not a number")
            c_exp = int(value)
        contacts.append(ContactSpec(uri, c_exp))
    if wildcard and contacts:
        raise _BadRegister("Contact: * mixed with other contacts")
    agent = str(req.getHFs("user-agent")[0].body)[:200] if req.countHFs("user-agent") else None
    return RegisterRequest(
        user=str(user),
        contacts=tuple(contacts),
        wildcard=wildcard,
        expires_header=expires,
        authorization=tuple(auth_values(req)),
        source=source,
        user_agent=agent,
        call_id=str(req.getHFBody("call-id")),
        cseq=int(req.getHFBody("cseq").getCSeqNum()),
        stream=stream,
    )
