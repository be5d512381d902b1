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


def monitor_router(gateway: Gateway, caller: Any, error: Callable[..., Exception]) -> APIRouter:
    """Routes under /v1 for the dashboard. ``caller`` is the key dependency; ``error`` the
    server's API error class (status, message, code=…)."""
    router = APIRouter(prefix="/v1", tags=["monitor"])
    store = gateway.store
    who = Depends(caller)

    def not_found(trace_id: str) -> Exception:
        return error(404, f"No trace {trace_id!r}.", code="trace_not_found")

    @router.get("/traces")
    async def traces(
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
    async def trace(trace_id: str, key: Any = who) -> dict[str, Any]:
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
    async def feedback(trace_id: str, body: Feedback, key: Any = who) -> dict[str, Any]:
        """Thumbs up or down, and a comment, on a call."""
        row = store.get(trace_id)
        if row is None or (key is not None and row.api_key != key.id):
            raise not_found(trace_id)
        store.set_feedback(row.id, body.rating, body.comment)
        return {"ok": True, "trace_id": row.id}

    @router.get("/metrics/summary")
    async def summary(
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

    return router
