"""A Kamailio that can be started late or restarted on the same port (its location table is lost on restart)."""

from __future__ import annotations

from tests.support.requires import KAMAILIO, need
from tests.testbed.kamailio import READY_TIMEOUT, Kamailio, sip_options_probe
from tests.testbed.ports import reserve_block
from tests.testbed.proc import ManagedProcess


class RestartableKamailio(Kamailio):
    """A Kamailio whose UDP port is reserved before it first runs and kept across halt()/start(), so a test
    can start the PBX late or restart it (usrloc db_mode 0: the restart empties the location table)."""

    def reserve(self) -> tuple[str, int]:
        if self._ports is None:
            self._ports = reserve_block(1)
        return self.addr

    def start(self) -> RestartableKamailio:
        need("kamailio")
        self.reserve()
        self.dir = self.workdir / f"kamailio-{self.port}"
        run = self.dir / "run"
        run.mkdir(parents=True, exist_ok=True)
        if self.auth:
            from tests.testbed.kamailio import _write_dbtext

            _write_dbtext(self.dir / "dbtext", self.users)
        cfg = self.dir / "kamailio.cfg"
        cfg.write_text(self.config_text())
        argv = [KAMAILIO, "-f", str(cfg), "-DD", "-E", "-m", "64", "-M", "8"]
        argv += ["-Y", str(run), "-P", str(run / "kamailio.pid")]
        self.proc = ManagedProcess(argv, name=f"kamailio-{self.port}", log_dir=self.dir)
        try:
            self.proc.wait_until(lambda: sip_options_probe(self.port), READY_TIMEOUT, "an OPTIONS reply")
        except BaseException:
            self.stop()
            raise
        return self

    def halt(self) -> None:
        """Stop the process (by PID) but keep the port for the next start()."""
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
