"""Prometheus metrics for the gateway (``prometheus_client``), in a registry of its own, and the optional HTTP
endpoint that serves them. It counts events it is told about; it must never see key material or hold call state.
"""

from __future__ import annotations

import re
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server

# Label values come from typed exception names and security states, but a bug (or a peer's string leaking into a
# reason) must not create unbounded time series: unknown shapes and values past the cap become "other".
MAX_LABEL_VALUES = 32
_LABEL_RE = re.compile(r"[a-z0-9_]{1,48}")
OTHER = "other"


class MetricsError(Exception):
    """The metrics endpoint cannot start (address in use, bad address); one line for the operator."""


def _label(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", value.strip().lower()).strip("_")


class _Labels:
    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        label = _label(value)
        if not _LABEL_RE.fullmatch(label):
            return OTHER
        with self._lock:
            if label in self._seen:
                return label
            if len(self._seen) >= MAX_LABEL_VALUES:
                return OTHER
            self._seen.add(label)
        return label


class GatewayMetrics:
    """The gateway's counters and gauges. Thread-safe; call the frame methods with batched counts on hot paths.

    Security states are ``voipgw.call.Security`` values, normalised to labels: ``"secure, unverified"`` becomes
    ``secure_unverified``, ``"NOT SECURE"`` becomes ``not_secure``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._security = _Labels()
        self._hs_reason = _Labels()
        self._refuse_reason = _Labels()
        self.calls_active = Gauge(
            "voipgw_calls_active", "Calls in progress, by security state", ["security"], registry=r
        )
        self.calls_total = Counter("voipgw_calls", "Calls set up, by security state", ["security"], registry=r)
        self.handshake_failures = Counter(
            "voipgw_handshake_failures", "Refused or failed key exchanges, by reason", ["reason"], registry=r
        )
        self.frames_sealed = Counter("voipgw_frames_sealed", "Media frames sealed for the outside leg", registry=r)
        self.frames_opened = Counter("voipgw_frames_opened", "Media frames opened from the outside leg", registry=r)
        self.frames_refused = Counter(
            "voipgw_frames_refused", "Media frames refused when opening, by reason", ["reason"], registry=r
        )
        self.transcoding_active = Gauge(
            "voipgw_transcoding_calls_active", "Calls in progress that transcode (inside codec is not Opus)", registry=r
        )
        self.transcoded_total = Counter(
            "voipgw_transcoded_calls", "Calls that transcoded (inside codec is not Opus)", registry=r
        )
        self.registrations = Gauge("voipgw_registrations", "Fronted users currently registered to the PBX", registry=r)

    def call_started(self, security: str, transcoding: bool) -> None:
        label = self._security(security)
        self.calls_total.labels(security=label).inc()
        self.calls_active.labels(security=label).inc()
        if transcoding:
            self.transcoded_total.inc()
            self.transcoding_active.inc()

    def call_security_changed(self, old: str, new: str) -> None:
        """Move an active call between states (e.g. once the SAS is verified); totals are not counted twice."""
        self.calls_active.labels(security=self._security(old)).dec()
        self.calls_active.labels(security=self._security(new)).inc()

    def call_ended(self, security: str, transcoding: bool) -> None:
        self.calls_active.labels(security=self._security(security)).dec()
        if transcoding:
            self.transcoding_active.dec()

    def handshake_failed(self, reason: str) -> None:
        """``reason`` is a short name such as the typed error's class (``BadSignature``, ``StaleTimestamp``)."""
        self.handshake_failures.labels(reason=self._hs_reason(reason)).inc()

    def sealed(self, n: int = 1) -> None:
        self.frames_sealed.inc(n)

    def opened(self, n: int = 1) -> None:
        self.frames_opened.inc(n)

    def refused(self, reason: str, n: int = 1) -> None:
        self.frames_refused.labels(reason=self._refuse_reason(reason)).inc(n)

    def set_registered(self, count: int) -> None:
        self.registrations.set(count)

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format (what the endpoint serves)."""
        return bytes(generate_latest(self.registry))


class MetricsServer:
    """The HTTP endpoint (``GET /metrics``) on ``host:port``, served from a daemon thread until :meth:`close`."""

    def __init__(self, metrics: GatewayMetrics, host: str, port: int) -> None:
        try:
            server, thread = start_http_server(port, addr=host, registry=metrics.registry)
        except OSError as exc:
            raise MetricsError(f"metrics endpoint {host}:{port}: {exc.strerror or exc}") from None
        self._server: WSGIServer = server
        self._thread: threading.Thread = thread
        self.host = host
        self.port = int(server.server_address[1])

    @property
    def running(self) -> bool:
        """True until :meth:`close` has stopped the thread and closed the listening socket."""
        return self._thread.is_alive() or self._server.socket.fileno() != -1

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
