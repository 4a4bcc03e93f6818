"""A man in the middle probing a callee's SAS, as issue 13 describes it: it calls with its own key exchange (it is
the offerer, so it holds every key of its leg and opens every frame the callee seals), learns the callee's SAS as
soon as it can compute it, and gives up (CANCEL) at once, never answering anything. Built from voipgw's own call
engine (``voipgw.leg.Leg``) on a real SIP stack and real sockets; only the "give up as soon as the SAS is known, or
after ``patience_s``" policy is the attacker's."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from ratchet.handshake import NonceCache
from ratchet.identity import IdentityKey
from voipgw.active_call import Spawner
from voipgw.audio.sources import SilenceSource
from voipgw.call import CallState
from voipgw.config import PhoneConfig
from voipgw.leg import Leg, LegContext
from voipgw.sip import SipStack

ATTACKER_HOST = "127.0.0.66"


@dataclass(frozen=True)
class Attempt:
    """One probe: whether the attacker got as far as the callee's early dialog, and the SAS it learned (None: the
    callee never revealed its contribution before the attacker gave up)."""

    early: bool
    sas: str | None
    state: str
    reason: str
    answered: bool = False
    """The call was answered (a 200 OK) before the prober could end it."""


class SasProber:
    """``async with SasProber(config) as p: await p.attempt(uri)``: one SIP stack and one identity (fresh, or the
    one given), one attempt at a time."""

    def __init__(self, config: PhoneConfig, identity: IdentityKey | None = None) -> None:
        self.config = config
        self.identity = identity or IdentityKey.generate()
        self.stack: SipStack | None = None
        self.background = Spawner()

    async def __aenter__(self) -> SasProber:
        self.stack = SipStack(self.config.listen_host, self.config.listen_port, asyncio.get_running_loop())
        await self.stack.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.background.settle()
        if self.stack is not None:
            await self.stack.stop()

    async def attempt(self, target_uri: str, patience_s: float) -> Attempt:
        """Call ``target_uri``; give up (CANCEL, or BYE once answered) the moment the SAS is computable, or
        ``patience_s`` after the 183 (or after the INVITE, if no 183 ever comes)."""
        assert self.stack is not None
        context = LegContext(self.stack, self.identity, self.config.aor, self.config, NonceCache(max_skew_s=60))
        leg = Leg(context, self.background)
        placing = asyncio.ensure_future(leg.place(target_uri, source=SilenceSource(), sink=None))
        deadline = time.monotonic() + patience_s
        early = False
        sas: str | None = None
        while time.monotonic() < deadline:
            call = leg.call
            state = call.record.state if call is not None else None
            if state is CallState.EARLY and not early:
                early, deadline = True, time.monotonic() + patience_s
            if call is not None and call.session is not None and call.session.sas is not None:
                sas = call.session.sas.b32
                break
            if call is not None and call.record.finished:
                break
            await asyncio.sleep(0.005)
        if not placing.done():
            for _ in range(100):  # the INVITE may still be on its way: retry until the CANCEL can go
                if leg.cancel() or placing.done():
                    break
                await asyncio.sleep(0.02)
        call = await asyncio.wait_for(placing, 20.0)
        with contextlib.suppress(Exception):
            call.hangup()
        await leg.close()
        state_name = call.record.state.value if call.record.state else "new"
        return Attempt(early, sas, state_name, call.record.reason, call.record.answered)


def prober_config(aor: str, port: int, proxy: tuple[str, int], username: str, password: str) -> PhoneConfig:
    """The attacker's settings: its own address (127.0.0.66), calling through ``proxy`` with the PBX credentials of
    ``username`` (the PBX is the attacker, or lets it in)."""
    return PhoneConfig(
        aor=aor,
        listen_host=ATTACKER_HOST,
        listen_port=port,
        proxy=proxy,
        username=username,
        password=password,
        transport="udp",
        no_answer_timeout_s=30.0,
    )
