"""Run sipp (sip-tester) UAC and UAS scenarios on loopback and read back their call statistics.

Owns the sipp processes it starts (stopped by PID); never uses sipp's default, non-loopback addresses.

Pitfalls (measured): sipp binds the host's primary address unless given `-i 127.0.0.1 -mi 127.0.0.1`; its
UDP control port defaults to 8888 for every instance, so parallel sipps clash unless `-cp` differs; without
a tty it needs `-nostdin`; the stock scenarios break through a record-routing proxy (see scenarios/*.xml
for the edits); exit status 0 means every call succeeded, 1 some failed, 97/99 stopped early, 255 fatal;
the -stf CSV holds cumulative counters in its last row, refreshed every `-fd 1` second and at exit;
`-rtp_echo` echoes every call on the one `-mp` port, while uac_pcap gives each call its own media port.
"""

from __future__ import annotations

import csv
import re
import signal
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.support.requires import need
from tests.testbed.ports import PortBlock, port_is_bound, reserve_block
from tests.testbed.proc import ManagedProcess, TestbedError

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
# Block layout: SIP +0, control +1, media from +10 (sipp uses the -mp base and counts up per call).
BLOCK_SIZE = 100
CTRL_OFFSET = 1
MEDIA_OFFSET = 10
READY_TIMEOUT = 10.0


def scenario(name: str) -> Path:
    """The path of a bundled scenario: "uac", "uac_pcap" or "uas" (or any XML under scenarios/)."""
    path = SCENARIOS / f"{name}.xml"
    if not path.exists():
        raise FileNotFoundError(path)
    return path


def render_scenario(name: str, out: Path, **values: str) -> Path:
    """A bundled scenario with its ``@KEY@`` placeholders filled in (e.g. uac_pcap_pcmu's ``@PCAP@``, which
    must be absolute: sipp resolves play_pcap_audio against its own working directory)."""
    text = scenario(name).read_text(encoding="iso-8859-1")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = re.search(r"@[A-Z_]+@", text)
    if left is not None:
        raise ValueError(f"scenario {name}: {left.group(0)} is not filled in")
    out.write_text(text, encoding="iso-8859-1")
    return out


_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")


