"""Prometheus metrics for the gateway (``prometheus_client``), in a registry of its own, and the optional HTTP
endpoint that serves them. It counts events it is told about; it must never see key material or hold call state.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily

from ratchet import errors as _errors
from voipgw.call import Security

# Label values come from typed exception names and security states, but a bug (or a peer's string leaking into a
# reason) must not create unbounded time series: unknown shapes and values past the cap become "other".
MAX_LABEL_VALUES = 32
_LABEL_RE = re.compile(r"[a-z0-9_]{1,48}")
OTHER = "other"
# The typed reasons of ratchet/errors.py that a refused key exchange can carry, longest first so that
# "malformed-identity-key" is not read as "malformed-..." of another.
HANDSHAKE_REASONS = tuple(
    sorted(
        {c.reason for c in vars(_errors).values() if isinstance(c, type) and issubclass(c, _errors.HandshakeError)}
        - {"handshake"},
        key=len,
        reverse=True,
    )
)
NO_KEY_EXCHANGE = "no_key_exchange"
CALL_ENGINE_REASONS = ("reflected-offer", "reflected-answer")
"""Typed key-exchange refusals of voipgw.negotiate (not of ratchet/): an offer or answer signed with our own key."""
LiveCalls = Callable[[], Iterable[tuple[str, bool]]]
"""Active calls as (security state, transcoding) pairs, read when the metrics are scraped."""
FrameCounts = tuple[int, int, Mapping[str, int]]
"""One call's outside frames so far: sealed, opened, refused by reason."""
LiveFrames = Callable[[], Iterable[tuple[object, FrameCounts]]]
"""Active calls' frame counts, each under a key that ``call_finished`` repeats when the call ends."""


class _ReadCounter:
    """A labelled counter read from the gateway's own counters at each scrape (e.g. zone refusals, which live in
    the SIP stack, on its reactor thread; copying them is all a scrape does)."""

    def __init__(self, name: str, doc: str, label: str, read: Callable[[], Mapping[str, int]]) -> None:
        self.name, self.doc, self.label, self.read = name, doc, label, read

    def collect(self) -> list[object]:
        family = CounterMetricFamily(self.name, self.doc, labels=[self.label])
        for value, n in sorted(self.read().items()):
            family.add_metric([value], n)
        return [family]


