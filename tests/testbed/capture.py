"""Capture UDP payloads on loopback (tshark, or a raw AF_PACKET sniffer) and judge if they carry plain audio.

Reads packets only; never injects or modifies traffic, never captures off loopback.

Pitfalls (measured): on `lo` an AF_PACKET socket sees every packet twice (OUTGOING and HOST), so OUTGOING
copies are dropped; tshark is ready only after it prints "Capturing on" (packets sent before that are lost)
and must be stopped with SIGINT to flush the pcap; tshark dumps `udp.payload` and RTP is parsed here, so both
backends return the same datagrams; RTCP shares the RTP port range and is told apart by its packet type
(200-204 in the second byte); libopus "decodes" most random bytes into noise, so the plaintext verdict rests
on correlation with the reference speech, not on decode success alone (plain PCMU: 0.9999, plain Opus:
~0.97, XOR-sealed Opus or the other direction's tone: < 0.15).
"""

from __future__ import annotations

import queue
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from tests.support.requires import need
from tests.testbed import audio_check
from tests.testbed.proc import ManagedProcess, TestbedError

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
ETH_HEADER = 14
UDP_HEADER = 8
RAW_RCVBUF = 8 << 20
TSHARK_READY_TIMEOUT = 10.0
TSHARK_READ_TIMEOUT = 30.0
MIN_STREAM_PACKETS = 10
OPUS_RATE = 48000
OPUS_FRAME_SAMPLES = 960  # 20 ms at 48 kHz, substituted for packets that do not decode
STATIC_PT = {0: "PCMU", 8: "PCMA", 9: "G722"}


@dataclass(frozen=True)
class CapturedPacket:
    """One UDP datagram seen on loopback (payload = the whole UDP payload, RTP header included)."""

    src_port: int
    dst_port: int
    payload: bytes

    def rtp(self) -> RtpPacket | None:
        return parse_rtp(self.payload)


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket | None:
    """The RTP view of a datagram, or None for RTCP, STUN or anything that is not RTP version 2."""
    if len(data) < 12 or data[0] >> 6 != 2 or 192 <= data[1] <= 223:
        return None
    cc = data[0] & 0x0F
    offset = 12 + 4 * cc
    if data[0] & 0x10:  # header extension
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
    end = len(data)
    if data[0] & 0x20:  # padding: the last byte says how much
        end -= data[-1]
    if offset > end:
        return None
    _, m_pt, seq, ts, ssrc = struct.unpack_from("!BBHII", data, 0)
    return RtpPacket(m_pt & 0x7F, bool(m_pt & 0x80), seq, ts, ssrc, bytes(data[offset:end]))


def _in_ports(pkt: CapturedPacket, lo: int, hi: int) -> bool:
    return lo <= pkt.src_port <= hi or lo <= pkt.dst_port <= hi


DRAIN_S = 0.3
"""How long a stopping capture keeps reading frames already queued (bounded: loopback is shared)."""


