"""Test helper: the web phone's test site: a real Kamailio (digest auth), gateway A (``voipgw gateway --config``
with ``[web]`` on) fronting the web user alice, and bob's voipgw softphone registered at the PBX (the same home
each time, so the same identity key). Everything is stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.config_gateway import PASSWORDS, GatewayProc, start_config_gateway
from tests.support.phones import SPEECH, PhoneProc, start_caller, start_listener
from tests.testbed.kamailio import Kamailio

WEB_PW = "alice-web-pw"
ALICE = {"outside_aor": "alice@127.0.0.1", "password": PASSWORDS["alice"], "inside_password": WEB_PW}
"""The web user: no phone of its own (no inside_contact), a PBX account and the password the page logs in with."""


@dataclass
class WebSite:
    pbx: Kamailio
    gw: GatewayProc
    workdir: Path

    def bob(self, folder: str = "bob") -> PhoneProc:
        """bob's auto-answering softphone for one call, recording to ``bob.wav``; another ``folder`` is another
        home: a new identity key for the same AOR."""
        reg = ["--registrar", f"127.0.0.1:{self.pbx.port}", "--username", "bob", "--password", PASSWORDS["bob"]]
        workdir = self.workdir / folder
        workdir.mkdir(exist_ok=True)
        return start_listener(workdir, "bob", *reg, tap=False)

    def bob_calls_alice(self) -> PhoneProc:
        """bob's softphone (the same identity) calls alice through the PBX, playing the speech WAV, recording."""
        reg = ["--registrar", f"127.0.0.1:{self.pbx.port}", "--username", "bob", "--password", PASSWORDS["bob"]]
        workdir = self.workdir / "bob"
        workdir.mkdir(exist_ok=True)
        uri = f"sip:alice@127.0.0.1:{self.pbx.port}"
        return start_caller(workdir, "bob", uri, "--play", str(SPEECH), "--duration", "30", *reg, tap=False)


@contextmanager
def web_site(workdir: Path) -> Iterator[WebSite]:
    with Kamailio(workdir, users=PASSWORDS, auth=True) as pbx:
        gw: GatewayProc | None = None
        try:
            gw = start_config_gateway(
                workdir, "gwa", pbx.addr, {"alice": ALICE}, extra={"inside": {"auth": True}}, web=True
            )
            gw.wait_registered()
            yield WebSite(pbx, gw, workdir)
        finally:
            if gw is not None:
                gw.stop()
