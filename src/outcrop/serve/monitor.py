"""The monitoring API behind the dashboard: traces, feedback, summaries over time, and the
prompt builder's live rendering. The same data ``outcrop logs`` and ``outcrop usage`` show."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidRequestError
from ..gateway import Gateway
from ..observe.online import OnlineEvaluator

__all__ = ["monitor_router"]


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    rating: Literal["up", "down"]
    comment: str = Field(default="", max_length=4000)


class RenderPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: dict[str, Any]
    variables: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None


class _NotFound(Exception):
    pass


class ScoreBucket(BaseModel):
    start: float
    count: int = Field(description="Calls scored in the bucket.")
    mean: float | None


class MetricSeries(BaseModel):
    metric: str
    kind: str | None = Field(description="The metric it is (a labelled judge: judge).")
    higher_is_better: bool | None
    count: int
    mean: float | None
    buckets: list[ScoreBucket]


class OnlineStatus(BaseModel):
    """The evaluator of this server (counts since it started); enabled false when off."""

    enabled: bool
    sample_rate: float | None = None
    metrics: list[str] = Field(default_factory=list)
    rules: list[str] = Field(default_factory=list)
    webhook: bool = False
    seen: int = 0
    eligible: int = 0
    sampled: int = 0
    dropped: int = 0
    queued: int = 0
    scored: int = 0
    unscored: int = 0
    failed: int = 0
    webhook_failures: int = 0


class OnlineSummary(BaseModel):
    since: float
    until: float
    bucket: int
    metrics: list[MetricSeries]
    status: OnlineStatus


class Alert(BaseModel):
    id: str
    rule: str
    metric: str
    open: bool
    opened_at: float
    closed_at: float | None
    value: float | None = Field(description="The window's mean when the alert opened.")
    closed_value: float | None = Field(description="The window's mean when it closed.")
    threshold: float
    detail: str


class AlertList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Alert]


_AUTO_BUCKETS = (60, 300, 900, 3600, 21600, 86400, 604800)
_MEASURES = {"latency_ms", "tokens", "cost"}


def _summary_row(trace: Any, feedback: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": trace.id,
        "started_at": trace.started_at,
        "kind": trace.kind,
        "model": trace.model or trace.requested_model,
        "status": trace.status,
        "input_tokens": trace.input_tokens,
        "output_tokens": trace.output_tokens,
        "latency_ms": trace.latency_ms,
        "ttft_ms": trace.ttft_ms,
        "cost_usd": trace.cost_usd,
        "prompt_name": trace.prompt_name,
        "prompt_version": trace.prompt_version,
        "api_key": trace.api_key,
        "feedback": feedback,
    }


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _totals(calls: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [c["latency_ms"] for c in calls if c["latency_ms"] is not None]
    return {
        "requests": len(calls),
        "errors": sum(c["status"] == "error" for c in calls),
        "input_tokens": sum(c["input_tokens"] for c in calls),
        "output_tokens": sum(c["output_tokens"] for c in calls),
        "cost_usd": round(sum(c["cost_usd"] or 0.0 for c in calls), 8),
        "latency_p50_ms": _percentile(latencies, 50),
        "latency_p95_ms": _percentile(latencies, 95),
    }


def monitor_router(
    gateway: Gateway,
    caller: Any,
    error: Callable[..., Exception],
    online: OnlineEvaluator | None = None,
) -> APIRouter:
    """Routes under /v1 for the dashboard. ``caller`` is the key dependency; ``error`` the
    server's API error class (status, message, code=…); ``online`` the server's online
    evaluator, if it runs one."""
    router = APIRouter(prefix="/v1", tags=["monitor"])
    store = gateway.store
    who = Depends(caller)

    def not_found(trace_id: str) -> Exception:
        return error(404, f"No trace {trace_id!r}.", code="trace_not_found")

    @router.get("/traces")
    def traces(
        limit: int = Query(50, ge=1, le=1000),
        model: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        key: Any = who,
    ) -> dict[str, Any]:
        """The latest calls, newest first, with their feedback."""
        rows = store.recent(limit=limit, model=model, kind=kind, status=status)
        if key is not None:
            rows = [r for r in rows if r.api_key == key.id]
        feedback = store.feedback([r.id for r in rows])
        return {"object": "list", "data": [_summary_row(r, feedback.get(r.id)) for r in rows]}

    @router.get("/traces/{trace_id}")
    def trace(trace_id: str, key: Any = who) -> dict[str, Any]:
        """One call: request, response, attempts, guardrail decisions, children, feedback."""
        row = store.get(trace_id)
        if row is None or (key is not None and row.api_key != key.id):
            raise not_found(trace_id)
        children = store.children(row.id)
        return {
            "trace": row.to_dict(),
            "children": [c.to_dict() for c in children],
            "feedback": store.feedback([row.id]).get(row.id),
        }

    @router.post("/traces/{trace_id}/feedback")
    def feedback(trace_id: str, body: Feedback, key: Any = who) -> dict[str, Any]:
        """Thumbs up or down, and a comment, on a call."""
        row = store.get(trace_id)
        if row is None or (key is not None and row.api_key != key.id):
            raise not_found(trace_id)
        store.set_feedback(row.id, body.rating, body.comment)
        return {"ok": True, "trace_id": row.id}

    @router.get("/metrics/summary")
    def summary(
        hours: float = 24.0,
        bucket: int = 3600,
        model: str | None = None,
        prompt: str | None = None,
        api_key: str | None = Query(None, alias="key"),
        key: Any = who,
    ) -> dict[str, Any]:
        """Requests, errors, tokens, cost and latency p50/p95 per time bucket."""
        if not 0 < hours <= 8760:
            raise InvalidRequestError(
                f"hours must be above 0 and at most 8760 (a year); got {hours:g}", field="hours"
            )
        if bucket < 60 or bucket > hours * 3600:
            raise InvalidRequestError(
                f"bucket must be at least 60 seconds and at most the range ({hours:g} h); "
                f"got {bucket}",
                field="bucket",
            )
        if key is not None:
            api_key = key.id  # a key sees its own calls only
        now = time.time()
        since = now - hours * 3600
        calls = store.calls_since(since, model=model, prompt=prompt, api_key=api_key)
        buckets = []
        n = math.ceil(hours * 3600 / bucket)
        for i in range(n):
            start = since + i * bucket
            inside = [c for c in calls if start <= c["started_at"] < start + bucket]
            buckets.append({"start": start, **_totals(inside)})
        return {"buckets": buckets, "totals": _totals(calls), "since": since, "until": now}

    @router.post("/prompts/render")
    async def render(body: RenderPrompt, key: Any = who) -> dict[str, Any]:
        """The prompt builder's view: the messages, the text the model reads, its tokens."""
        from pydantic import ValidationError

        from ..prompts.prompt import Prompt
        from ..types import validation_error

        try:
            prompt = Prompt.model_validate(body.prompt)
        except ValidationError as exc:
            raise validation_error(exc, "prompt") from None
        chat = prompt.request(body.variables, model=body.model or gateway.settings.default_model)
        rendered = await asyncio.to_thread(gateway.render, chat)
        return {
            "messages": [{"role": m.role, "content": m.text} for m in chat.messages],
            "text": rendered.text,
            "tokens": rendered.tokens,
            "estimated": rendered.estimated,
        }

    @router.get("/monitor/online", response_model=OnlineSummary)
    def online_scores(
        since: float | None = Query(None, description="Start, in seconds since the epoch."),
        until: float | None = Query(None, description="End (default: now)."),
        bucket: int | None = Query(None, description="Seconds per point (default: ~60 points)."),
        model: str | None = None,
        prompt: str | None = Query(None, description="name or name@version"),
        key: Any = who,
    ) -> dict[str, Any]:
        """Online evaluation: the mean score of sampled live calls per metric and time bucket
        (default: the last 24 hours), and what the server's evaluator has done."""
        for name, value in (("since", since), ("until", until)):
            if value is not None and not math.isfinite(value):
                raise InvalidRequestError(
                    f"{name} is a time in seconds since the epoch, e.g. {int(time.time())}; "
                    f"got {value}",
                    field=name,
                )
        end = time.time() if until is None else until
        start = end - 86400 if since is None else since
        span = end - start
        if not 0 < span <= 8760 * 3600:
            raise InvalidRequestError(
                "since must be before until, at most a year (8760 h) apart; got "
                f"{span / 3600:.6g} h",
                field="since",
            )
        if bucket is None:
            bucket = next((b for b in _AUTO_BUCKETS if span / b <= 60), _AUTO_BUCKETS[-1])
        elif bucket < 60 or bucket > span:
            raise InvalidRequestError(
                f"bucket must be at least 60 seconds and at most the range ({span:.0f} s); "
                f"got {bucket}",
                field="bucket",
            )
        count = math.ceil(span / bucket)
        if count > 1000:
            raise InvalidRequestError(
                f"a bucket of {bucket} s makes {count} points over this range, more than 1000; "
                "choose a bigger bucket",
                field="bucket",
            )
        rows = store.online_scores(
            start, end, model=model, prompt=prompt, api_key=key.id if key is not None else None
        )
        kinds = online.kinds() if online is not None else {}
        names = list(kinds)
        names += sorted({r["metric"] for r in rows} - set(names))
        series = []
        for name in names:
            points: list[list[float]] = [[] for _ in range(count)]
            for r in rows:
                if r["metric"] == name and r["score"] is not None:
                    points[min(count - 1, int((r["scored_at"] - start) // bucket))].append(
                        r["score"]
                    )
            every = [v for p in points for v in p]
            kind = kinds.get(name)
            series.append(
                {
                    "metric": name,
                    "kind": kind,
                    "higher_is_better": None if kind is None else kind not in _MEASURES,
                    "count": len(every),
                    "mean": math.fsum(every) / len(every) if every else None,
                    "buckets": [
                        {
                            "start": start + i * bucket,
                            "count": len(p),
                            "mean": math.fsum(p) / len(p) if p else None,
                        }
                        for i, p in enumerate(points)
                    ],
                }
            )
        status = online.status() if online is not None else {"enabled": False}
        return {"since": start, "until": end, "bucket": bucket, "metrics": series, "status": status}

    @router.get("/alerts", response_model=AlertList)
    def alerts(
        open_only: bool = Query(False, alias="open", description="Only alerts still open."),
        limit: int = Query(100, ge=1, le=1000),
        key: Any = who,
    ) -> dict[str, Any]:
        """Alerts raised by online evaluation's rules ([[monitor.alerts]]), newest first."""
        rows = store.alerts(open_only=open_only, limit=limit)
        data = [
            {
                **{k: r[k] for k in Alert.model_fields if k in r},
                "open": r["closed_at"] is None,
            }
            for r in rows
        ]
        return {"object": "list", "data": data}

    return router