class RawCapture:
    """AF_PACKET sniffer thread on `lo` (needs root/CAP_NET_RAW) keeping UDP datagrams whose source or
    destination port is in [port_lo, port_hi]."""

    def __init__(self, port_lo: int, port_hi: int) -> None:
        self.port_lo, self.port_hi = port_lo, port_hi
        self._packets: list[CapturedPacket] = []
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._errors: queue.Queue[BaseException] = queue.Queue()

    def start(self) -> RawCapture:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RAW_RCVBUF)
        sock.bind(("lo", 0))
        sock.settimeout(0.1)
        self._sock = sock
        self._thread = threading.Thread(target=self._loop, name="raw-capture", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        assert self._sock is not None
        try:
            drain_until: float | None = None
            while True:
                if self._stop.is_set():
                    # other loopback traffic may never pause: drain for a bounded time only
                    if drain_until is None:
                        drain_until = time.monotonic() + DRAIN_S
                    elif time.monotonic() > drain_until:
                        break
                try:
                    frame, addr = self._sock.recvfrom(65535)
                except TimeoutError:
                    # Stop only once the socket is drained: on loopback a frame is queued here the moment it is
                    # sent, so everything sent before stop() is still read (a test's last packets included).
                    if self._stop.is_set():
                        break
                    continue
                if addr[2] == PACKET_OUTGOING:
                    continue
                pkt = _parse_frame(frame)
                if pkt is not None and _in_ports(pkt, self.port_lo, self.port_hi):
                    self._packets.append(pkt)
        except BaseException as exc:  # surfaced by stop(): a dead sniffer must not look like "no packets"
            self._errors.put(exc)

    def stop(self) -> list[CapturedPacket]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if not self._errors.empty():
            raise TestbedError(f"raw capture failed: {self._errors.get()!r}")
        return list(self._packets)

    @property
    def packets(self) -> list[CapturedPacket]:
        return list(self._packets)

    def __enter__(self) -> RawCapture:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _parse_frame(frame: bytes) -> CapturedPacket | None:
    if len(frame) < ETH_HEADER + 20 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IP:
        return None
    ip = ETH_HEADER
    ihl = (frame[ip] & 0x0F) * 4
    if frame[ip + 9] != socket.IPPROTO_UDP:
        return None
    if struct.unpack_from("!H", frame, ip + 6)[0] & 0x1FFF:
        return None  # a non-first fragment has no UDP header
    total = struct.unpack_from("!H", frame, ip + 2)[0]
    udp = ip + ihl
    if len(frame) < udp + UDP_HEADER:
        return None
    sport, dport, ulen = struct.unpack_from("!HHH", frame, udp)
    end = min(ip + total, udp + ulen, len(frame))
    return CapturedPacket(sport, dport, bytes(frame[udp + UDP_HEADER : end]))


class TsharkCapture:
    """tshark on `lo` with a BPF port-range filter, writing a pcap in `workdir`; `stop()` returns packets."""

    def __init__(self, workdir: Path, port_lo: int, port_hi: int, name: str = "tshark") -> None:
        self.workdir = workdir
        self.port_lo, self.port_hi = port_lo, port_hi
        self.name = name
        self.pcap = workdir / f"{name}.pcap"
        self.proc: ManagedProcess | None = None
        self._packets: list[CapturedPacket] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("tshark") is not None

    def start(self) -> TsharkCapture:
        need("tshark")
        self.workdir.mkdir(parents=True, exist_ok=True)
        bpf = f"udp portrange {self.port_lo}-{self.port_hi}"
        self.proc = ManagedProcess(
            ["tshark", "-n", "-i", "lo", "-f", bpf, "-w", str(self.pcap)],
            name=self.name,
            log_dir=self.workdir,
        )
        try:
            proc = self.proc
            proc.wait_until(lambda: "Capturing on" in proc.log_text(), TSHARK_READY_TIMEOUT, "'Capturing on'")
        except BaseException:
            self.proc.stop(grace=1.0, term_signals=(signal.SIGINT,))
            raise
        return self

    def stop(self) -> list[CapturedPacket]:
        if self._packets is not None:
            return self._packets
        if self.proc is not None:
            self.proc.stop(grace=5.0, term_signals=(signal.SIGINT, signal.SIGTERM))
        self._packets = read_pcap(self.pcap) if self.pcap.exists() else []
        return self._packets

    def __enter__(self) -> TsharkCapture:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def read_pcap(pcap: Path) -> list[CapturedPacket]:
    """Every UDP datagram in `pcap`, through `tshark -r` (fields: ports and the raw UDP payload)."""
    out = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), "-Y", "udp", "-T", "fields",
         "-e", "udp.srcport", "-e", "udp.dstport", "-e", "udp.payload"],
        capture_output=True, text=True, timeout=TSHARK_READ_TIMEOUT, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise TestbedError(f"tshark -r {pcap} failed rc={out.returncode}: {out.stderr.strip()}")
    packets = []
    for line in out.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or not parts[0]:
            continue
        packets.append(CapturedPacket(int(parts[0]), int(parts[1]), bytes.fromhex(parts[2].replace(":", ""))))
    return packets


