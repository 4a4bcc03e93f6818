"""The Sippy B2BUA that ships in the installed sippy package (``sippy/b2bua.py``), as a loopback PBX for tests:
every INVITE it gets is re-originated as a new dialog toward one fixed next hop (a Kamailio registrar or a phone).

Owns only the b2bua process it starts (its own port, pid file, log and CLI socket under ``workdir``), stops it by
PID (its process group); binds 127.0.0.1 only.

Command line (``python -m sippy.b2bua``): ``-f`` foreground, ``-u`` no RADIUS auth, ``-A 0`` no accounting,
``-l/-p`` the SIP address and port, ``-s HOST:PORT`` the static route (the called user part is kept), ``-H`` hide
the Call-ID, ``-P`` pid file, ``-L`` log file, ``-c`` its CLI socket (default /var/run/b2bua.sock, so always given).
``b2bua_simple.py`` is not used: it passes the caller's Call-ID on unchanged, so it is not a B2BUA in the sense that
matters here.

Measured (sippy 2.5, tests/testbed/test_sippy_b2bua.py, 2026-12-07):
- Call-ID: the callee's leg gets ``md5(caller Call-ID)-b2b_1`` with ``-H`` (default here), else ``<caller
  Call-ID>-b2b_1``; in-dialog requests (ACK, BYE, re-INVITE) are re-originated on the other leg with its own
  Call-ID, tags and CSeq. Replies carry the leg's own Call-ID back.
- From/To: the callee sees ``From: <sip:<caller user>@127.0.0.1>;tag=<its own>`` (the B2BUA's address as host)
  and ``To: <sip:<called user>@<next-hop host>>`` (port dropped), ``Contact: Anonymous <sip:<caller
  user>@127.0.0.1:<b2bua port>>``, ``User-Agent: Sippy B2BUA (RADIUS)``, a random CSeq and ``Expires: 300``.
- SDP: relayed byte for byte in both directions (offer, answer, re-INVITE), ``a=voipgw`` included: the B2BUA
  never parses a body unless it runs with an rtpproxy (``-r``) or a codec filter (``-F``), and it runs with neither.
- Media: NOT relayed: without rtpproxy the ``c=``/``m=`` addresses are the endpoints' own, so RTP flows
  directly between them (a capture "on the PBX side" is then simply the endpoints' RTP ports).
- SIGTERM: a "safe stop" that disconnects every call and exits; a second signal or SIGKILL follows if not.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import TracebackType

from tests.testbed.kamailio import READY_TIMEOUT, sip_options_probe
from tests.testbed.ports import PortBlock, reserve_block
from tests.testbed.proc import ManagedProcess, TestbedError

STOP_GRACE_S = 4.0


class SippyB2bua:
    """``with SippyB2bua(tmp_path, next_hop=("127.0.0.1", bob_port)) as pbx: call sip:bob@127.0.0.1:{pbx.port}``.

    ``next_hop``: where every call goes (``sip:<called user>@host:port``); a registrar (Kamailio) looks the user
    up there. ``hide_call_id``: the far leg's Call-ID is a hash of the caller's (True, the default) or the caller's
    with ``-b2b_1`` appended (False); either way each leg has its own."""

    def __init__(self, workdir: Path, *, next_hop: tuple[str, int], hide_call_id: bool = True) -> None:
        self.workdir = workdir
        self.next_hop = next_hop
        self.hide_call_id = hide_call_id
        self._ports: PortBlock | None = None
        self.proc: ManagedProcess | None = None
        self.dir: Path | None = None

    @property
    def port(self) -> int:
        if self._ports is None:
            raise TestbedError("sippy b2bua not started")
        return self._ports[0]

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def argv(self) -> list[str]:
        assert self.dir is not None
        host, port = self.next_hop
        argv = [sys.executable, "-m", "sippy.b2bua", "-f", "-u", "-A", "0"]
        argv += ["-l", "127.0.0.1", "-p", str(self.port), "-s", f"{host}:{port}"]
        argv += ["-P", str(self.dir / "b2bua.pid"), "-L", str(self.dir / "b2bua-file.log")]
        argv += ["-c", str(self.dir / "b2bua.sock")]
        if self.hide_call_id:
            argv.append("-H")
        return argv

    def start(self) -> SippyB2bua:
        self._ports = reserve_block(1)
        try:
            self.dir = self.workdir / f"sippy-b2bua-{self.port}"
            self.dir.mkdir(parents=True, exist_ok=True)
            self.proc = ManagedProcess(
                self.argv(), name=f"sippy-b2bua-{self.port}", log_dir=self.dir, env={"PYTHONUNBUFFERED": "1"}
            )
            # It answers OPTIONS with 501 Not Implemented: any SIP status line means its socket is up.
            self.proc.wait_until(lambda: sip_options_probe(self.port), READY_TIMEOUT, "an OPTIONS reply")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> int:
        rc = 0
        if self.proc is not None:
            rc = self.proc.stop(grace=STOP_GRACE_S, term_signals=(signal.SIGTERM, signal.SIGTERM))
            self.proc = None
        if self._ports is not None:
            self._ports.release()
            self._ports = None
        return rc

    def log_text(self) -> str:
        return self.proc.log_text() if self.proc is not None else ""

    def __enter__(self) -> SippyB2bua:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