class _BeforeScrape:
    """A collector that exports nothing and runs ``fn`` first at each scrape (registered before the counters)."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn

    def collect(self) -> list[object]:
        self.fn()
        return []


def handshake_failure_reason(text: str) -> str | None:
    """The typed reason in a refused call's reason text (``bad-signature``...), ``no_key_exchange`` when the
    other side sent none (no gateway there, or a PBX stripped ``a=voipgw``), ``other`` for another key-exchange
    failure, None when the call failed for a reason that is not the key exchange (busy, no codec, 404...)."""
    low = text.lower()
    for reason in (*CALL_ENGINE_REASONS, *HANDSHAKE_REASONS):
        if reason in low:
            return reason
    if "known voipgw contact" in low:
        return "pinned_contact_unencrypted"
    if "sas" in low and "mismatch" in low:
        return "sas_commitment_mismatch"
    if "key exchange" in low or "a=voipgw" in low:
        if "no voipgw" in low or "without" in low or "carries no" in low or "a=voipgw" in low:
            return NO_KEY_EXCHANGE
        return OTHER
    if "key change" in low or ("identity key" in low and "changed" in low):
        return "key_changed"
    return None


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
        # Frames of calls in progress are added at scrape time; what a scrape added is remembered per call, so
        # the end of the call adds only the rest and the counters never go backwards.
        self._live_frames: LiveFrames | None = None
        self._reported: dict[object, tuple[int, int, dict[str, int]]] = {}
        self._frames_lock = threading.Lock()
        r.register(_BeforeScrape(self._sync_live_frames))  # type: ignore[arg-type]
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
        self._label = _Labels()
        self.calls_labelled = Counter(
            "voipgw_calls_labelled",
            "Calls by what the inside phone was shown (verified, known, first_contact, key_changed, not_secure, "
            "unverifiable: the SAS reveal did not arrive in time)",
            ["label"],
            registry=r,
        )
        self._inside_reason = _Labels()
        self.inside_dropped_total = Counter(
            "voipgw_inside_media_dropped",
            "Inside-leg datagrams dropped: not from the phone's address, SRTP that did not authenticate; by reason",
            ["reason"],
            registry=r,
        )
        self.registrations = Gauge("voipgw_registrations", "Fronted users currently registered to the PBX", registry=r)
        self._degraded_reason = _Labels()
        self.calls_degraded = Counter(
            "voipgw_calls_degraded",
            "Finished calls whose protection was degraded at some point, by reason (no-peer-dh-step, "
            "dh-step-unacknowledged, no-sas-reveal)",
            ["reason"],
            registry=r,
        )
        self.calls_degraded_active = Gauge(
            "voipgw_calls_degraded_active", "Calls in progress that are degraded now, by reason", ["reason"], registry=r
        )
        self._key_exchange = _Labels()
        self.calls_key_exchange = Counter(
            "voipgw_calls_key_exchange",
            "Finished calls by where their key exchange travelled (sdp, media: a PBX rebuilt the SDP; none)",
            ["path"],
            registry=r,
        )
        self._inband_reason = _Labels()
        self.inband_refused = Counter(
            "voipgw_inband_refused",
            "Key-exchange packets in the media path refused, by reason (inband-malformed, inband-conflict, ...)",
            ["reason"],
            registry=r,
        )

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

    def track_active(self, live: LiveCalls) -> None:
        """Serve ``voipgw_calls_active`` and ``voipgw_transcoding_calls_active`` from the gateway's live calls at
        scrape time (instead of :meth:`call_started`/:meth:`call_ended`); every security state is exported, 0 too."""

        def counter(label: str) -> Callable[[], float]:
            return lambda: sum(1 for sec, _ in live() if self._security(sec) == label)

        for state in Security:
            label = self._security(state.value)
            self.calls_active.labels(security=label).set_function(counter(label))
        self.transcoding_active.set_function(lambda: sum(1 for _, transcoding in live() if transcoding))

    def track_frames(self, live: LiveFrames) -> None:
        """Add the frames of calls in progress to ``voipgw_frames_*_total`` at each scrape (with the same keys
        given to :meth:`call_finished`), so long calls show up while they run."""
        self._live_frames = live

    def _sync_live_frames(self) -> None:
        live = self._live_frames
        if live is None:
            return
        try:
            calls = list(live())
        except RuntimeError:  # a call's counters changed size under us (another thread): next scrape
            return
        with self._frames_lock:
            for key, counts in calls:
                self._add_frames(key, counts, keep=True)

    def _add_frames(self, key: object, counts: FrameCounts, keep: bool) -> None:
        sealed, opened, refused = counts
        old_sealed, old_opened, old_refused = self._reported.pop(key, (0, 0, {}))
        if sealed > old_sealed:
            self.frames_sealed.inc(sealed - old_sealed)
        if opened > old_opened:
            self.frames_opened.inc(opened - old_opened)
        for reason, n in refused.items():
            if n > old_refused.get(reason, 0):
                self.refused(reason, n - old_refused.get(reason, 0))
        if keep:
            self._reported[key] = (max(sealed, old_sealed), max(opened, old_opened), {**old_refused, **refused})

    def call_finished(
        self,
        security: str,
        transcoded: bool,
        sealed: int,
        opened: int,
        refused: Mapping[str, int],
        handshake_failure: str | None = None,
        key: object | None = None,
        label: str | None = None,
        degraded: Iterable[str] = (),
        key_exchange: str = "none",
        inband_refused: Mapping[str, int] | None = None,
    ) -> None:
        """Count one ended call (with :meth:`track_active`): its final security state, whether it transcoded,
        its outside frames (less what scrapes already added under ``key``, see :meth:`track_frames`), the
        reason its key exchange failed, if it did, and the label its inside phone was shown, if any."""
        self.calls_total.labels(security=self._security(security)).inc()
        self.calls_key_exchange.labels(path=self._key_exchange(key_exchange)).inc()
        for reason, n in (inband_refused or {}).items():
            if n > 0:
                self.inband_refused.labels(reason=self._inband_reason(reason)).inc(n)
        for reason in degraded:
            self.calls_degraded.labels(reason=self._degraded_reason(reason)).inc()
        if label is not None:
            self.calls_labelled.labels(label=self._label(label)).inc()
        if transcoded:
            self.transcoded_total.inc()
        with self._frames_lock:
            self._add_frames(key if key is not None else object(), (sealed, opened, dict(refused)), keep=False)
        if handshake_failure is not None:
            self.handshake_failed(handshake_failure)

    def handshake_failed(self, reason: str) -> None:
        """``reason`` is a short name such as the typed error's class (``BadSignature``, ``StaleTimestamp``)."""
        self.handshake_failures.labels(reason=self._hs_reason(reason)).inc()

    def sealed(self, n: int = 1) -> None:
        self.frames_sealed.inc(n)

    def opened(self, n: int = 1) -> None:
        self.frames_opened.inc(n)

    def refused(self, reason: str, n: int = 1) -> None:
        self.frames_refused.labels(reason=self._refuse_reason(reason)).inc(n)

    def inside_dropped(self, dropped: Mapping[str, int]) -> None:
        """One finished call's inside-leg drops by reason (``wrong-source``, ``srtp-auth``...)."""
        for reason, n in dropped.items():
            if n > 0:
                self.inside_dropped_total.labels(reason=self._inside_reason(reason)).inc(n)

    def track_zone_refusals(self, read: Callable[[], Mapping[str, int]]) -> None:
        """Serve ``voipgw_zone_refusals_total{reason}`` from ``read()`` (reason -> count) at each scrape."""
        counter = _ReadCounter(
            "voipgw_zone_refusals", "Requests refused by a trust-zone rule, by reason", "reason", read
        )
        self.registry.register(counter)  # type: ignore[arg-type]

    def track_unanswered(self, read: Callable[[], Mapping[str, int]]) -> None:
        """Serve ``voipgw_unanswered_secure_calls_total{stage}`` (``before-reveal``, ``after-reveal``: secure calls
        whose caller gave up before the answer; a run of them from one peer is SAS probing) and
        ``alert`` (peers that crossed the probing limit) from ``read()`` at each scrape."""
        doc = "Secure calls the caller ended before the answer, by stage; alert = peers over the probing limit"
        self.registry.register(_ReadCounter("voipgw_unanswered_secure_calls", doc, "stage", read))  # type: ignore[arg-type]

    def track_degraded(self, read: Callable[[], Mapping[str, int]], reasons: Iterable[str]) -> None:
        """Serve ``voipgw_calls_degraded_active{reason}`` from ``read()`` (reason -> calls degraded now) at scrape
        time; every reason in ``reasons`` is exported, 0 too."""

        def active(reason: str) -> Callable[[], float]:
            return lambda: float(read().get(reason, 0))

        for reason in reasons:
            self.calls_degraded_active.labels(reason=self._degraded_reason(reason)).set_function(active(reason))

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
