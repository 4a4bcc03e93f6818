"""The narrow interface dialogs and registrations use to reach the SIP stack (``SipStack`` implements it).

It lets ``dialog.py`` and ``registration.py`` work without importing ``stack.py``: imports run one way,
stack -> dialog/registration -> reactor. Nothing here imports sippy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Reactor(Protocol):
    """What a dialog or a registration needs from the stack that runs sippy's reactor thread."""

    @property
    def local_host(self) -> str:
        """Our SIP host (the agent of the Warning headers we send)."""
        ...

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """asyncio -> reactor thread; raises SipStackStateError unless the stack is running."""
        ...

    def deliver(self, fn: Callable[..., Any], *args: Any) -> None:
        """reactor thread -> asyncio loop; dropped once the loop is closed (nobody listens any more)."""
        ...

    def contact(self, username: str | None) -> Any:
        """A sippy SipContact for ``username`` at this stack (reactor thread)."""
        ...

    def pick_transport(self, transport: str | None, target: Any) -> str:
        """``udp``, ``tcp`` or ``tls`` for a request to the sippy URL ``target``; raises if not enabled."""
        ...

    def new_transaction(self, msg: Any, on_reply: Callable[[Any], None]) -> Any:
        """Send ``msg`` as a sippy client transaction; ``on_reply`` gets each response (reactor thread)."""
        ...

    def time_out_transaction(self, tx: Any) -> None:
        """End client transaction ``tx`` as timed out (its callback gets a 408), stopping retransmissions."""
        ...

    def dialog_ended(self, core: Any) -> None:
        """A dialog is over: the stack stops tracking it (hang-up on shutdown, ``active_calls``)."""
        ...

    def count(self, counter: str) -> None:
        """Add one to the ``SipStats`` counter named ``counter`` (reactor thread)."""
        ...

    def registration_started(self, core: Any) -> None:
        """A registration client is live: the stack unregisters or closes it on shutdown."""
        ...
