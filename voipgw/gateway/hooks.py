"""The B2BUA's hooks contract: what an operations layer (``voipgw.gateway.runtime``) adds to a running gateway:
the inside registrar, routing by registration, PBX credentials and accounting. Owned by its consumer, the B2BUA:
it names no implementation and never imports one."""

from __future__ import annotations

from typing import Protocol

from voipgw.config import PhoneConfig
from voipgw.gateway.model import Bridge, InsideUser
from voipgw.gateway.routing import InsideRegistrar
from voipgw.sip import SipStack
from voipgw.sip.registrar import Registrar


class B2buaHooks(Protocol):
    """Called by the Gateway on its event loop; a gateway without hooks (flag mode) serves static phones only."""

    def inside_registrar(self) -> Registrar:
        """The inside phones' registrar on the gateway's SIP socket."""
        ...

    def stack_started(self, stack: SipStack) -> None:
        """The SIP stack is up (e.g. to have it challenge INVITEs)."""
        ...

    def inside_routing(self) -> InsideRegistrar:
        """What routing may consult besides the static phones: registrations, outside names, the PBX dial plan."""
        ...

    def phone_config(self, user: InsideUser, cfg: PhoneConfig) -> PhoneConfig:
        """The settings of ``user``'s outside legs, with what the operator configured (PBX credentials)."""
        ...

    def call_finished(self, bridge: Bridge) -> None:
        """A call is over (counted once, for the metrics)."""
        ...
