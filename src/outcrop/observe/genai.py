"""The GenAI semantic conventions of OpenTelemetry, applied to outcrop's trace rows.

:func:`span_for` says what span a :class:`~outcrop.observe.store.TraceRow` becomes:
its name (``{gen_ai.operation.name} {gen_ai.request.model}``), kind, ``gen_ai.*``
attributes, outcrop's own under ``outcrop.*``, and its times. Message contents are
included only when asked for (``capture_content``), as the conventions' opt-in
``gen_ai.input.messages`` / ``gen_ai.output.messages`` JSON. Pure functions: no
OpenTelemetry import here (:mod:`outcrop.observe.otel` sends the spans).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ..config import EndpointSettings
    from .store import TraceRow

__all__ = [
    "NOT_MODEL_CALLS",
    "SpanSpec",
    "error_type",
    "otel_trace_id_of",
    "span_for",
    "span_id_of",
]

# Rows that sum their children (a chain, an agent run) or are not model calls (a tool):
# they become spans, but stay out of the token and duration metrics, which would count twice.
NOT_MODEL_CALLS = frozenset({"chain", "agent", "tool"})
_OPERATIONS = {
    "chat": "chat",
    "eval": "chat",
    "judge": "chat",
    "score": "chat",
    "embedding": "embeddings",
    "image": "generate_content",
    "agent": "invoke_agent",
    "tool": "execute_tool",
}
_ERROR_CLASS = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Timeout|Cancelled|Failed\w*)):")


def _hash(text: str, salt: str, size: int) -> int:
    value = int.from_bytes(hashlib.sha256(f"{salt}:{text}".encode()).digest()[:size], "big")
    return value or 1  # an all-zero id is invalid


def span_id_of(trace_id: str) -> int:
    """The OpenTelemetry span id of an outcrop trace id."""
    return _hash(trace_id, "span", 8)


def otel_trace_id_of(root_id: str) -> int:
    """The OpenTelemetry trace id of a tree of calls, from the outcrop id of its root."""
    return _hash(root_id, "trace", 16)


def _split_model(model: str | None, provider: str | None) -> str | None:
    if model is None:
        return None
    if provider and model.startswith(provider + ":"):
        return model[len(provider) + 1 :]
    return model


def _provider_name(provider: str | None, endpoints: Mapping[str, EndpointSettings]) -> str:
    """gen_ai.provider.name: the endpoint's name, or the convention's name where it has one."""
    if not provider:
        return "_OTHER"
    endpoint = endpoints.get(provider)
    if endpoint is not None and endpoint.api == "bedrock":
        return "aws.bedrock"
    return provider


def _server(provider: str | None, endpoints: Mapping[str, EndpointSettings]) -> dict[str, Any]:
    endpoint = endpoints.get(provider or "")
    if endpoint is None or endpoint.api != "openai":
        return {}
    parts = urlsplit(endpoint.base_url or "https://api.openai.com/v1")
    if not parts.hostname:
        return {}
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {"server.address": parts.hostname, "server.port": port}


def error_type(row: TraceRow) -> str:
    """A failed call's error class (``ProviderTimeoutError``), else its HTTP status, else
    ``_OTHER``: the low-cardinality ``error.type`` of the conventions."""
    match = _ERROR_CLASS.match(row.error or "")
    if match:
        return match.group(1)
    codes = [a.get("status_code") for a in row.attempts if a.get("status_code")]
    return str(codes[-1]) if codes else "_OTHER"


def _text_of(message: Mapping[str, Any]) -> str:
    content = message.get("content") or []
    if isinstance(content, str):
        return content
    return "".join(
        str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type", "text")
    )


def _input_messages(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The request's messages in the conventions' input-messages shape."""
    out: list[dict[str, Any]] = []
    for message in request.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role = message.get("role", "user")
        text = _text_of(message)
        parts: list[dict[str, Any]] = []
        if role == "tool":
            parts.append(
                {"type": "tool_call_response", "id": message.get("tool_call_id"), "response": text}
            )
        elif text:
            parts.append({"type": "text", "content": text})
        for call in message.get("tool_calls") or []:
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": call.get("name"),
                    "arguments": call.get("arguments", {}),
                }
            )
        out.append({"role": role, "parts": parts})
    return out


def _output_messages(row: TraceRow) -> list[dict[str, Any]]:
    """The answer in the conventions' output-messages shape (a tool-calling answer is stored
    as the assistant message's JSON)."""
    text = row.response or ""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if text.startswith("{") and '"tool_calls"' in text:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("role") == "assistant":
            message = parsed
    converted = _input_messages({"messages": [message]})
    out = converted[0] if converted else {"role": "assistant", "parts": []}
    out["finish_reason"] = row.finish_reason or ("error" if row.status == "error" else "stop")
    return [out]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


@dataclass
class SpanSpec:
    """What one span is made of: everything but its ids."""

    name: str
    kind: str  # client | internal
    attributes: dict[str, Any]
    start_ns: int
    end_ns: int
    error: str | None = None  # the status description when the call failed


