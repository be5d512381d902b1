"""Online evaluation: score a share of live traffic with the eval metrics, and alert on it.

``[monitor.online_eval]`` in outcrop.toml turns it on for ``outcrop serve``::

    [monitor]
    webhook_url = "https://hooks.example.com/outcrop"    # optional

    [monitor.online_eval]
    sample_rate = 0.1                                   # a tenth of the chat calls
    metrics = ["answer_relevance", "latency_ms"]
    judge_model = "local:smollm2-135m"

    [[monitor.alerts]]
    metric = "answer_relevance"
    below = 0.6                                         # the mean of the window
    window = 50                                         # the last 50 scores
    min_count = 20

How it runs: the trace store hands every stored batch of calls to
:class:`OnlineEvaluator` on its writer thread. The evaluator keeps the eligible
ones (kind ``chat``, status ``ok``, optionally only some models or prompts; never
its own judge calls, evals or embeddings) and samples them by a hash of the
trace id, so every replica makes the same choice for a call. Sampled calls wait
in a bounded queue — when it is full a call is dropped and counted, the writer
never waits — and one worker thread scores them with the configured metrics,
judge calls included (their traces have kind ``judge`` and the scored call as
parent). Scores go to the ``online_scores`` table.

After each scored call the alert rules on its metrics are checked against a
window of scores in the database (the last N, or the last M minutes). A rule
that trips opens one alert and one only; it is closed when the mean recovers.
Opening and closing are logged, stored in ``alerts`` (one open alert per rule,
whichever replica saw it first), shown on the Monitor page and, when
``webhook_url`` is set, POSTed there as JSON from a thread of their own, with a
timeout and a few retries; a webhook that fails is logged, never raised.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
import logging
import math
import queue
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..config import toml_line
from ..errors import ConfigError, InvalidRequestError, OutcropError, UserError
from ..evals.metrics import METRICS, Metric, MetricContext, Sample, build_metric
from ..evals.suite import Case, MetricSpec
from ..types import Message
from .store import TraceRow

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = [
    "LIVE_METRICS",
    "AlertRule",
    "MonitorSettings",
    "OnlineEvalSettings",
    "OnlineEvaluator",
    "parse_monitor",
]

log = logging.getLogger("outcrop.online")

# The metrics that can score a live call: they need no expected answer, gold context or
# expected tool calls, which only an eval suite's cases have.
LIVE_METRICS = (
    "answer_relevance",
    "cost",
    "judge",
    "json_schema",
    "json_valid",
    "latency_ms",
    "regex",
    "tokens",
)
_NOT_LIVE_WHY = {
    "expected": "needs an expected answer",
    "contexts": "needs gold contexts",
    "tools": "needs the tool calls expected of each case",
}
# Needs no case field, but grades against retrieved passages, which a trace does not keep.
_RETRIEVAL_ONLY = {"faithfulness"}
_MEASURES = {"latency_ms", "tokens", "cost"}  # not on a 0..1 scale


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OnlineEvalSettings(_Strict):
    """``[monitor.online_eval]``: which live calls are scored, and how."""

    sample_rate: float = Field(
        ge=0, le=1, allow_inf_nan=False, description="Share of eligible calls scored, 0 to 1."
    )
    metrics: list[str | MetricSpec] = Field(
        min_length=1, description="Metric names or tables, as in an eval suite."
    )
    judge_model: str | None = Field(
        default=None, description="The model judge metrics use (default: default_model)."
    )
    models: list[str] = Field(
        default_factory=list, description="Score only calls to these models (glob patterns)."
    )
    prompts: list[str] = Field(
        default_factory=list, description="Score only calls from these prompts (name or name@N)."
    )
    queue_size: int = Field(
        default=1000, ge=1, le=1_000_000, description="Sampled calls waiting at most."
    )
    seed: int = Field(default=0, ge=0, description="Sampler seed: replicas share it.")

    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec(name=m) if isinstance(m, str) else m for m in self.metrics]


class AlertRule(_Strict):
    """``[[monitor.alerts]]``: alert when the mean of a metric's window crosses a threshold."""

    metric: str = Field(description="A metric of [monitor.online_eval] (its label if it has one).")
    below: float | None = Field(default=None, allow_inf_nan=False)
    above: float | None = Field(default=None, allow_inf_nan=False)
    window: int | None = Field(
        default=None, ge=1, le=100_000, description="The last N scores (default 50)."
    )
    window_minutes: float | None = Field(
        default=None, gt=0, le=43_200, allow_inf_nan=False, description="Or: the last M minutes."
    )
    min_count: int = Field(
        default=10, ge=1, le=100_000, description="Scores the window needs before it can alert."
    )
    name: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _check(self) -> AlertRule:
        if (self.below is None) == (self.above is None):
            raise ValueError(
                "give one of below or above: the alert opens when the window's mean falls "
                "below that value (or rises above it)"
            )
        if self.window is not None and self.window_minutes is not None:
            raise ValueError("give window (a count of scores) or window_minutes, not both")
        if self.window is None and self.window_minutes is None:
            self.window = 50
        if self.window is not None and self.min_count > self.window:
            raise ValueError(
                f"min_count ({self.min_count}) is more than the window holds ({self.window} "
                "scores), so the rule could never alert; lower min_count"
            )
        return self

    @property
    def op(self) -> Literal["below", "above"]:
        return "below" if self.below is not None else "above"

    @property
    def threshold(self) -> float:
        value = self.below if self.below is not None else self.above
        assert value is not None
        return value

    def span(self) -> str:
        if self.window_minutes is not None:
            return f"the last {self.window_minutes:g} minutes"
        return f"the last {self.window} scores"

    @property
    def key(self) -> str:
        """How alerts name the rule (and tell rules apart)."""
        sign = "<" if self.op == "below" else ">"
        return self.name or f"mean({self.metric}) {sign} {self.threshold:g} over {self.span()}"

    def tripped(self, mean: float) -> bool:
        return mean < self.threshold if self.op == "below" else mean > self.threshold

    def detail(self, mean: float, count: int) -> str:
        scores = f"{count} score{'s' * (count != 1)}"
        if self.window_minutes is None:
            where = f"of the last {scores}"
        else:
            where = f"over the last {self.window_minutes:g} minutes ({scores})"
        return f"mean {self.metric} {where} is {mean:.4g}, {self.op} {self.threshold:g}"


