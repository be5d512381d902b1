"""OpenTelemetry export: every traced call as a span with the GenAI semantic conventions.

Turn it on with a ``[telemetry]`` table in outcrop.toml, or with the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_HEADERS`` / ``OTEL_SERVICE_NAME``
environment variables (which override the file)::

    [telemetry]
    otlp_endpoint = "http://127.0.0.1:4318"   # the collector's OTLP/HTTP base URL
    headers = { authorization = "Bearer …" }
    service_name = "support-bot"              # default "outcrop"
    capture_content = false                   # prompts and answers stay out by default

``outcrop serve`` installs it when the server starts and flushes it when the
server stops; in a program, :func:`install_telemetry` does the same for a
gateway. The trace store hands each stored batch of rows over (``Store.subscribe``)
and goes on; an export thread of its own turns them into spans and measurements
for OpenTelemetry's batch processor. A call never waits for the collector, and a
collector that is down costs one warning.

Span and trace ids are derived from outcrop's trace ids, so a span can be found
from the ``x-outcrop-trace-id`` a response carries, and a step recorded before
the chain or agent run it belongs to still lands in that run's trace: a row
whose parent is not known yet waits (a bounded while) for it.

The ``opentelemetry`` packages are imported only when export is configured
(``pip install 'outcrop[otel]'``).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from ..errors import ConfigError, MissingExtraError
from .genai import NOT_MODEL_CALLS, otel_trace_id_of, span_for, span_id_of

if TYPE_CHECKING:
    from ..config import Settings
    from ..gateway import Gateway
    from .store import TraceRow

__all__ = [
    "Telemetry",
    "TelemetryConfig",
    "TelemetrySettings",
    "install_telemetry",
    "telemetry_config",
]

log = logging.getLogger("outcrop.otel")

DEFAULT_ENDPOINT = "http://localhost:4318"  # OTLP/HTTP's own default
# The conventions' bucket boundaries for gen_ai.client.token.usage and .operation.duration.
TOKEN_BUCKETS = tuple(4**i for i in range(14))  # 1, 4, 16, … 67108864
DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01, 0.02, … 81.92 s
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ENV_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
_ENV_HEADERS = "OTEL_EXPORTER_OTLP_HEADERS"
_ENV_SERVICE = "OTEL_SERVICE_NAME"
_ENV_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def _endpoint_problem(value: str) -> str | None:
    """Why ``value`` is not an OTLP/HTTP base URL, or None."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"give the collector's OTLP/HTTP URL, e.g. http://127.0.0.1:4318 (got {value!r})"
    if parts.path.rstrip("/").endswith(("/v1/traces", "/v1/metrics")):
        return (
            f"give the collector's base URL without /v1/traces or /v1/metrics (got {value!r}); "
            "outcrop adds the path of each signal"
        )
    return None


def _header_problem(name: str, value: str) -> str | None:
    if not _HEADER_NAME.match(name):
        return f"{name!r} is not an HTTP header name (letters, digits and - only)"
    if "\r" in value or "\n" in value:
        return f"the value of header {name!r} holds a line break"
    return None


class TelemetrySettings(BaseModel):
    """``[telemetry]`` in outcrop.toml: OpenTelemetry export over OTLP/HTTP (protobuf)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    otlp_endpoint: str | None = Field(
        default=None,
        description="The collector's OTLP/HTTP base URL, e.g. http://127.0.0.1:4318 (spans go "
        "to /v1/traces, metrics to /v1/metrics). Default: http://localhost:4318.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="HTTP headers sent with every export (e.g. a key)."
    )
    service_name: str = Field(
        default="outcrop", min_length=1, description="service.name of every span and metric."
    )
    capture_content: bool = Field(
        default=False,
        description="Also export prompts and answers (gen_ai.input.messages, "
        "gen_ai.output.messages, tool arguments and results). They may hold personal data.",
    )

    @field_validator("otlp_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        problem = None if value is None else _endpoint_problem(value)
        if problem:
            raise PydanticCustomError("otlp_endpoint", problem)
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            problem = _header_problem(name, text)
            if problem:
                raise PydanticCustomError("header", problem)
        return value


@dataclass(frozen=True)
class TelemetryConfig:
    """Export settings after the environment is laid over outcrop.toml."""

    endpoint: str = DEFAULT_ENDPOINT
    headers: dict[str, str] = field(default_factory=dict)
    service_name: str = "outcrop"
    capture_content: bool = False

    def url(self, signal: str) -> str:
        return f"{self.endpoint.rstrip('/')}/v1/{signal}"


def _env_headers(text: str) -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_HEADERS``: ``name=value`` pairs split by commas, values
    URL-encoded (the OpenTelemetry specification's format)."""
    headers: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), unquote(value.strip())
        problem = (
            "write name=value pairs split by commas, e.g. authorization=Bearer%20abc,x-team=search"
            if not sep or not name
            else _header_problem(name, value)
        )
        if problem:
            raise ConfigError(f"{_ENV_HEADERS}: {problem} (in {item.strip()!r})")
        headers[name] = value
    return headers


