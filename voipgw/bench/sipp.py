"""Driving sipp for the benchmarks: the UAC/UAS scenarios (generated, since ``voipgw`` ships without ``tests``),
the PCMU speech pcap the UAC replays, sipp's statistics CSVs, and one sipp process stopped by PID. No gateway here:
``voipgw.bench.churn`` composes these with the gateways."""

from __future__ import annotations

import contextlib
import csv
import math
import shutil
import signal
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voipgw.audio.g711 import ulaw_encode
from voipgw.audio.sources import speech_sample
from voipgw.audio.wav import read_wav
from voipgw.bench.common import BenchError

STOP_GRACE_S = 4.0
"""SIGUSR1, then SIGTERM, then SIGKILL: each gets this long to end sipp."""
FRAME_MS = 20
PCMU_FRAME = 160

_GPL = "<!-- Derived from SIPp's built-in uac_pcap and uas scenarios (sipp -sd ...; GPL-2.0-or-later). -->"

UAC_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
{gpl}
<!-- voipgw bench churn: offer PCMU only, play the speech pcap for the call's length (-d), then BYE. -->
<scenario name="voipgw churn UAC">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: {user} <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:{user}@[local_ip]:[local_port]
      Max-Forwards: 70
      Subject: voipgw bench churn
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[local_ip_type] [local_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"></recv>
  <recv response="180" optional="true"></recv>
  <recv response="183" optional="true"></recv>
  <recv response="200" rtd="true" crlf="true" rrs="true"></recv>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: {user} <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      [routes]
      CSeq: 1 ACK
      Contact: sip:{user}@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop>
    <action>
      <exec play_pcap_audio="{pcap}"/>
    </action>
  </nop>
  <pause/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: {user} <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      [routes]
      CSeq: 2 BYE
      Contact: sip:{user}@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"></recv>
  <ResponseTimeRepartition value="10, 20, 30, 40, 50, 100, 150, 200, 500, 1000"/>
  <CallLengthRepartition value="1000, 5000, 10000, 30000, 60000"/>
</scenario>
"""

UAS_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
{gpl}
<!-- voipgw bench churn: answer PCMU (sipp -rtp_echo sends every call's RTP back), wait for the BYE. -->
<scenario name="voipgw churn UAS">
  <recv request="INVITE" crlf="true"></recv>
  <send>
    <![CDATA[

      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Record-Route:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Record-Route:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv request="ACK" optional="true" rtd="true" crlf="true"></recv>
  <recv request="BYE"></recv>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <timewait milliseconds="500"/>
</scenario>
"""


def write_uac_scenario(out: Path, pcap: Path, user: str) -> Path:
    """The UAC scenario playing ``pcap`` (absolute: sipp resolves it against its own working directory), calling
    from ``user``."""
    out.write_text(UAC_SCENARIO.format(gpl=_GPL, user=user, pcap=pcap.resolve()), encoding="iso-8859-1")
    return out


def write_uas_scenario(out: Path) -> Path:
    out.write_text(UAS_SCENARIO.format(gpl=_GPL), encoding="iso-8859-1")
    return out


_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")


def write_pcmu_pcap(out: Path, seconds: float) -> Path:
    """The bundled speech sample, looped to ``seconds``, as one PCMU RTP stream in an Ethernet/IPv4/UDP pcap with a
    packet every 20 ms: what sipp's play_pcap_audio replays (it rewrites addresses and ports, keeps the spacing)."""
    pcm = read_wav(speech_sample(), 8000)
    frames = max(1, math.ceil(seconds * 1000 / FRAME_MS))
    needed = frames * PCMU_FRAME
    reps = -(-needed // len(pcm))
    looped = np.tile(pcm, reps)[:needed]
    records = []
    for i in range(frames):
        payload = ulaw_encode(looped[i * PCMU_FRAME : (i + 1) * PCMU_FRAME])
        rtp = struct.pack("!BBHII", 0x80, 0x80 if i == 0 else 0, i & 0xFFFF, (i * PCMU_FRAME) & 0xFFFFFFFF, 0xC4A1)
        udp = struct.pack("!HHHH", 6000, 6000, 8 + len(rtp) + len(payload), 0) + rtp + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + udp  # fmt: skip
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        t_us = i * FRAME_MS * 1000
        records.append(_PCAP_RECORD.pack(t_us // 1_000_000, t_us % 1_000_000, len(frame), len(frame)) + frame)
    out.write_bytes(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + b"".join(records))
    return out


# --- sipp's output -------------------------------------------------------------------------------------------


@dataclass
class SippStats:
    """Cumulative counters from sipp's ``-trace_stat`` CSV (its last row), plus what the periodic rows show."""

    created: int = 0
    successful: int = 0
    failed: int = 0
    concurrent_max: int = 0
    """Most calls open at once, over the ``-fd`` rows (sipp's CurrentCall)."""
    retransmissions: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    """Non-zero ``Failed...(C)`` counters by cause (e.g. ``TimeoutOnRecv``, ``CallRejected``)."""
    response_time_ms_mean: float | None = None
    """sipp's own mean INVITE -> 200 OK (``ResponseTime1(C)``)."""
    rows: int = 0


def _int(value: str | None) -> int:
    try:
        return int(float(value or 0))
    except ValueError:
        return 0


def _duration_ms(value: str | None) -> float | None:
    """sipp's ``HH:MM:SS:uuuuuu`` (or ``...:mmm``) durations, in ms."""
    if not value:
        return None
    parts = value.strip().split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return None
    h, m, s, frac = parts
    return (int(h) * 3600 + int(m) * 60 + int(s)) * 1000.0 + int(frac) / 10.0 ** (len(frac) - 3)


def parse_stat_csv(text: str) -> SippStats:
    """Parse sipp's ``-stf`` statistics CSV (``;``-separated, a header row, then one cumulative row per dump)."""
    rows = [r for r in csv.reader(text.splitlines(), delimiter=";") if r and any(c.strip() for c in r)]
    if len(rows) < 2:
        return SippStats()
    header = [h.strip() for h in rows[0]]
    data = [dict(zip(header, (c.strip() for c in r), strict=False)) for r in rows[1:]]
    last = data[-1]
    failures = {
        key[len("Failed") : -len("(C)")]: _int(value)
        for key, value in last.items()
        if key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)" and _int(value) > 0
    }
    return SippStats(
        created=_int(last.get("TotalCallCreated")),
        successful=_int(last.get("SuccessfulCall(C)")),
        failed=_int(last.get("FailedCall(C)")),
        concurrent_max=max(_int(r.get("CurrentCall")) for r in data),
        retransmissions=_int(last.get("Retransmissions(C)")),
        failures=failures,
        response_time_ms_mean=_duration_ms(last.get("ResponseTime1(C)")) or None,  # 0 when no call was answered
        rows=len(data),
    )


def parse_rtt_csv(text: str) -> list[float]:
    """Response times (ms) from sipp's ``-trace_rtt`` CSV: ``Date_ms;response_time_ms;rtd_no`` rows."""
    out: list[float] = []
    for row in csv.reader(text.splitlines(), delimiter=";"):
        if len(row) < 2:
            continue
        try:
            out.append(float(row[1]))
        except ValueError:
            continue  # the header
    return out


class SippProcess:
    """One sipp process: output in ``sipp.log`` in its own directory, stopped by PID."""

    def __init__(self, name: str, argv: list[str], cwd: Path) -> None:
        self.name = name
        self.cwd = cwd
        cwd.mkdir(parents=True, exist_ok=True)
        self.log = cwd / "sipp.log"
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        """SIGUSR1 (sipp's "dump the statistics and quit"), then SIGTERM, then SIGKILL; the exit status."""
        for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_GRACE_S)
        return self.proc.wait(STOP_GRACE_S)

    def log_tail(self, chars: int = 2000) -> str:
        text = ""
        for path in (self.log, self.cwd / "errors.log"):
            with contextlib.suppress(OSError):
                text += f"--- {path.name} ---\n" + path.read_text(errors="replace")[-chars:]
        return text


def sipp_check() -> str:
    """sipp's version line; a clear error when it is missing or cannot play pcap audio."""
    if shutil.which("sipp") is None:
        raise BenchError("sipp not found on PATH: install it (Debian/Ubuntu: apt-get install sip-tester)")
    out = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=10, check=False)
    text = (out.stdout + out.stderr).strip()
    version = next((line.strip() for line in text.splitlines() if "SIPp" in line), text[:80])
    if "PCAP" not in version:
        raise BenchError(f"this sipp ({version}) was built without pcap play, which the calls' audio needs")
    return version