def write_rtp_pcap(
    out: Path, payloads: Sequence[bytes], *, payload_type: int, samples_per_frame: int = 160, frame_ms: int = 20
) -> Path:
    """An Ethernet/IPv4/UDP pcap of one RTP stream, one packet per payload every ``frame_ms``: what sipp's
    play_pcap_audio replays (it rewrites addresses and ports, and keeps RTP header and spacing)."""
    records = []
    for i, payload in enumerate(payloads):
        rtp = struct.pack("!BBHII", 0x80, payload_type | (0x80 if i == 0 else 0), i, i * samples_per_frame, 0x1234)
        udp = struct.pack("!HHHH", 6000, 6000, 8 + len(rtp) + len(payload), 0) + rtp + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + udp  # fmt: skip
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        t_us = i * frame_ms * 1000
        records.append(_PCAP_RECORD.pack(t_us // 1_000_000, t_us % 1_000_000, len(frame), len(frame)) + frame)
    out.write_bytes(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + b"".join(records))
    return out


@dataclass(frozen=True)
class SippResult:
    """sipp's exit status and the cumulative counters from its statistics CSV."""

    returncode: int
    created: int
    successful: int
    failed: int
    log: str

    @property
    def all_ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.successful == self.created


def _read_stats(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    rows = [r for r in rows if r]
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def _counter(stats: dict[str, str], key: str) -> int:
    try:
        return int(stats.get(key, "0") or 0)
    except ValueError:
        return 0


class _SippProcess:
    def __init__(
        self,
        workdir: Path,
        name: str,
        scenario_path: Path,
        ports: PortBlock | None,
        extra: list[str],
    ) -> None:
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.scenario_path = scenario_path
        self._own_ports = ports is None
        self.ports = ports if ports is not None else reserve_block(BLOCK_SIZE)
        self.stats_path = self.workdir / "stats.csv"
        self.proc: ManagedProcess | None = None
        self.extra = extra

    @property
    def sip_port(self) -> int:
        return self.ports[0]

    @property
    def media_port(self) -> int:
        return self.ports[MEDIA_OFFSET]

    def argv(self, target: list[str]) -> list[str]:
        return [
            "sipp", *target,
            "-sf", str(self.scenario_path),
            "-i", "127.0.0.1", "-mi", "127.0.0.1",
            "-p", str(self.sip_port), "-cp", str(self.ports[CTRL_OFFSET]), "-mp", str(self.media_port),
            "-nostdin",
            "-trace_stat", "-stf", str(self.stats_path), "-fd", "1",
            "-trace_err", "-error_file", str(self.workdir / "errors.log"),
            *self.extra,
        ]  # fmt: skip

    def start(self, target: list[str]) -> None:
        need("sipp")
        self.proc = ManagedProcess(self.argv(target), name=self.name, log_dir=self.workdir, cwd=self.workdir)

    def result(self, rc: int) -> SippResult:
        stats = _read_stats(self.stats_path)
        log = self.proc.log_text() if self.proc else ""
        errors = self.workdir / "errors.log"
        if errors.exists():
            log += "\n--- errors.log ---\n" + errors.read_text(errors="replace")[-4000:]
        return SippResult(
            returncode=rc,
            created=_counter(stats, "TotalCallCreated"),
            successful=_counter(stats, "SuccessfulCall(C)"),
            failed=_counter(stats, "FailedCall(C)"),
            log=log,
        )

    def stop(self) -> int:
        rc = -1
        if self.proc is not None:
            # SIGUSR1 is sipp's "dump stats and quit"; SIGTERM then SIGKILL if it does not.
            rc = self.proc.stop(grace=4.0, term_signals=(signal.SIGUSR1, signal.SIGTERM))
        if self._own_ports:
            self.ports.release()
        return rc


def run_uac(
    workdir: Path,
    target: str,
    *,
    calls: int = 5,
    rate: float = 5.0,
    limit: int | None = None,
    duration_ms: int = 0,
    service: str = "service",
    scenario_name: str = "uac",
    timeout: float = 30.0,
    proxy: str | None = None,
    extra: list[str] | None = None,
    ports: PortBlock | None = None,
    scenario_file: Path | None = None,
) -> SippResult:
    """Place `calls` calls to `target` ("host:port", the Request-URI) at `rate` per second (at most `limit` at
    once) and wait, bounded by `timeout` seconds, for sipp to exit. `duration_ms` is the pause between ACK and
    BYE. `proxy` ("host:port") sends the INVITEs there instead (sipp -rsa), e.g. a record-routing Kamailio.
    `scenario_file` (e.g. from render_scenario) replaces the bundled `scenario_name`."""
    args = ["-m", str(calls), "-r", f"{rate:g}", "-d", str(duration_ms), "-s", service,
            "-timeout", f"{int(timeout)}s", "-timeout_error",
            "-recv_timeout", "10000", "-max_retrans", "3"]  # fmt: skip
    if limit is not None:
        args += ["-l", str(limit)]
    if proxy is not None:
        args += ["-rsa", proxy]
    path = scenario_file if scenario_file is not None else scenario(scenario_name)
    uac = _SippProcess(workdir, f"sipp-uac-{service}", path, ports, args + (extra or []))
    try:
        uac.start([target])
        assert uac.proc is not None
        rc = uac.proc.wait_exit(timeout + 5.0)
        if rc is None:
            raise uac.proc.failure(f"did not exit within {timeout + 5.0:.0f}s")
        # The last -fd dump can lag the exit by up to a second; the final counters come from the exit dump.
        time.sleep(0.05)
        return uac.result(rc)
    finally:
        uac.stop()


class SippUas:
    """A sipp UAS answering every INVITE (scenario uas.xml) on `sip_port`, optionally echoing RTP.

    Stop with `stop()` (or leave the `with` block): returns the SippResult. With `calls`, sipp exits by itself
    after that many calls; `wait()` waits for it."""

    def __init__(
        self,
        workdir: Path,
        *,
        name: str = "uas",
        rtp_echo: bool = False,
        calls: int | None = None,
        scenario_name: str = "uas",
        extra: list[str] | None = None,
        ports: PortBlock | None = None,
        scenario_file: Path | None = None,
    ) -> None:
        """``scenario_file``: a rendered scenario (``render_scenario``) instead of the bundled ``scenario_name``."""
        args = list(extra or [])
        if rtp_echo:
            args.append("-rtp_echo")
        if calls is not None:
            args += ["-m", str(calls)]
        path = scenario_file if scenario_file is not None else scenario(scenario_name)
        self._p = _SippProcess(workdir, f"sipp-{name}", path, ports, args)
        self.result: SippResult | None = None

    @property
    def sip_port(self) -> int:
        return self._p.sip_port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    @property
    def media_port(self) -> int:
        return self._p.media_port

    def start(self) -> SippUas:
        try:
            self._p.start([])
            assert self._p.proc is not None
            self._p.proc.wait_until(lambda: port_is_bound(self.sip_port, "udp"), READY_TIMEOUT, "SIP port")
        except BaseException:
            self._p.stop()
            raise
        return self

    def wait(self, timeout: float) -> SippResult:
        """Wait for a UAS started with `calls` to exit by itself."""
        assert self._p.proc is not None
        rc = self._p.proc.wait_exit(timeout)
        if rc is None:
            raise TestbedError(f"sipp UAS still running after {timeout}s\n{self._p.proc.log_text()[-2000:]}")
        return self.stop()

    def stop(self) -> SippResult:
        if self.result is None:
            rc = self._p.stop()
            self.result = self._p.result(rc)
        return self.result

    def __enter__(self) -> SippUas:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def sipp_version() -> str:
    out = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=5.0, check=False)
    return (out.stdout + out.stderr).strip().splitlines()[0] if (out.stdout + out.stderr).strip() else ""