def telemetry_config(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> TelemetryConfig | None:
    """The export settings, or None when neither outcrop.toml's ``[telemetry]`` nor an
    ``OTEL_*`` variable asks for export. Raises :class:`ConfigError` for a bad variable
    and :class:`MissingExtraError` when the ``otel`` extra is not installed."""
    env = os.environ if environ is None else environ
    file = settings.telemetry
    named = {k: env[k].strip() for k in (_ENV_ENDPOINT, _ENV_HEADERS, _ENV_SERVICE) if k in env}
    named = {k: v for k, v in named.items() if v}
    flag = env.get(_ENV_CONTENT, "").strip().lower()
    if flag and flag not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise ConfigError(f"{_ENV_CONTENT}: write true or false (got {env[_ENV_CONTENT]!r})")
    if not file.model_fields_set and not named:
        return None
    endpoint = named.get(_ENV_ENDPOINT) or file.otlp_endpoint or DEFAULT_ENDPOINT
    if _ENV_ENDPOINT in named:
        problem = _endpoint_problem(endpoint)
        if problem:
            raise ConfigError(f"{_ENV_ENDPOINT}: {problem}")
    headers = dict(file.headers)
    if _ENV_HEADERS in named:
        headers.update(_env_headers(named[_ENV_HEADERS]))
    capture = flag in ("true", "1", "yes", "on") if flag else file.capture_content
    _sdk()  # the extra must be there before anything is set up
    return TelemetryConfig(
        endpoint=endpoint,
        headers=headers,
        service_name=named.get(_ENV_SERVICE) or file.service_name,
        capture_content=capture,
    )


def _sdk() -> None:
    try:
        import opentelemetry.exporter.otlp.proto.http
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            "OpenTelemetry export ([telemetry] in outcrop.toml, or OTEL_EXPORTER_OTLP_ENDPOINT)",
            "otel",
        ) from None


# -- export -----------------------------------------------------------------------------------


class _Quiet(logging.Filter):
    """Keeps the OTLP exporters' own per-batch failure messages quiet while *our* exporter
    is exporting (on this thread); the first one's text becomes our single warning."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    @contextmanager
    def exporting(self) -> Iterator[list[str]]:
        heard: list[str] = []
        self.local.heard = heard
        try:
            yield heard
        finally:
            self.local.heard = None

    def filter(self, record: logging.LogRecord) -> bool:
        heard = getattr(self.local, "heard", None)
        if heard is None:
            return True
        heard.append(record.getMessage())
        return False


_QUIET = _Quiet()
_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",  # "Queue full, dropping spans", once per span
)


def _unreachable(endpoint: str) -> str | None:
    """Why nothing answers at ``endpoint``'s host and port, or None when something does
    (the SDK's own message says only that the export failed)."""
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=2):
            return None
    except OSError as exc:
        return f"cannot connect to {parts.hostname}:{port}: {exc.strerror or exc}"


