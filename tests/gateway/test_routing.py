"""Why did this INVITE go there: the gateway's routing decision as a table, one row per case (pure, microseconds),
in flag mode (static phones, --route, --proxy) and with a configuration file (registered phones, inside.auth,
outside user names, the dial plan toward the PBX)."""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from voipgw.gateway.model import InsideUser
from voipgw.gateway.routing import (
    Inbound,
    InsideRegistrar,
    Outbound,
    Refuse,
    Route,
    RoutePlan,
    route,
)
from voipgw.sip.zone import Zone

GW = ("127.0.0.1", 5070)
ALICE_AT = ("127.0.0.1", 5062)
BOB_PHONE = ("192.168.1.20", 5060)
"""Where bob's (registering) phone sends from."""

ALICE = InsideUser("alice", "sip:alice@127.0.0.1:5062", "alice@pbx.test")
BOB = InsideUser("bob", "", "201@pbx.test")
"""Registers to the gateway; known at the PBX as 201."""
CAROL = InsideUser("carol", "sip:desk7@127.0.0.1:5066", "carol@example.org")
"""Static, called at a contact whose user part is not hers."""


@dataclass(frozen=True)
class Invite:
    source_addr: tuple[str, int]
    from_aor: str
    to_aor: str
    authenticated_user: str | None = None
    zone: Zone = Zone.INSIDE


@dataclass(frozen=True)
class Binding:
    contact_uri: str
    source: tuple[str, int]

    def sent_from(self, source: tuple[str, int]) -> bool:
        return source == self.source


BOB_BINDING = Binding("sip:bob@192.168.1.20:5060;ob", BOB_PHONE)
BOB_REGISTERED = dataclasses.replace(BOB, contact=BOB_BINDING.contact_uri)


def _registered(name: str) -> Binding | None:
    return BOB_BINDING if name == "bob" else None


def _nobody(name: str) -> Binding | None:
    return None


USERS = {u.name: u for u in (ALICE, BOB, CAROL)}
FLAG = RoutePlan({u.name: u for u in (ALICE, CAROL)}, GW, routes={"dave": "sip:dave@10.0.0.9:5060"})
FLAG_PROXY = dataclasses.replace(FLAG, outside_proxy=("10.0.0.1", 5060))
FILE = RoutePlan(
    USERS, GW, outside_proxy=("pbx.test", 5080), registrar=InsideRegistrar(False, _registered, ("pbx.test", 5080))
)
FILE_AUTH = dataclasses.replace(FILE, registrar=InsideRegistrar(True, _registered, ("pbx.test", 5080)))
FILE_UNREGISTERED = dataclasses.replace(FILE, registrar=InsideRegistrar(False, _nobody, ("pbx.test", 5080)))

NO_ROUTE = Refuse(404, "Not Found", "no route to the dialled user", "from alice")
ZONED = dataclasses.replace(FILE, zoned=True)
ZONED_AUTH = dataclasses.replace(FILE_AUTH, zoned=True)
PBX_AT = ("10.0.0.5", 5060)
ZONED_TLS = dataclasses.replace(ZONED_AUTH, tls_port=5071)


def not_a_user(from_aor: str, source: tuple[str, int]) -> Refuse:
    why = "only the gateway's own users may call from the inside"
    return Refuse(403, "Forbidden", why, f"from {from_aor} at {source}", "inside_not_user")