def span_for(
    row: TraceRow,
    *,
    capture_content: bool = False,
    aliases: Mapping[str, str] | None = None,
    endpoints: Mapping[str, EndpointSettings] | None = None,
) -> SpanSpec:
    """The span a trace row becomes, following the GenAI semantic conventions."""
    aliases = aliases or {}
    endpoints = endpoints or {}
    operation = _OPERATIONS.get(row.kind, row.kind)
    requested = aliases.get(row.requested_model, row.requested_model)
    provider = row.provider or (requested.split(":", 1)[0] if ":" in requested else None)
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "outcrop.trace_id": row.id,
        "outcrop.kind": row.kind,
        "outcrop.status": row.status,
    }
    model_call = row.kind not in NOT_MODEL_CALLS
    if row.kind == "tool":
        tool = row.requested_model
        name = f"execute_tool {tool}"
        attrs["gen_ai.tool.name"] = tool
        attrs["gen_ai.tool.type"] = "function"
        if capture_content:
            attrs["gen_ai.tool.call.arguments"] = _json(row.request.get("arguments", {}))
            if row.response is not None:
                attrs["gen_ai.tool.call.result"] = row.response
    elif row.kind == "chain":
        chain = str(row.request.get("chain") or row.prompt_name or "")
        name = f"chain {chain}".strip()
        attrs["outcrop.chain.name"] = chain
        if capture_content:
            attrs["outcrop.chain.variables"] = _json(row.request.get("variables", {}))
            if row.response is not None:
                attrs["outcrop.chain.outputs"] = row.response
    else:
        request_model = _split_model(requested, provider)
        name = f"{operation} {request_model}" if request_model else operation
        if row.kind == "agent":
            name = "invoke_agent"
        if request_model:
            attrs["gen_ai.request.model"] = request_model
        attrs["gen_ai.provider.name"] = _provider_name(provider, endpoints)
        attrs.update(_server(provider, endpoints))
    if row.model and row.kind not in ("tool",):
        response_model = _split_model(row.model, row.provider)
        if response_model:
            attrs["gen_ai.response.model"] = response_model
        attrs["outcrop.model"] = row.model
    if model_call:
        attrs["outcrop.requested_model"] = row.requested_model
        if row.kind in ("chat", "eval", "judge"):
            attrs["gen_ai.response.id"] = row.id
        request = row.request
        for key, attr in (
            ("temperature", "gen_ai.request.temperature"),
            ("top_p", "gen_ai.request.top_p"),
            ("max_tokens", "gen_ai.request.max_tokens"),
            ("seed", "gen_ai.request.seed"),
        ):
            value = request.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attrs[attr] = value
        stop = request.get("stop")
        if isinstance(stop, list) and stop:
            attrs["gen_ai.request.stop_sequences"] = [str(s) for s in stop]
        response_format = request.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") in (
            "json_object",
            "json_schema",
        ):
            attrs["gen_ai.output.type"] = "json"
        elif row.kind == "image":
            attrs["gen_ai.output.type"] = "image"
        if row.finish_reason:
            attrs["gen_ai.response.finish_reasons"] = [row.finish_reason]
        attrs["outcrop.stream"] = row.stream
        if len(row.attempts) > 1:
            attrs["outcrop.attempts"] = len(row.attempts)
        if row.ttft_ms is not None:
            attrs["outcrop.ttft_ms"] = round(row.ttft_ms, 3)
        if capture_content and row.kind != "embedding" and "messages" in request:
            attrs["gen_ai.input.messages"] = _json(_input_messages(request))
            if row.response is not None or row.status == "ok":
                attrs["gen_ai.output.messages"] = _json(_output_messages(row))
    elif row.kind == "agent" and capture_content:
        task = str(row.request.get("task", ""))
        attrs["gen_ai.input.messages"] = _json(
            [{"role": "user", "parts": [{"type": "text", "content": task}]}]
        )
        if row.response is not None:
            attrs["gen_ai.output.messages"] = _json(_output_messages(row))
    if row.kind != "tool" and (row.input_tokens or row.output_tokens or model_call):
        attrs["gen_ai.usage.input_tokens"] = row.input_tokens
        attrs["gen_ai.usage.output_tokens"] = row.output_tokens
        if row.usage_estimated:
            attrs["outcrop.usage_estimated"] = True
    if row.cost_usd is not None:
        attrs["outcrop.cost_usd"] = row.cost_usd
    if row.prompt_name:
        attrs["outcrop.prompt.name"] = row.prompt_name
    if row.prompt_version is not None:
        attrs["outcrop.prompt.version"] = row.prompt_version
    if row.api_key:
        attrs["outcrop.api_key_id"] = row.api_key
    if row.parent_id:
        attrs["outcrop.parent_id"] = row.parent_id
    if row.guardrails:
        attrs["outcrop.guardrails.count"] = len(row.guardrails)
    error = None
    if row.status == "error":
        attrs["error.type"] = error_type(row)
        error = (row.error or "error")[:1000]
    local = provider in ("local", "test") or not model_call or row.kind == "agent"
    start_ns = int(row.started_at * 1e9)
    end_ns = start_ns + int((row.latency_ms or 0.0) * 1e6)
    return SpanSpec(name, "internal" if local else "client", attrs, start_ns, end_ns, error)