class _Health:
    """One warning when exports start failing, one line when they work again."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.failing = False
        self.closing = False
        self._lock = threading.Lock()

    def run(self, what: str, export: Callable[[], bool]) -> bool:
        if self.closing and self.failing:
            return False  # do not hold a stopping server on a collector that is down
        with _QUIET.exporting() as heard:
            try:
                ok = export()
            except Exception as exc:  # an exporter must not take the export thread down
                heard.append(f"{exc.__class__.__name__}: {exc}")
                ok = False
        with self._lock:
            if ok and self.failing:
                self.failing = False
                log.warning("OpenTelemetry export to %s works again.", self.endpoint)
            elif not ok and not self.failing:
                self.failing = True
                reason = _unreachable(self.endpoint) or (
                    heard[0][:300] if heard else "the collector refused it"
                )
                log.warning(
                    "OpenTelemetry export of %s to %s failed (%s). Calls go on; telemetry is "
                    "dropped until the collector answers (no more warnings until it does). "
                    "Check [telemetry] otlp_endpoint in outcrop.toml or %s.",
                    what,
                    self.endpoint,
                    reason,
                    _ENV_ENDPOINT,
                )
        return ok


class Telemetry:
    """Exports a gateway's calls as OpenTelemetry spans and metrics. Made by
    :func:`install_telemetry`; ``flush()`` sends what is pending, ``shutdown()`` (or leaving
    a ``with`` block) sends it and stops."""

    max_held = 10_000  # rows waiting for a parent not seen yet
    max_hold_s = 600.0  # how long one waits before it is sent as the root of its own trace
    max_known = 100_000  # outcrop ids remembered with their OpenTelemetry trace id
    max_queued = 100_000  # rows handed to the export thread and not turned into spans yet

    def __init__(self, gateway: Gateway, config: TelemetryConfig):
        _sdk()
        from importlib.metadata import PackageNotFoundError, version

        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            MetricExporter,
            MetricExportResult,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
        from opentelemetry.sdk.trace.id_generator import IdGenerator
        from opentelemetry.trace import SpanKind

        self.config = config
        self.gateway = gateway
        self._store = gateway.store
        self._health = _Health(config.endpoint)
        health = self._health
        for name in _EXPORTER_LOGGERS:
            logger = logging.getLogger(name)
            if _QUIET not in logger.filters:
                logger.addFilter(_QUIET)

        class Spans(SpanExporter):
            def __init__(self, inner: SpanExporter):
                self.inner = inner

            def export(self, spans: Sequence[Any]) -> SpanExportResult:
                ok = health.run(
                    "spans", lambda: self.inner.export(spans) is SpanExportResult.SUCCESS
                )
                return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

            def shutdown(self) -> None:
                self.inner.shutdown()

            def force_flush(self, timeout_millis: int = 30000) -> bool:
                return self.inner.force_flush(timeout_millis)

        class Metrics(MetricExporter):
            def __init__(self, inner: MetricExporter):
                super().__init__(
                    preferred_temporality=inner._preferred_temporality,
                    preferred_aggregation=inner._preferred_aggregation,
                )
                self.inner = inner

            def export(
                self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any
            ) -> MetricExportResult:
                ok = health.run(
                    "metrics",
                    lambda: (
                        self.inner.export(metrics_data, timeout_millis=timeout_millis)
                        is MetricExportResult.SUCCESS
                    ),
                )
                return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

            def force_flush(self, timeout_millis: float = 10_000) -> bool:
                return self.inner.force_flush(timeout_millis)

            def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
                self.inner.shutdown(timeout_millis=timeout_millis)

        class RowIds(IdGenerator):
            """Hands the tracer the ids derived from the row being turned into a span."""

            next: tuple[int, int] = (0, 0)

            def generate_span_id(self) -> int:
                return self.next[1]

            def generate_trace_id(self) -> int:
                return self.next[0]

        try:
            outcrop_version = version("outcrop")
        except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
            outcrop_version = "0"
        resource = Resource.create({SERVICE_NAME: config.service_name})
        self._ids = RowIds()
        self._tracer_provider = TracerProvider(resource=resource, id_generator=self._ids)
        self._tracer_provider.add_span_processor(
            BatchSpanProcessor(
                Spans(OTLPSpanExporter(endpoint=config.url("traces"), headers=config.headers))
            )
        )
        self._tracer = self._tracer_provider.get_tracer("outcrop", outcrop_version)
        reader = PeriodicExportingMetricReader(
            Metrics(OTLPMetricExporter(endpoint=config.url("metrics"), headers=config.headers))
        )
        self._meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        meter = self._meter_provider.get_meter("outcrop", outcrop_version)
        self._token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._kinds = {"client": SpanKind.CLIENT, "internal": SpanKind.INTERNAL}
        self._lock = threading.Lock()
        self._known: OrderedDict[str, int] = OrderedDict()  # outcrop id -> otel trace id
        self._waiting: dict[str, list[tuple[float, TraceRow]]] = {}  # by parent id
        self._held = 0
        self._closed = False
        self.dropped = 0  # spans the full export queue turned away
        self._queue_warned = False
        settings = gateway.settings
        self._aliases = dict(settings.aliases)
        self._endpoints = dict(settings.endpoints)
        self._inbox: deque[TraceRow] = deque()
        self._cv = threading.Condition()
        self._busy = False
        self._stopping = False
        self.lost = 0  # calls not exported because the export thread was too far behind
        self._worker = threading.Thread(target=self._work, name="outcrop-otel", daemon=True)
        self._worker.start()
        self._store.subscribe(self._on_rows)

    # -- the listener, on the store's writer thread (or a thread that records directly) ---

    def _on_rows(self, rows: list[TraceRow]) -> None:
        """Hand the rows to the export thread and return: readers of the store wait for its
        listeners, so the spans are made elsewhere."""
        with self._cv:
            if self._stopping:
                return
            room = max(0, self.max_queued - len(self._inbox))
            if len(rows) > room:
                if not self.lost:
                    log.warning(
                        "OpenTelemetry export is %d calls behind; calls beyond that are not "
                        "exported (no more warnings about it).",
                        self.max_queued,
                    )
                self.lost += len(rows) - room
                rows = rows[:room]
            self._inbox.extend(rows)
            self._cv.notify_all()

    # -- the export thread: rows to spans and measurements ----------------------------------

    def _work(self) -> None:
        while True:
            with self._cv:
                if not self._inbox and not self._stopping:
                    self._cv.wait(timeout=30.0)  # wakes now and then to send overdue rows
                if not self._inbox and self._stopping:
                    return
                batch = list(self._inbox)
                self._inbox.clear()
                self._busy = True
            try:
                with self._lock:
                    for row in batch:
                        self._place(row)
                    self._release_expired(time.monotonic())
            except Exception:
                log.exception("OpenTelemetry: %d calls could not be turned into spans", len(batch))
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _drain(self, timeout_s: float) -> None:
        """Wait until the export thread has made spans of every row handed to it."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while (self._inbox or self._busy) and self._worker.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(timeout=left)

    def _place(self, row: TraceRow) -> None:
        parent = row.parent_id
        if row.id in self._known:
            self._resolve(row, self._known[row.id])  # its children went first, as a root's
        elif not parent:
            self._resolve(row, otel_trace_id_of(row.id))
        elif parent in self._known:
            self._resolve(row, self._known[parent])
        else:
            self._waiting.setdefault(parent, []).append((time.monotonic(), row))
            self._held += 1
            if self._held > self.max_held:
                oldest = min(self._waiting, key=lambda p: self._waiting[p][0][0])
                self._release(oldest)

    def _resolve(self, row: TraceRow, trace_id: int) -> None:
        self._remember(row.id, trace_id)
        self._emit(row, trace_id)
        for _, child in self._waiting.pop(row.id, []):
            self._held -= 1
            self._resolve(child, trace_id)

    def _release(self, parent: str) -> None:
        """Send rows whose parent never came, in the trace their parent's id names."""
        trace_id = otel_trace_id_of(parent)
        self._remember(parent, trace_id)
        for _, child in self._waiting.pop(parent, []):
            self._held -= 1
            self._resolve(child, trace_id)

    def _release_expired(self, now: float) -> None:
        for parent in [
            p for p, rows in self._waiting.items() if now - rows[0][0] > self.max_hold_s
        ]:
            self._release(parent)

    def _remember(self, outcrop_id: str, trace_id: int) -> None:
        self._known[outcrop_id] = trace_id
        self._known.move_to_end(outcrop_id)
        while len(self._known) > self.max_known:
            self._known.popitem(last=False)

    def _emit(self, row: TraceRow, trace_id: int) -> None:
        from opentelemetry.context import Context
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            Status,
            StatusCode,
            TraceFlags,
            set_span_in_context,
        )

        spec = span_for(
            row,
            capture_content=self.config.capture_content,
            aliases=self._aliases,
            endpoints=self._endpoints,
        )
        context = Context()  # never the caller's current span: the tree is outcrop's own
        if row.parent_id:
            parent = SpanContext(
                trace_id,
                span_id_of(row.parent_id),
                is_remote=False,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
            context = set_span_in_context(NonRecordingSpan(parent), context)
        self._ids.next = (trace_id, span_id_of(row.id))
        span = self._tracer.start_span(
            spec.name,
            context=context,
            kind=self._kinds[spec.kind],
            attributes=spec.attributes,
            start_time=spec.start_ns,
        )
        if spec.error is not None:
            span.set_status(Status(StatusCode.ERROR, spec.error))
        with _QUIET.exporting() as heard:
            span.end(end_time=max(spec.end_ns, spec.start_ns))
        if heard:
            self.dropped += 1
            if not self._health.failing and not self._queue_warned:
                self._queue_warned = True  # (a collector that is down has had its warning)
                log.warning(
                    "OpenTelemetry's export queue is full: spans are dropped (the collector at "
                    "%s takes them slower than calls come; no more warnings about it).",
                    self.config.endpoint,
                )
        if row.kind not in NOT_MODEL_CALLS:
            self._measure(spec.attributes, row)

    def _measure(self, attrs: Mapping[str, Any], row: TraceRow) -> None:
        common = {
            k: attrs[k]
            for k in (
                "gen_ai.operation.name",
                "gen_ai.provider.name",
                "gen_ai.request.model",
                "gen_ai.response.model",
                "server.address",
                "server.port",
            )
            if k in attrs
        }
        if row.latency_ms is not None:
            timing = dict(common)
            if "error.type" in attrs:
                timing["error.type"] = attrs["error.type"]
            self._duration.record(row.latency_ms / 1000, timing)
        if row.status != "error" or row.input_tokens or row.output_tokens:
            self._token_usage.record(row.input_tokens, {**common, "gen_ai.token.type": "input"})
            if row.kind != "embedding":
                self._token_usage.record(
                    row.output_tokens, {**common, "gen_ai.token.type": "output"}
                )

    # -- control --------------------------------------------------------------------------

    @property
    def failing(self) -> bool:
        """Whether the last export to the collector failed."""
        return self._health.failing

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Send every call recorded so far (waiting for the trace store's queue first)."""
        self._store.flush()
        self._drain(timeout_s)
        with self._lock:
            self._release_expired(time.monotonic())
        millis = int(timeout_s * 1000)
        spans = self._tracer_provider.force_flush(millis)
        metrics = self._meter_provider.force_flush(millis)
        return bool(spans and metrics)

    def shutdown(self) -> None:
        """Send what is left and stop; rows still waiting for a parent go as roots."""
        if self._closed:
            return
        self._store.flush()
        self._store.unsubscribe(self._on_rows)
        self._drain(30.0)
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._worker.join(timeout=30.0)
        with self._lock:
            for parent in list(self._waiting):
                self._release(parent)
            self._closed = True
        self._health.closing = True
        self._tracer_provider.shutdown()
        self._meter_provider.shutdown()

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def install_telemetry(gateway: Gateway, config: TelemetryConfig | None = None) -> Telemetry | None:
    """Export ``gateway``'s calls over OTLP as configured (``[telemetry]`` in outcrop.toml or
    the ``OTEL_*`` variables); None when export is not configured. Call ``shutdown()`` on
    the result (or use it in a ``with`` block) before the program ends, to send the rest."""
    if config is None:
        config = telemetry_config(gateway.settings)
        if config is None:
            return None
    return Telemetry(gateway, config)