ROWS: list[tuple[str, RoutePlan, Invite, Route]] = [
    # --- flag mode: static phones, by address and From user ---------------------------------------------------
    (
        "a static phone dials a routed user at the gateway",
        FLAG, Invite(ALICE_AT, "alice@127.0.0.1", "dave@127.0.0.1:5070"),
        Outbound(ALICE, "dave@127.0.0.1:5070", "sip:dave@10.0.0.9:5060"),
    ),
    (
        "a static phone dials a far URI: sent there as dialled",
        FLAG, Invite(ALICE_AT, "sip:alice@127.0.0.1", "erin@example.org"),
        Outbound(ALICE, "erin@example.org", "sip:erin@example.org"),
    ),
    (
        "a sip: To stays as dialled",
        FLAG, Invite(ALICE_AT, "alice@127.0.0.1", "sip:erin@example.org:5080"),
        Outbound(ALICE, "sip:erin@example.org:5080", "sip:erin@example.org:5080"),
    ),
    (
        "dialled at the gateway itself, no route, no proxy: 404 as that call",
        FLAG, Invite(ALICE_AT, "alice@127.0.0.1", "erin@127.0.0.1:5070"),
        Outbound(ALICE, "erin@127.0.0.1:5070", NO_ROUTE),
    ),
    (
        "port 0 counts as the gateway's own",
        FLAG, Invite(ALICE_AT, "alice@127.0.0.1", "erin@127.0.0.1:0"),
        Outbound(ALICE, "erin@127.0.0.1:0", NO_ROUTE),
    ),
    (
        "the gateway's host on another port is somewhere else",
        FLAG, Invite(ALICE_AT, "alice@127.0.0.1", "erin@127.0.0.1"),
        Outbound(ALICE, "erin@127.0.0.1", "sip:erin@127.0.0.1"),
    ),
    (
        "dialled at the gateway with a proxy: the proxy routes it",
        FLAG_PROXY, Invite(ALICE_AT, "alice@127.0.0.1", "erin@127.0.0.1:5070"),
        Outbound(ALICE, "erin@127.0.0.1:5070", "sip:erin@127.0.0.1:5070"),
    ),
    (
        "a route wins over the proxy",
        FLAG_PROXY, Invite(ALICE_AT, "alice@127.0.0.1", "dave@127.0.0.1:5070"),
        Outbound(ALICE, "dave@127.0.0.1:5070", "sip:dave@10.0.0.9:5060"),
    ),
    (
        "a static phone is known by its contact's address, whatever its contact's user part",
        FLAG, Invite(("127.0.0.1", 5066), "carol@127.0.0.1", "erin@example.org"),
        Outbound(CAROL, "erin@example.org", "sip:erin@example.org"),
    ),
    (
        "from a static phone's address but another From user: inbound",
        FLAG, Invite(ALICE_AT, "mallory@example.org", "carol@127.0.0.1:5070"),
        Inbound(CAROL),
    ),
    (
        "from elsewhere claiming alice: inbound (for the To), never outbound as alice",
        FLAG, Invite(("203.0.113.5", 5060), "alice@127.0.0.1", "carol@127.0.0.1:5070"),
        Inbound(CAROL),
    ),
    (
        "from outside to an inside user by name",
        FLAG, Invite(("203.0.113.5", 5060), "erin@example.org", "sip:alice@127.0.0.1:5070"),
        Inbound(ALICE),
    ),
    (
        "to nobody here: 404",
        FLAG, Invite(("203.0.113.5", 5060), "erin@example.org", "nobody@127.0.0.1:5070"),
        Refuse(404, "Not Found", "no such user here", "to nobody@127.0.0.1:5070: no such inside user"),
    ),
    (
        "an inside name at any host is that user",
        FLAG, Invite(("203.0.113.5", 5060), "erin@example.org", "carol@example.org"),
        Inbound(CAROL),
    ),
    (
        "flag mode knows no outside user names: 404",
        FLAG_PROXY, Invite(("203.0.113.5", 5060), "erin@example.org", "201@127.0.0.1:5070"),
        Refuse(404, "Not Found", "no such user here", "to 201@127.0.0.1:5070: no such inside user"),
    ),
    # --- with a configuration file: registered phones, inside.auth, outside names, the dial plan ---------------
    (
        "a registered phone calls from its registration's address: outbound, at its registered contact",
        FILE, Invite(BOB_PHONE, "bob@127.0.0.1", "erin@example.org"),
        Outbound(BOB_REGISTERED, "erin@example.org", "sip:erin@example.org"),
    ),
    (
        "bob's From from another address (no inside.auth): not bob calling, inbound for the To",
        FILE, Invite(("203.0.113.5", 5060), "bob@127.0.0.1", "alice@127.0.0.1:5070"),
        Inbound(ALICE),
    ),
    (
        "an unregistered phone is nobody's caller",
        FILE_UNREGISTERED, Invite(BOB_PHONE, "bob@127.0.0.1", "alice@127.0.0.1:5070"),
        Inbound(ALICE),
    ),
    (
        "inside.auth: the credentials it carried make it bob (contact unchanged: the registrar has it per call)",
        FILE_AUTH, Invite(("203.0.113.5", 5060), "bob@127.0.0.1", "erin@example.org", authenticated_user="bob"),
        Outbound(BOB, "erin@example.org", "sip:erin@example.org"),
    ),
    (
        "inside.auth: credentials of another user are not bob's",
        FILE_AUTH, Invite(BOB_PHONE, "bob@127.0.0.1", "alice@127.0.0.1:5070", authenticated_user="carol"),
        Inbound(ALICE),
    ),
    (
        "the dial plan: an extension dialled at the gateway goes to the PBX, in the caller's domain (with its port)",
        FILE, Invite(BOB_PHONE, "bob@127.0.0.1", "alice@127.0.0.1:5070"),
        Outbound(BOB_REGISTERED, "alice@pbx.test:5080", "sip:alice@pbx.test:5080"),
    ),
    (
        "the dial plan: localhost is the gateway too",
        FILE, Invite(ALICE_AT, "alice@127.0.0.1", "301@localhost:5070"),
        Outbound(ALICE, "301@pbx.test:5080", "sip:301@pbx.test:5080"),
    ),
    (
        "the dial plan: a caller's domain that is not the PBX's host stays as it is",
        FILE, Invite(("127.0.0.1", 5066), "carol@127.0.0.1", "301@127.0.0.1:5070"),
        Outbound(CAROL, "301@example.org", "sip:301@example.org"),
    ),
    (
        "the dial plan leaves a far URI alone",
        FILE, Invite(ALICE_AT, "alice@127.0.0.1", "erin@example.org"),
        Outbound(ALICE, "erin@example.org", "sip:erin@example.org"),
    ),
    (
        "the dial plan needs a dialled user",
        FILE, Invite(ALICE_AT, "alice@127.0.0.1", "127.0.0.1:5070"),
        Outbound(ALICE, "127.0.0.1:5070", "sip:127.0.0.1:5070"),
    ),
    (
        "from outside by outside name, to a registered phone",
        FILE, Invite(("198.51.100.7", 5060), "erin@example.org", "201@127.0.0.1:5070"),
        Inbound(BOB_REGISTERED),
    ),
    (
        "from outside by inside name, to a registered phone",
        FILE, Invite(("198.51.100.7", 5060), "erin@example.org", "bob@127.0.0.1:5070"),
        Inbound(BOB_REGISTERED),
    ),
    (
        "a static phone's user needs no registration",
        FILE_UNREGISTERED, Invite(("198.51.100.7", 5060), "erin@example.org", "alice@pbx.test"),
        Inbound(ALICE),
    ),
    (
        "to a user whose phone is not registered: 480",
        FILE_UNREGISTERED, Invite(("198.51.100.7", 5060), "erin@example.org", "201@pbx.test"),
        Refuse(480, "Temporarily Unavailable", "the inside phone is not registered",
               "to bob: the inside phone is not registered"),
    ),
    (
        "to nobody, inside or outside name: 404",
        FILE, Invite(("198.51.100.7", 5060), "erin@example.org", "999@pbx.test"),
        Refuse(404, "Not Found", "no such user here", "to 999@pbx.test: no such inside user"),
    ),
    # --- two zones: the listener it arrived on decides the direction -------------------------------------------
    (
        "outside listener: claiming alice from the PBX is a call *to* the To user, never alice calling out",
        ZONED, Invite(PBX_AT, "alice@127.0.0.1", "bob@pbx.test", zone=Zone.OUTSIDE),
        Inbound(BOB_REGISTERED),
    ),
    (
        "outside listener: even from alice's own phone address and with alice's credentials",
        ZONED_AUTH, Invite(ALICE_AT, "alice@127.0.0.1", "erin@example.org", "alice", zone=Zone.OUTSIDE),
        Refuse(404, "Not Found", "no such user here", "to erin@example.org: no such inside user"),
    ),
    (
        "outside listener: the registered phone's address is no identity there either",
        ZONED, Invite(BOB_PHONE, "bob@127.0.0.1", "erin@example.org", zone=Zone.OUTSIDE),
        Refuse(404, "Not Found", "no such user here", "to erin@example.org: no such inside user"),
    ),
    (
        "inside listener: a registered phone calls out",
        ZONED, Invite(BOB_PHONE, "bob@127.0.0.1", "erin@example.org"),
        Outbound(BOB_REGISTERED, "erin@example.org", "sip:erin@example.org"),
    ),
    (
        "inside listener: nobody's phone is refused, never turned into an inbound call",
        ZONED, Invite(("127.0.0.66", 5060), "bob@127.0.0.1", "alice@127.0.0.1:5070"),
        not_a_user("bob@127.0.0.1", ("127.0.0.66", 5060)),
    ),
    (
        "inside listener with auth: a static phone's address alone is not alice",
        ZONED_AUTH, Invite(ALICE_AT, "alice@127.0.0.1", "erin@example.org"),
        not_a_user("alice@127.0.0.1", ALICE_AT),
    ),
    (
        "inside listener with auth: the static phone with alice's credentials is alice",
        ZONED_AUTH, Invite(ALICE_AT, "alice@127.0.0.1", "erin@example.org", "alice"),
        Outbound(ALICE, "erin@example.org", "sip:erin@example.org"),
    ),
    (
        "the dial plan: an extension dialled at the inside TLS listener goes to the PBX too",
        ZONED_TLS, Invite(ALICE_AT, "alice@127.0.0.1", "301@127.0.0.1:5071", "alice"),
        Outbound(ALICE, "301@pbx.test:5080", "sip:301@pbx.test:5080"),
    ),
    (
        "without an inside TLS listener that port is somewhere else",
        ZONED_AUTH, Invite(ALICE_AT, "alice@127.0.0.1", "301@127.0.0.1:5071", "alice"),
        Outbound(ALICE, "301@127.0.0.1:5071", "sip:301@127.0.0.1:5071"),
    ),
    (
        "dialled at the inside TLS listener, no route, no proxy: 404 as that call",
        dataclasses.replace(FLAG, tls_port=5071), Invite(ALICE_AT, "alice@127.0.0.1", "erin@127.0.0.1:5071"),
        Outbound(ALICE, "erin@127.0.0.1:5071", NO_ROUTE),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("plan", "invite", "expected"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_routing_decides_where_an_invite_goes(plan: RoutePlan, invite: Invite, expected: Route) -> None:
    assert route(invite, plan) == expected


def test_the_b2bua_never_imports_its_runtime() -> None:
    """The hooks contract is owned by the B2BUA (gateway/hooks.py): the runtime implements it, and no module the
    B2BUA imports reaches back to the runtime (not even for types)."""
    gateway = Path(__file__).resolve().parents[2] / "voipgw" / "gateway"
    for name in ("b2bua", "hooks", "routing", "tones", "statuses", "model", "pipes"):
        tree = ast.parse((gateway / f"{name}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "voipgw.gateway.runtime" not in imported, name
