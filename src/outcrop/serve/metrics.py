"""Prometheus metrics for ``GET /metrics``, in the text exposition format (no dependency).

HTTP requests are counted as they are answered. Model calls are counted from the
trace store (``Store.subscribe``): every traced call — a chat request, an
embedding, and the calls the server makes for knowledge-base answers, agent runs
and judges — by model, prompt, prompt version and API key name.

Label values are bounded so that a stream of new prompts or keys cannot grow the
scrape without end: each label keeps its first ``max_values`` distinct values,
later ones count as ``other``, and a family holding ``max_series`` label sets
counts new sets under ``other`` in every bounded label.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from ..observe.genai import NOT_MODEL_CALLS, error_type

if TYPE_CHECKING:
    from ..observe.store import Store, TraceRow

__all__ = ["Metrics"]

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CALL_LABELS = ("model", "prompt", "prompt_version", "key")

Labels = tuple[tuple[str, str], ...]


def _labels(pairs: Labels) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Histogram:
    """Cumulative bucket counts, then the count and the sum."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.series: dict[Labels, list[float]] = {}

    def observe(self, key: Labels, value: float) -> None:
        hist = self.series.setdefault(key, [0.0] * (len(self.buckets) + 2))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                hist[i] += 1
        hist[-2] += 1
        hist[-1] += value

    def lines(self, name: str) -> Iterable[str]:
        for key, hist in self.series.items():
            for i, bound in enumerate(self.buckets):
                yield f"{name}_bucket{_labels((*key, ('le', str(bound))))} {hist[i]:g}"
            yield f"{name}_bucket{_labels((*key, ('le', '+Inf')))} {hist[-2]:g}"
            yield f"{name}_count{_labels(key)} {hist[-2]:g}"
            yield f"{name}_sum{_labels(key)} {hist[-1]:.6f}"


