"""Why did this INVITE go there: the gateway's one routing decision, from an inside phone (outbound, and where to),
to an inside user (inbound), or refused with its SIP status and reason. Pure: no I/O, no clock, no logging; the
registrations it may consult come in as a small lookup callable."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from voipgw.gateway.model import InsideUser
from voipgw.gateway.statuses import SIP_PHRASES
from voipgw.sip.uri import hostport, user_part
from voipgw.sip.zone import Zone


class InviteFacts(Protocol):
    """What routing reads of an INVITE (``voipgw.sip.IncomingCall`` has it all)."""

    @property
    def source_addr(self) -> tuple[str, int]: ...
    @property
    def from_aor(self) -> str: ...
    @property
    def to_aor(self) -> str: ...
    @property
    def authenticated_user(self) -> str | None: ...
    @property
    def zone(self) -> Zone: ...


class Registered(Protocol):
    """An inside phone's current registration (``voipgw.sip.registrar.Binding`` has it all)."""

    @property
    def contact_uri(self) -> str: ...
    @property
    def source(self) -> tuple[str, int]: ...
    def sent_from(self, source: tuple[str, int]) -> bool: ...


@dataclass(frozen=True)
class InsideRegistrar:
    """With a configuration file, the gateway is its phones' registrar and its users live at a PBX: routing then
    also knows registered phones, outside user names, and dials an extension in the caller's PBX domain."""

    auth: bool
    """``inside.auth``: a registered phone's INVITE is recognised by the credentials it carried, not its address."""
    lookup: Callable[[str], Registered | None]
    """An inside user's current registration (None: its phone is not registered)."""
    pbx: tuple[str, int] | None = None
    """The PBX registrar: an extension dialled at the gateway is called at the PBX, in the caller's outside domain."""


