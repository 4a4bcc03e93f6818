"""Call setup time over SIP/UDP, TCP and TLS for both key-exchange suites, in one run (part of ``voipgw bench call``).

Real ``voipgw listen``/``voipgw call`` processes on 127.0.0.1, interleaved round by round so machine noise hits
every combination alike; the setup time is the caller's own INVITE -> 200 OK (its summary's ``setup_ms``), since a
relay cannot see into TCP or TLS. The TLS certificate is a throwaway self-signed one for 127.0.0.1, pinned by the
caller; its key never leaves the bench's temporary folder.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from voipgw.audio.sources import speech_sample
from voipgw.bench.common import BenchError, BenchProcess, free_udp_port
from voipgw.call import Security

CLASSICAL = "x25519"
HYBRID = "x25519-mlkem768"
COMBOS = (("udp", CLASSICAL), ("tcp", CLASSICAL), ("tcp", HYBRID), ("tls", CLASSICAL), ("tls", HYBRID))
"""Hybrid over UDP is not a combination: its ~2.8 KB INVITE would be IP-fragmented, so it is never offered there."""
NOT_OFFERED = {("udp", HYBRID): "not offered over UDP: the ~2.8 KB INVITE would be IP-fragmented (RFC 3261 18.1.1)"}
READY_TIMEOUT_S = 15.0
CALL_TIMEOUT_S = 30.0
SETUP_CALL_S = 0.2
SECURE = {Security.SECURE_UNVERIFIED.value, Security.SECURE_VERIFIED.value}


@dataclass
class _Listener:
    process: BenchProcess
    uri: str


def _self_signed(workdir: Path) -> tuple[Path, Path, str]:
    """A certificate for 127.0.0.1 (PEM files) and its SHA-256 fingerprint, for the caller to pin."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "voipgw bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = workdir / "bench-cert.pem", workdir / "bench-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _toml(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


class _Run:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.cert, self.key, self.pin = _self_signed(workdir)
        self.listeners: dict[str, _Listener] = {}
        self.seq = 0

    def _spawn(self, name: str, *args: str) -> BenchProcess:
        argv = [sys.executable, "-m", "voipgw.cli.main", "--home", str(self.workdir / f"{name}-home"), *args]
        return BenchProcess.spawn(name, argv, self.workdir / f"{name}.log", self.env)

    def start(self, transport: str) -> None:
        """One callee per transport, accepting both suites (the caller's offer decides)."""
        port = free_udp_port()
        lines = [
            f'suites = ["{CLASSICAL}", "{HYBRID}"]',
            f'transport = "{"auto" if transport == "udp" else transport}"',
        ]
        tls_port = 0
        if transport == "tls":
            tls_port = free_udp_port()
            lines += [f'tls_cert_file = "{self.cert}"', f'tls_key_file = "{self.key}"', f"tls_port = {tls_port}"]
        cfg = _toml(self.workdir / f"bob-{transport}.toml", ['aor = "bob@127.0.0.1"', *lines])
        process = self._spawn(
            f"bob-{transport}",
            "listen",
            "--config",
            str(cfg),
            "--listen",
            f"127.0.0.1:{port}",
            "--auto-answer",
            "--record",
            str(self.workdir / f"bob-{transport}.wav"),
        )
        uri = {
            "udp": f"sip:bob@127.0.0.1:{port}",
            "tcp": f"sip:bob@127.0.0.1:{port};transport=tcp",
            "tls": f"sip:bob@127.0.0.1:{tls_port};transport=tls",
        }[transport]
        self.listeners[transport] = _Listener(process, uri)
        process.wait_for("listening as", READY_TIMEOUT_S, f"the {transport} callee")

    def call(self, transport: str, suite: str) -> dict[str, Any]:
        self.seq += 1
        listener = self.listeners[transport]
        lines = ['aor = "alice@127.0.0.1"', f'suites = ["{CLASSICAL}"' + (f', "{HYBRID}"]' if suite == HYBRID else "]")]
        lines.append(f'transport = "{"udp" if transport == "udp" else transport}"')
        if transport == "tls":
            lines.append(f'tls_pinned_sha256 = "{self.pin}"')
        cfg = _toml(self.workdir / f"alice-{self.seq}.toml", lines)
        summary = self.workdir / f"alice-{self.seq}.json"
        caller = self._spawn(
            f"alice-{transport}",
            "call",
            listener.uri,
            "--config",
            str(cfg),
            "--listen",
            f"127.0.0.1:{free_udp_port()}",
            "--duration",
            str(SETUP_CALL_S),
            "--play",
            str(speech_sample()),
            "--summary-json",
            str(summary),
        )
        try:
            rc = caller.proc.wait(CALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            caller.proc.kill()
            caller.proc.wait(5)
            raise BenchError(f"{transport}/{suite} call did not finish:\n{caller.log_tail()}") from None
        if rc != 0:
            raise BenchError(f"{transport}/{suite} call failed (exit {rc}):\n{caller.log_tail()}")
        data: dict[str, Any] = json.loads(summary.read_text())
        if data.get("security") not in SECURE or data.get("suite") != suite or data.get("setup_ms") is None:
            raise BenchError(f"{transport}/{suite} call ended {data.get('security')!r} {data.get('suite')!r}")
        return data

    def stop(self) -> None:
        for listener in self.listeners.values():
            listener.process.stop()


def run(rounds: int = 5, workdir: Path | None = None) -> dict[str, Any]:
    """Setup-time medians per (transport, suite) and their ratio to classical over UDP, measured in one run."""
    own = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="voipgw-bench-transports-")) if workdir is None else workdir
    bench = _Run(wd)
    samples: dict[tuple[str, str], list[float]] = {combo: [] for combo in COMBOS}
    try:
        for transport in ("udp", "tcp", "tls"):
            bench.start(transport)
        for combo in COMBOS:  # one warm-up call each: first-call imports and TLS session setup are not the subject
            bench.call(*combo)
        for _ in range(rounds):
            for combo in COMBOS:
                samples[combo].append(float(bench.call(*combo)["setup_ms"]))
    finally:
        bench.stop()
        if own:
            shutil.rmtree(wd, ignore_errors=True)
    base = statistics.median(samples[("udp", CLASSICAL)])
    table: dict[str, Any] = {}
    for (transport, suite), values in samples.items():
        med = statistics.median(values)
        table[f"{transport}/{suite}"] = {"setup_ms_median": round(med, 2), "ratio_vs_udp_x25519": round(med / base, 2)}
    for (transport, suite), why in NOT_OFFERED.items():
        table[f"{transport}/{suite}"] = {"setup_ms_median": None, "ratio_vs_udp_x25519": None, "why": why}
    return {"rounds": rounds, "setup_by_transport": table}