class Metrics:
    """Counters, histograms, and gauges read when scraped."""

    max_values = 100  # distinct values kept per label (model, prompt, version, key, error)
    max_series = 2000  # label sets kept per metric

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[Labels, int] = defaultdict(int)
        self.rejected: dict[Labels, int] = defaultdict(int)
        self._hist = _Histogram(BUCKETS)
        self.gauges: dict[str, tuple[str, Callable[[], dict[str, float]]]] = {}
        # Model calls, from the trace store.
        self.calls: dict[Labels, int] = defaultdict(int)
        self.tokens: dict[Labels, int] = defaultdict(int)
        self.cost: dict[Labels, float] = defaultdict(float)
        self.errors: dict[Labels, int] = defaultdict(int)
        self.latency = _Histogram(BUCKETS)
        self.ttft = _Histogram(TTFT_BUCKETS)
        self._seen: dict[str, set[str]] = defaultdict(set)
        self._store: Store | None = None
        self._key_names: dict[str, str] = {}
        self._keys_read = 0.0

    # -- HTTP requests ------------------------------------------------------------------

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(("route", route), ("status", str(status)))] += 1
            self._hist.observe((("route", route),), seconds)

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[(("reason", reason),)] += 1

    def gauge(self, name: str, help_text: str, read: Callable[[], dict[str, float]]) -> None:
        """``read`` returns label value (of label ``model``) → value, at scrape time."""
        self.gauges[name] = (help_text, read)

    # -- model calls, from the trace store ------------------------------------------------

    def follow(self, store: Store) -> None:
        """Count every call ``store`` records from now on (and read API key names from it)."""
        self._store = store
        store.subscribe(self.observe)

    def unfollow(self) -> None:
        if self._store is not None:
            self._store.unsubscribe(self.observe)
            self._store = None

    def _key_name(self, key_id: str | None) -> str:
        """The API key's name (never its secret); its id if the key is not found."""
        if not key_id:
            return ""
        name = self._key_names.get(key_id)
        if name is None and self._store is not None and time.monotonic() - self._keys_read > 1:
            self._keys_read = time.monotonic()
            rows = self._store.api_keys(include_revoked=True)
            self._key_names = {str(r["id"]): str(r["name"]) for r in rows}
            name = self._key_names.get(key_id)
        return name or key_id

    def _bound(self, label: str, value: str) -> str:
        seen = self._seen[label]
        if not value or value in seen:
            return value
        if len(seen) < self.max_values:
            seen.add(value)
            return value
        return "other"

    def _series(self, family: Mapping[Labels, object], key: Labels) -> Labels:
        """``key``, or the same with every bounded label ``other`` once the family is full."""
        if key in family or len(family) < self.max_series:
            return key
        return tuple((k, "other" if k in CALL_LABELS else v) for k, v in key)

    def observe(self, rows: list[TraceRow]) -> None:
        """Count a batch of stored calls (a ``Store.subscribe`` listener)."""
        calls = [r for r in rows if r.kind not in NOT_MODEL_CALLS]
        if not calls:
            return
        keys = {r.api_key: self._key_name(r.api_key) for r in calls if r.api_key}
        with self._lock:
            for row in calls:
                base: Labels = (
                    ("model", self._bound("model", row.model or row.requested_model)),
                    ("prompt", self._bound("prompt", row.prompt_name or "")),
                    (
                        "prompt_version",
                        self._bound(
                            "prompt_version",
                            "" if row.prompt_version is None else str(row.prompt_version),
                        ),
                    ),
                    ("key", self._bound("key", keys.get(row.api_key or "", ""))),
                )
                key = self._series(self.calls, (*base, ("status", row.status)))
                self.calls[key] += 1
                for direction, count in (
                    ("input", row.input_tokens),
                    ("output", row.output_tokens),
                ):
                    key = self._series(self.tokens, (*base, ("direction", direction)))
                    self.tokens[key] += count
                if row.cost_usd is not None:
                    self.cost[self._series(self.cost, base)] += row.cost_usd
                if row.status == "error":
                    error = self._bound("error", error_type(row))
                    self.errors[self._series(self.errors, (*base, ("error", error)))] += 1
                if row.latency_ms is not None:
                    self.latency.observe(
                        self._series(self.latency.series, base), row.latency_ms / 1000
                    )
                if row.ttft_ms is not None:
                    self.ttft.observe(self._series(self.ttft.series, base), row.ttft_ms / 1000)

    # -- the scrape -----------------------------------------------------------------------

    def render(self) -> str:
        if self._store is not None:
            self._store.flush()  # count every call recorded before the scrape
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, series: Iterable[str]) -> None:
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *series])

        with self._lock:
            family(
                "outcrop_requests_total",
                "counter",
                "HTTP requests by route and status.",
                (f"outcrop_requests_total{_labels(k)} {v}" for k, v in self.requests.items()),
            )
            family(
                "outcrop_request_duration_seconds",
                "histogram",
                "Time to the whole response.",
                self._hist.lines("outcrop_request_duration_seconds"),
            )
            family(
                "outcrop_model_calls_total",
                "counter",
                "Model calls by model, prompt, prompt version, API key and status "
                "(ok, error, cancelled, blocked).",
                (f"outcrop_model_calls_total{_labels(k)} {v}" for k, v in self.calls.items()),
            )
            family(
                "outcrop_tokens_total",
                "counter",
                "Tokens of model calls, by model, prompt, prompt version, API key and direction.",
                (f"outcrop_tokens_total{_labels(k)} {v}" for k, v in self.tokens.items()),
            )
            family(
                "outcrop_cost_usd_total",
                "counter",
                "Cost of model calls in US dollars, by model, prompt, prompt version and API key.",
                (f"outcrop_cost_usd_total{_labels(k)} {v:.10g}" for k, v in self.cost.items()),
            )
            family(
                "outcrop_model_errors_total",
                "counter",
                "Failed model calls, by model, prompt, prompt version, API key and error type.",
                (f"outcrop_model_errors_total{_labels(k)} {v}" for k, v in self.errors.items()),
            )
            family(
                "outcrop_model_latency_seconds",
                "histogram",
                "Duration of model calls, by model, prompt, prompt version and API key.",
                self.latency.lines("outcrop_model_latency_seconds"),
            )
            family(
                "outcrop_model_ttft_seconds",
                "histogram",
                "Time to the first token of model calls, by model, prompt, prompt version and "
                "API key.",
                self.ttft.lines("outcrop_model_ttft_seconds"),
            )
            family(
                "outcrop_rejected_total",
                "counter",
                "Requests refused by a limit, by reason.",
                (f"outcrop_rejected_total{_labels(k)} {v}" for k, v in self.rejected.items()),
            )
        for name, (help_text, read) in self.gauges.items():
            family(
                name,
                "gauge",
                help_text,
                (f"{name}{_labels((('model', m),))} {v:g}" for m, v in read().items()),
            )
        return "\n".join(lines) + "\n"