@dataclass(frozen=True)
class RoutePlan:
    """Everything routing needs besides the INVITE: built once when the gateway starts."""

    users: Mapping[str, InsideUser]
    """Inside users by name; a static phone's contact says where it sends from, a registering one's is empty."""
    listen: tuple[str, int]
    """The gateway's own SIP host and bound port: a user dialled there has no outside destination of its own."""
    routes: Mapping[str, str] = field(default_factory=dict)
    """Dialled user -> outside URI (flag mode's ``--route``)."""
    outside_proxy: tuple[str, int] | None = None
    registrar: InsideRegistrar | None = None
    """None without a configuration file (flag mode): static phones only, users by inside name only."""
    zoned: bool = False
    """The inside and outside zones have their own listeners: an INVITE on the outside one is only ever inbound
    (never from an inside user, whatever its From or source say), one on the inside one only ever outbound."""
    tls_port: int | None = None
    """The inside TLS listener's port (phones doing SDES-SRTP dial ``bob@<gateway>:<it>``): the gateway too."""
    by_address: Mapping[tuple[str, int], InsideUser] = field(init=False, repr=False)
    by_outside_user: Mapping[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        static = {hostport(u.contact): u for u in self.users.values() if u.contact}
        object.__setattr__(self, "by_address", static)
        object.__setattr__(self, "by_outside_user", {user_part(u.outside_aor): u.name for u in self.users.values()})


@dataclass(frozen=True)
class Refuse:
    """Answer the INVITE with ``code`` and a Warning naming ``why``; ``detail`` is the log line's (rate-limited)."""

    code: int
    phrase: str
    why: str
    detail: str = ""
    reason: str = "routing"
    """The refusal counter's key."""


@dataclass(frozen=True)
class Outbound:
    """An inside phone calls out as ``user``. ``target`` is the outside Request-URI, or the refusal when there is
    none: that refusal belongs to the call (answered once its offer is checked, shown in the snapshot)."""

    user: InsideUser
    """The calling user; a registered phone's contact is its current registration's."""
    dialled: str
    """The To AOR after the dial plan (an extension dialled at the gateway: at the PBX, in the caller's domain)."""
    target: str | Refuse


@dataclass(frozen=True)
class Inbound:
    """An outside caller reaches ``user``, whose phone is at ``user.contact``."""

    user: InsideUser


Route = Outbound | Inbound | Refuse


def route(invite: InviteFacts, plan: RoutePlan) -> Route:
    """Outbound when the INVITE comes from an inside phone (a static one's address, else a registered one) with that
    phone's user as From; anything else is inbound, for the inside user named in its To (or its outside name)."""
    from_user = user_part(invite.from_aor)
    if plan.zoned and invite.zone is Zone.OUTSIDE:
        return _inbound(invite.to_aor, plan)
    caller = plan.by_address.get(invite.source_addr)
    if plan.zoned and plan.registrar is not None and plan.registrar.auth:
        # Static phones prove who they are like registered ones: an address alone is not an identity.
        caller = plan.users.get(from_user) if invite.authenticated_user == from_user else None
    if caller is None and plan.registrar is not None:
        caller = _registered_caller(invite, from_user, plan.users, plan.registrar)
    if caller is not None and from_user == caller.name:
        dialled = invite.to_aor if plan.registrar is None else _dial_plan(caller, invite.to_aor, plan)
        target = _outside_target(dialled, plan)
        if target is None:
            return Outbound(caller, dialled, _refuse(404, "no route to the dialled user", f"from {caller.name}"))
        return Outbound(caller, dialled, target)
    if plan.zoned:
        why = "only the gateway's own users may call from the inside"
        return Refuse(403, SIP_PHRASES[403], why, f"from {invite.from_aor} at {invite.source_addr}", "inside_not_user")
    return _inbound(invite.to_aor, plan)


def _refuse(code: int, why: str, detail: str) -> Refuse:
    return Refuse(code, SIP_PHRASES[code], why, detail)


def _registered_caller(
    invite: InviteFacts, from_user: str, users: Mapping[str, InsideUser], registrar: InsideRegistrar
) -> InsideUser | None:
    """The user a phone registered to the gateway calls as: with ``auth``, the user whose credentials it carried;
    without, the From user whose registration came from the INVITE's address."""
    user = users.get(from_user)
    if user is None:
        return None
    if registrar.auth:
        return user if invite.authenticated_user == from_user else None
    binding = registrar.lookup(from_user)
    if binding is None or not binding.sent_from(invite.source_addr):
        return None
    return dataclasses.replace(user, contact=binding.contact_uri)


def _dial_plan(caller: InsideUser, to_aor: str, plan: RoutePlan) -> str:
    """A user dialled at the gateway itself (``bob@<gateway>``) is called at the PBX, in the caller's outside domain
    (``bob@pbx.example.org``), so the PBX routes it by its own location table."""
    assert plan.registrar is not None
    host, port = hostport(to_aor)
    dialled = user_part(to_aor)
    if not dialled or port not in _own_ports(plan) or host not in (plan.listen[0], "localhost"):
        return to_aor
    domain = caller.outside_aor.partition("@")[2]
    pbx = plan.registrar.pbx
    if pbx is not None and ":" not in domain and domain == pbx[0]:
        domain = f"{domain}:{pbx[1]}"  # the PBX's own address, so it sees the request as its own domain
    return f"{dialled}@{domain}"


def _own_ports(plan: RoutePlan) -> tuple[int, ...]:
    """The inside zone's listening ports: UDP, and TLS when the phones have their own TLS listener."""
    return (plan.listen[1],) if plan.tls_port is None else (plan.listen[1], plan.tls_port)


def _outside_target(to_aor: str, plan: RoutePlan) -> str | None:
    """Where the outside INVITE goes: a route for the dialled user, else the dialled URI itself (through the proxy,
    if any); None when it was dialled at the gateway itself with no proxy to send it to."""
    user = user_part(to_aor)
    if user in plan.routes:
        return plan.routes[user]
    host, port = hostport(to_aor)
    if port in (*_own_ports(plan), 0) and host == plan.listen[0] and plan.outside_proxy is None:
        return None
    return to_aor if to_aor.startswith("sip") else f"sip:{to_aor}"


def _inbound(to_aor: str, plan: RoutePlan) -> Inbound | Refuse:
    """The inside user the To names: by inside name, else (with a registrar) by the user part of its outside AOR;
    a registering phone is rung at its current registration."""
    user = plan.users.get(user_part(to_aor))
    if plan.registrar is not None:
        if user is None:
            name = plan.by_outside_user.get(user_part(to_aor))
            user = plan.users.get(name) if name is not None else None
        if user is not None and not user.contact:
            binding = plan.registrar.lookup(user.name)
            if binding is not None:
                user = dataclasses.replace(user, contact=binding.contact_uri)
    if user is None:
        return _refuse(404, "no such user here", f"to {to_aor}: no such inside user")
    if not user.contact:
        return _refuse(480, "the inside phone is not registered", f"to {user.name}: the inside phone is not registered")
    return Inbound(user)