class Capture:
    """Either backend behind one interface: tshark when installed (and `backend` allows), else raw socket."""

    def __init__(self, workdir: Path, port_lo: int, port_hi: int, backend: str = "auto") -> None:
        if backend not in ("auto", "tshark", "raw"):
            raise ValueError(f"backend must be auto, tshark or raw, not {backend!r}")
        use_tshark = backend == "tshark" or (backend == "auto" and TsharkCapture.available())
        self.backend = "tshark" if use_tshark else "raw"
        self._impl: TsharkCapture | RawCapture = (
            TsharkCapture(workdir, port_lo, port_hi) if use_tshark else RawCapture(port_lo, port_hi)
        )
        self.packets: list[CapturedPacket] = []

    def __enter__(self) -> Capture:
        self._impl.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.packets = self._impl.stop()


# --- plaintext detection ---------------------------------------------------------------------------


def _g711_tables() -> tuple[np.ndarray, np.ndarray]:
    codes = np.arange(256)
    u = ~codes & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    ulaw = np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.float64) / 32768.0
    a = codes ^ 0x55
    seg = (a & 0x70) >> 4
    mant = (a & 0x0F) << 4
    mag = np.where(seg == 0, mant + 8, np.where(seg == 1, mant + 0x108, (mant + 0x108) << np.maximum(seg - 1, 0)))
    alaw = np.where(a & 0x80, mag, -mag).astype(np.float64) / 32768.0
    return ulaw, alaw


_ULAW, _ALAW = _g711_tables()


def encode_g711(samples: audio_check.Samples, law: str) -> bytes:
    """Nearest-code G.711 encoding of float samples (for synthetic RTP in tests; not bit-exact G.711)."""
    table = _ULAW if law == "PCMU" else _ALAW
    order = np.argsort(table)
    sorted_vals = table[order]
    idx = np.clip(np.searchsorted(sorted_vals, np.clip(samples, -1.0, 1.0)), 1, len(table) - 1)
    left, right = sorted_vals[idx - 1], sorted_vals[idx]
    nearest = np.where(np.abs(samples - left) <= np.abs(samples - right), idx - 1, idx)
    return bytes(order[nearest].astype(np.uint8))


def decode_g711(payload: bytes, law: str) -> audio_check.Samples:
    table = _ULAW if law == "PCMU" else _ALAW
    out: audio_check.Samples = table[np.frombuffer(payload, dtype=np.uint8)]
    return out


@dataclass(frozen=True)
class StreamVerdict:
    """How one captured RTP stream looks when decoded as `codec` and compared with the reference speech."""

    src_port: int
    dst_port: int
    ssrc: int
    codec: str
    packets: int
    decoded: int
    correlation: float
    windowed_correlation: float
    rms: float


@dataclass(frozen=True)
class PlaintextVerdict:
    """The highest correlation with the reference over all streams (`correlation`), and per-stream detail.
    A plaintext call scores > 0.9; ciphertext scores near the tone-vs-speech control (about 0.05)."""

    correlation: float
    streams: tuple[StreamVerdict, ...]

    @property
    def rtp_packets(self) -> int:
        return sum(s.packets for s in self.streams)


def rtp_streams(packets: Iterable[CapturedPacket]) -> dict[tuple[int, int, int], list[RtpPacket]]:
    """RTP packets grouped by (src_port, dst_port, ssrc), in capture order."""
    streams: dict[tuple[int, int, int], list[RtpPacket]] = {}
    for pkt in packets:
        rtp = pkt.rtp()
        if rtp is not None:
            streams.setdefault((pkt.src_port, pkt.dst_port, rtp.ssrc), []).append(rtp)
    return streams