class MonitorSettings(_Strict):
    """``[monitor]``: online evaluation, its alert rules, and where alerts are sent."""

    online_eval: OnlineEvalSettings | None = None
    alerts: list[AlertRule] = Field(default_factory=list)
    webhook_url: str | None = Field(
        default=None, description="POST each alert opened or resolved here, as JSON."
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=60, allow_inf_nan=False)
    webhook_retries: int = Field(default=2, ge=0, le=5, description="Tries after the first.")


# -- checking [monitor] ------------------------------------------------------------------

_BRANCHES = {"str", "MetricSpec"}
_FIELDS: dict[str, type[BaseModel]] = {
    "": MonitorSettings,
    "online_eval": OnlineEvalSettings,
    "alerts": AlertRule,
    "metrics": MetricSpec,
}


def _where(loc: list[str | int]) -> str:
    out = "monitor"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")


def _line(text: str, loc: list[str | int]) -> int | None:
    """The line of a [monitor] setting: its key inside its table (the i-th [[monitor.alerts]]
    for an alert), else the table's header."""
    lines = text.splitlines()
    headers: list[tuple[int, str]] = []
    for n, line in enumerate(lines):
        match = _HEADER.match(line)
        if match:
            headers.append((n, match.group(2).replace('"', "").replace(" ", "")))
    parts = [p for p in loc if isinstance(p, str)]
    if loc[:1] == ["alerts"] and len(loc) > 1 and isinstance(loc[1], int):
        table, nth, key = "monitor.alerts", loc[1], (parts[1] if len(parts) > 1 else None)
    elif loc[:1] == ["online_eval"]:
        table, nth, key = "monitor.online_eval", 0, (parts[1] if len(parts) > 1 else None)
    else:
        table, nth, key = "monitor", 0, (parts[0] if parts else None)
    found = [n for n, name in headers if name == table]
    if len(found) > nth:
        start = found[nth]
        end = next((n for n, _ in headers if n > start), len(lines))
        if key is not None:
            pattern = re.compile(rf'^\s*"?{re.escape(key)}"?\s*=')
            for n in range(start + 1, end):
                if pattern.match(lines[n]):
                    return n + 1
            sub = next((n for n, name in headers if name == f"{table}.{key}"), None)
            if sub is not None:  # a table of its own, e.g. [monitor.online_evals]
                return sub + 1
        return start + 1
    return toml_line(text, ["monitor", *parts])


def _fail(message: str, loc: list[str | int], path: Path | None, text: str | None) -> ConfigError:
    line = _line(text, loc) if text is not None else None
    return ConfigError(f"{_where(loc)}: {message}", path=path, line=line)


def _live_list() -> str:
    return ", ".join(LIVE_METRICS)


def parse_monitor(
    data: Mapping[str, Any], *, path: Path | None = None, text: str | None = None
) -> MonitorSettings:
    """Check a ``[monitor]`` table. Errors name the setting, and with ``path`` and the file's
    ``text``, the file and line."""
    try:
        settings = MonitorSettings.model_validate(dict(data))
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt key also leaves its real one missing: name the misspelling.
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc: list[str | int] = [p for p in err["loc"] if p not in _BRANCHES]
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            owner = next((str(p) for p in reversed(loc[:-1]) if str(p) in _FIELDS), "")
            known = ", ".join(_FIELDS[owner].model_fields)
            message = f"unknown setting (settings here: {known})"
        raise _fail(message, loc, path, text) from None

    online = settings.online_eval
    if online is not None:
        _check_online(online, path, text)
    if settings.alerts and online is None:
        raise _fail(
            "alert rules score nothing without online evaluation: add [monitor.online_eval] "
            "with sample_rate and metrics",
            ["alerts", 0],
            path,
            text,
        )
    names = {s.key: s.name for s in online.metric_specs()} if online is not None else {}
    keys: dict[str, int] = {}
    for i, rule in enumerate(settings.alerts):
        if rule.metric not in names:
            close = difflib.get_close_matches(rule.metric, list(names), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise _fail(
                f"{rule.metric!r} is not one of the metrics of [monitor.online_eval] "
                f"({', '.join(names)}).{hint}",
                ["alerts", i, "metric"],
                path,
                text,
            )
        if names[rule.metric] not in _MEASURES and not 0 <= rule.threshold <= 1:
            raise _fail(
                f"{rule.metric} scores run from 0 to 1 (a judge's 4 on its 1-5 scale is 0.75); "
                f"got {rule.threshold:g}",
                ["alerts", i, rule.op],
                path,
                text,
            )
        if rule.key in keys:
            raise _fail(
                f"this rule is the same as alert {keys[rule.key] + 1} ({rule.key}); remove one, "
                "or give them different names",
                ["alerts", i],
                path,
                text,
            )
        keys[rule.key] = i
    if settings.webhook_url is not None:
        url = urlsplit(settings.webhook_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise _fail(
                "give an http:// or https:// URL, e.g. https://hooks.example.com/outcrop "
                f"(got {settings.webhook_url[:80]!r})",
                ["webhook_url"],
                path,
                text,
            )
    return settings


def _check_online(online: OnlineEvalSettings, path: Path | None, text: str | None) -> None:
    seen: set[str] = set()
    for i, spec in enumerate(online.metric_specs()):
        loc: list[str | int] = ["online_eval", "metrics", i]
        if spec.name not in METRICS:
            close = difflib.get_close_matches(spec.name, list(LIVE_METRICS), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise _fail(
                f"unknown metric {spec.name!r}.{hint} Metrics that can score live traffic: "
                f"{_live_list()}.",
                loc,
                path,
                text,
            )
        try:
            metric = build_metric(spec)
        except InvalidRequestError as exc:
            raise _fail(str(exc), loc, path, text) from None
        if metric.needs is not None or metric.kind in _RETRIEVAL_ONLY:
            why = _NOT_LIVE_WHY.get(metric.needs or "", "needs the passages an answer was based on")
            raise _fail(
                f"{spec.name} {why}, which live traffic does not have (use it in an eval suite). "
                f"Metrics that can score live traffic: {_live_list()}.",
                loc,
                path,
                text,
            )
        if spec.key in seen:
            raise _fail(
                f"metric {spec.key!r} is listed twice; give one a label to use a metric twice",
                loc,
                path,
                text,
            )
        seen.add(spec.key)
    for i, prompt in enumerate(online.prompts):
        name, at, version = prompt.partition("@")
        if not name or (at and not version.isdigit()):
            raise _fail(
                f"{prompt!r} is not a prompt: give its name, or name@version such as support@3",
                ["online_eval", "prompts", i],
                path,
                text,
            )


# -- the evaluator ----------------------------------------------------------------------


def _text(value: Any) -> str:
    """The text of a stored message's content (a string, or a list of parts)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(str(p.get("text", "")) for p in value if isinstance(p, dict) and "text" in p)
    return ""


def _question(row: TraceRow) -> str:
    messages = row.request.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def _answer(row: TraceRow) -> str:
    text = row.response or ""
    if row.finish_reason == "tool_calls":  # stored as the whole message, tool calls and all
        try:
            return Message.model_validate_json(text).text
        except ValueError:
            return ""
    return text


def _wait_done(q: queue.Queue[Any], deadline: float) -> bool:
    with q.all_tasks_done:
        while q.unfinished_tasks:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            q.all_tasks_done.wait(left)
    return True


def _shown_url(url: str) -> str:
    """A webhook URL for logs: scheme and host only (paths often hold a secret token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}/…"


class OnlineEvaluator:
    """Scores sampled live calls with ``settings``' metrics and raises its alerts.

    ``start()`` subscribes to the gateway's trace store; ``close()`` (or leaving a
    ``with`` block) stops taking calls and scores those queued, for ``timeout`` seconds
    at most. ``drain()`` waits until every call stored so far is scored.
    """

    def __init__(
        self,
        gateway: Gateway,
        settings: MonitorSettings,
        *,
        clock: Callable[[], float] = time.time,
    ):
        if settings.online_eval is None:
            raise UserError(
                "Online evaluation is not configured: add [monitor.online_eval] with "
                "sample_rate and metrics to outcrop.toml."
            )
        self.gateway = gateway
        self.store = gateway.store
        self.settings = settings
        self.config: OnlineEvalSettings = settings.online_eval
        self.clock = clock
        specs = self.config.metric_specs()
        self.metrics: list[Metric] = [build_metric(s) for s in specs]
        # A model that does not exist stops the server from starting, not every score.
        models: list[tuple[str | None, list[str | int]]] = [
            (s.model, ["online_eval", "metrics", i]) for i, s in enumerate(specs) if s.model
        ]
        if self.config.judge_model is not None:
            models.append((self.config.judge_model, ["online_eval", "judge_model"]))
        elif any(m.is_judge and not s.model for m, s in zip(self.metrics, specs, strict=True)):
            models.append((None, ["online_eval", "judge_model"]))  # the default model judges
        for model, loc in models:
            try:
                gateway.resolve(model)
            except OutcropError as exc:
                path = gateway.settings.path
                text = path.read_text(encoding="utf-8") if path is not None else None
                raise _fail(str(exc), loc, path, text) from None
        self._queue: queue.Queue[TraceRow] = queue.Queue(maxsize=self.config.queue_size)
        self._hooks: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1000)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(
            ("seen", "eligible", "sampled", "dropped", "scored", "unscored", "failed"), 0
        )
        self._counts["webhook_failures"] = 0
        self._stop = threading.Event()
        self._abandon = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False

    @classmethod
    def from_gateway(
        cls, gateway: Gateway, *, clock: Callable[[], float] = time.time
    ) -> OnlineEvaluator | None:
        """The evaluator outcrop.toml's ``[monitor]`` asks for, or None when it asks for none."""
        data = getattr(gateway.settings, "monitor", None) or {}
        if not data:
            return None
        settings = parse_monitor(data, path=gateway.settings.path)
        if settings.online_eval is None:
            return None
        return cls(gateway, settings, clock=clock)

    # -- life -------------------------------------------------------------------------

    def start(self) -> OnlineEvaluator:
        if self._started:
            return self
        self._started = True
        self._threads.append(
            threading.Thread(target=self._work, name="outcrop-online-eval", daemon=True)
        )
        if self.settings.webhook_url:
            self._threads.append(
                threading.Thread(target=self._send_loop, name="outcrop-alert-webhook", daemon=True)
            )
        for thread in self._threads:
            thread.start()
        self.store.subscribe(self._listen)
        return self

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until the calls stored so far are scored and their alerts sent; False when
        ``timeout`` seconds were not enough."""
        deadline = time.monotonic() + timeout
        self.store.flush()  # every stored call has been offered to the sampler
        return _wait_done(self._queue, deadline) and _wait_done(self._hooks, deadline)

    def close(self, timeout: float = 10.0) -> None:
        """Stop sampling, score what is queued (``timeout`` seconds at most), stop the threads."""
        if self._started:
            self.store.flush()  # calls stored before now are offered to the sampler
        self.store.unsubscribe(self._listen)
        if not self._started:
            return
        deadline = time.monotonic() + timeout
        if not _wait_done(self._queue, deadline):
            left = self._queue.qsize()
            self._abandon.set()
            log.warning("online evaluation stopped with %d sampled calls not scored", left)
        _wait_done(self._hooks, deadline)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=max(0.5, deadline - time.monotonic()))
        self._started = False

    def __enter__(self) -> OnlineEvaluator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def status(self) -> dict[str, Any]:
        """What the evaluator has done since it started (for the Monitor page)."""
        with self._lock:
            counts = dict(self._counts)
        return {
            "enabled": True,
            "sample_rate": self.config.sample_rate,
            "metrics": [m.name for m in self.metrics],
            "rules": [r.key for r in self.settings.alerts],
            "queued": self._queue.qsize(),
            "webhook": self.settings.webhook_url is not None,
            **counts,
        }

    def kinds(self) -> dict[str, str]:
        """metric (as results name it) → the metric it is (e.g. a labelled judge → judge)."""
        return {m.name: m.kind for m in self.metrics}

    # -- sampling (on the trace writer thread: never blocks) ----------------------------

    def sampled(self, trace_id: str) -> bool:
        """Whether a call is in the sample: a hash of its id against the rate, the same
        answer in every replica that shares the seed."""
        digest = hashlib.sha256(f"{self.config.seed}:{trace_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.config.sample_rate

    def eligible(self, row: TraceRow) -> bool:
        """A finished chat call of the models and prompts configured (never a judge's, an
        eval's or an embedding call)."""
        if row.kind != "chat" or row.status != "ok":
            return False
        if self.config.models:
            names = {row.model, row.requested_model} - {None}
            if not any(fnmatch.fnmatchcase(str(n), p) for n in names for p in self.config.models):
                return False
        if self.config.prompts:
            if row.prompt_name is None:
                return False
            ok = False
            for entry in self.config.prompts:
                name, _, version = entry.partition("@")
                if name == row.prompt_name and (not version or int(version) == row.prompt_version):
                    ok = True
            if not ok:
                return False
        return True

    def _listen(self, rows: list[TraceRow]) -> None:
        for row in rows:
            eligible = self.eligible(row)
            take = eligible and self.sampled(row.id)
            dropped = 0
            if take:
                try:
                    self._queue.put_nowait(row)
                except queue.Full:
                    dropped = 1
            with self._lock:
                self._counts["seen"] += 1
                self._counts["eligible"] += eligible
                self._counts["sampled"] += take
                self._counts["dropped"] += dropped
                total = self._counts["dropped"]
            if dropped and (total == 1 or total % 100 == 0):
                log.warning(
                    "online evaluation is behind: its queue of %d calls is full, %d sampled "
                    "calls dropped so far (lower sample_rate, or give the judge more speed)",
                    self.config.queue_size,
                    total,
                )

    # -- scoring (on the worker thread) ------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                row = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            try:
                if not self._abandon.is_set():
                    self.score(row)
            except Exception:
                log.exception("online evaluation could not score call %s", row.id)
                with self._lock:
                    self._counts["failed"] += 1
            finally:
                self._queue.task_done()

    def score(self, row: TraceRow) -> list[dict[str, Any]]:
        """Score one call with every metric, store the scores and check the alert rules."""
        sample = Sample(
            case=Case(),
            output=_answer(row),
            question=_question(row),
            latency_ms=row.latency_ms,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cost_usd=row.cost_usd,
        )
        ctx = MetricContext(
            self.gateway, self.config.judge_model, seed=self.config.seed, parent_id=row.id
        )
        scores: list[dict[str, Any]] = []
        for metric in self.metrics:
            try:
                score = metric.score(sample, ctx)
                value, reason = score.value, score.reason
            except OutcropError as exc:  # the judge failed: no score, and why
                value, reason = None, f"could not score: {exc}"
            if value is not None and not math.isfinite(value):
                value, reason = None, f"not a number: {value}"
            scores.append(
                {
                    "trace_id": row.id,
                    "metric": metric.name,
                    "score": value,
                    "reason": reason,
                    "scored_at": self.clock(),
                    "model": row.model or row.requested_model,
                    "prompt_name": row.prompt_name,
                    "prompt_version": row.prompt_version,
                    "api_key": row.api_key,
                }
            )
        self.store.add_online_scores(scores)
        with self._lock:
            self._counts["scored"] += 1
            self._counts["unscored"] += sum(s["score"] is None for s in scores)
        scored = {s["metric"] for s in scores if s["score"] is not None}
        for rule in self.settings.alerts:
            if rule.metric in scored:
                self.check(rule)
        return scores

    def check(self, rule: AlertRule) -> dict[str, Any] | None:
        """Open or close ``rule``'s alert from its window; returns the alert it opened or
        closed, or None when nothing changed."""
        now = self.clock()
        if rule.window_minutes is not None:
            values = self.store.online_window(rule.metric, since=now - rule.window_minutes * 60)
        else:
            values = self.store.online_window(rule.metric, last=rule.window)
        if len(values) < rule.min_count:
            return None  # too few scores to say either way
        mean = math.fsum(values) / len(values)
        if rule.tripped(mean):
            alert = self.store.open_alert(
                alert_id=secrets.token_hex(8),
                rule=rule.key,
                metric=rule.metric,
                opened_at=now,
                value=mean,
                threshold=rule.threshold,
                detail=rule.detail(mean, len(values)),
            )
            if alert is not None:
                log.warning("alert opened: %s (rule: %s)", alert["detail"], rule.key)
                self._send("alert.opened", alert)
            return alert
        alert = self.store.close_alert(rule.key, closed_at=now, value=mean)
        if alert is not None:
            log.warning(
                "alert resolved: mean %s is back to %.4g (rule: %s)", rule.metric, mean, rule.key
            )
            self._send("alert.resolved", alert)
        return alert

    # -- the webhook (on a thread of its own) ------------------------------------------

    def _send(self, event: str, alert: dict[str, Any]) -> None:
        if not self.settings.webhook_url:
            return
        payload = {"event": event, "alert": alert, "source": "outcrop", "sent_at": self.clock()}
        try:
            self._hooks.put_nowait(payload)
        except queue.Full:
            log.warning("alert webhook is behind: %s of %s not sent", event, alert["rule"])

    def _send_loop(self) -> None:
        while True:
            try:
                payload = self._hooks.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            try:
                self.post(payload)
            except Exception:  # never let one bad payload stop the alerts after it
                log.exception("alert webhook failed")
            finally:
                self._hooks.task_done()

    def post(self, payload: dict[str, Any]) -> bool:
        """POST one payload to the webhook, retrying connection failures, 429s and 5xx; a
        failure is logged and returns False."""
        url = self.settings.webhook_url
        assert url is not None
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        tries = 1 + self.settings.webhook_retries
        why = ""
        for attempt in range(tries):
            request = urllib.request.Request(
                url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "outcrop"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.settings.webhook_timeout_s) as r:
                    r.read()
                return True
            except urllib.error.HTTPError as exc:
                why = f"HTTP {exc.code}"
                exc.close()
                if exc.code < 500 and exc.code != 429:
                    break  # the receiver refuses this payload: sending it again will not help
            except OSError as exc:  # URLError (refused, unknown host), a timeout
                reason = getattr(exc, "reason", exc)
                why = f"{type(reason).__name__}: {reason}"
            if attempt + 1 < tries and self._stop.wait(min(0.5 * 2**attempt, 4.0)):
                break
        with self._lock:
            self._counts["webhook_failures"] += 1
        log.warning(
            "alert webhook %s failed (%s; tries: %d); %s of %r is stored and shown on the "
            "Monitor page",
            _shown_url(url),
            why,
            attempt + 1,
            payload["event"],
            payload["alert"]["rule"],
        )
        return False