def _decode_stream(rtps: Sequence[RtpPacket], codec: str) -> tuple[audio_check.Samples, int, int]:
    if codec in ("PCMU", "PCMA"):
        pcm = decode_g711(b"".join(p.payload for p in rtps), codec)
        return pcm, 8000, len(rtps)
    if codec != "opus":
        raise ValueError(f"cannot decode {codec!r}: PCMU, PCMA and opus are supported")
    import opuslib  # only the Opus path needs libopus

    decoder = opuslib.Decoder(OPUS_RATE, 1)
    chunks: list[audio_check.Samples] = []
    decoded = 0
    for p in rtps:
        try:
            raw = decoder.decode(p.payload, OPUS_FRAME_SAMPLES * 6)
            decoded += 1
            chunks.append(np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0)
        except Exception:  # opuslib raises OpusError on invalid packets; count it as undecodable
            chunks.append(np.zeros(OPUS_FRAME_SAMPLES))
    return (np.concatenate(chunks) if chunks else np.zeros(0)), OPUS_RATE, decoded


def looks_like_plain_audio(
    packets: Iterable[CapturedPacket],
    reference: Path,
    codec: str | None = None,
    min_packets: int = MIN_STREAM_PACKETS,
) -> PlaintextVerdict:
    """Decode each RTP stream's payloads as `codec` (None: by static payload type, dynamic ones as opus) and
    correlate with the `reference` WAV. Streams with fewer than `min_packets` packets (10), or G.722, are skipped:
    a best-lag correlation of a fraction of a second of noise against speech reaches 0.3 by chance."""
    ref, ref_rate = audio_check.read_wav(reference)
    verdicts: list[StreamVerdict] = []
    for (sport, dport, ssrc), rtps in rtp_streams(packets).items():
        if len(rtps) < min_packets:
            continue
        name = codec or STATIC_PT.get(rtps[0].payload_type, "opus")
        if name == "G722":
            continue
        pcm, rate, decoded = _decode_stream(rtps, name)
        ref_r = audio_check.resample(ref, ref_rate, rate)
        verdicts.append(
            StreamVerdict(
                src_port=sport,
                dst_port=dport,
                ssrc=ssrc,
                codec=name,
                packets=len(rtps),
                decoded=decoded,
                correlation=audio_check.correlation(ref_r, pcm),
                windowed_correlation=audio_check.windowed_correlation(ref_r, pcm, rate),
                rms=audio_check.rms(pcm),
            )
        )
    best = max((max(v.correlation, v.windowed_correlation) for v in verdicts), default=0.0)
    return PlaintextVerdict(correlation=best, streams=tuple(verdicts))


DTMF_DIGITS = "0123456789*#ABCD"
TELEPHONE_EVENT_SIZE = 4


def plain_dtmf(packets: Iterable[CapturedPacket]) -> str:
    """Digits readable on the wire as RFC 4733 telephone-events (dynamic payload type, 4-byte payload, event
    0-15), one per (SSRC, event timestamp) in capture order; "" when none. Sealed frames are never 4 bytes."""
    digits: list[str] = []
    seen: set[tuple[int, int, int]] = set()
    for pkt in packets:
        rtp = pkt.rtp()
        if rtp is None or rtp.payload_type < 96 or len(rtp.payload) != TELEPHONE_EVENT_SIZE:
            continue
        event, flags = rtp.payload[0], rtp.payload[1]
        if event >= len(DTMF_DIGITS) or flags & 0x40:  # the R bit is reserved and must be zero
            continue
        key = (pkt.src_port, rtp.ssrc, rtp.timestamp)
        if key not in seen:
            seen.add(key)
            digits.append(DTMF_DIGITS[event])
    return "".join(digits)


def wait_for_packets(cap: RawCapture, count: int, timeout: float) -> bool:
    """Bounded wait until the raw sniffer holds `count` packets (for tests that need traffic first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(cap.packets) >= count:
            return True
        time.sleep(0.02)
    return len(cap.packets) >= count
