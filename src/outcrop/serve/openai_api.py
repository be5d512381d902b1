"""The OpenAI wire format: request bodies in, outcrop types across, OpenAI shapes out.

The request models here are what ``/openapi.json`` documents; they accept what
OpenAI's API accepts (extra fields are ignored, as OpenAI-compatible servers
do; values must have the documented JSON type: ``0`` is not ``false``) and are
turned into outcrop's strict :class:`~outcrop.types.ChatRequest`, whose
validation messages name the field.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Literal

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import InvalidRequestError
from ..types import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    Message,
    ResponseFormat,
    StreamEvent,
    TextPart,
    ToolCall,
    ToolSpec,
    Usage,
    validation_error,
)

if TYPE_CHECKING:
    from ..observe.store import Store
    from ..prompts.prompt import Prompt
    from ..prompts.versions import PromptVersion

__all__ = [
    "ChatCompletion",
    "ChatCompletionRequest",
    "EmbeddingList",
    "EmbeddingRequest",
    "ErrorBody",
    "ModelList",
    "OutcropExtension",
    "chunk",
    "completion",
    "stored_prompt",
    "to_chat_request",
]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """OpenAI's error shape."""

    error: ErrorDetail


class FunctionCall(_Open):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Open):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ContentPart(_Open):
    type: str
    text: str | None = None


class ChatMessageIn(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class FunctionSpec(_Open):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolIn(_Open):
    type: Literal["function"] = "function"
    function: FunctionSpec


class NamedFunction(_Open):
    name: str


class ToolChoiceIn(_Open):
    type: Literal["function"] = "function"
    function: NamedFunction


class JsonSchemaIn(_Open):
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaIn | None = None


class StreamOptions(_Open):
    include_usage: bool | None = None


class OutcropExtension(BaseModel):
    """outcrop's extension of a chat completion: send a stored prompt version, traced as such."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(
        min_length=1,
        max_length=200,
        description="A stored prompt: NAME (its newest version), NAME@3 or NAME@label. Its "
        "rendered messages come before `messages`; its options apply unless the request sets "
        "them; the trace records NAME and the version.",
    )
    variables: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Values for the prompt's variables."
    )

    @field_validator("variables", mode="before")
    @classmethod
    def _scalars(cls, value: object) -> object:
        if isinstance(value, dict):
            for name, item in value.items():
                if not isinstance(item, str | int | float | bool):
                    got = "null" if item is None else type(item).__name__
                    raise ValueError(
                        f"each value is text, a number or true/false; {name!r} is {got}"
                    )
        return value


class ChatCompletionRequest(_Open):
    """``POST /v1/chat/completions``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "local:smollm2-135m",
                    "messages": [{"role": "user", "content": "Name a prime number."}],
                    "max_tokens": 16,
                }
            ]
        }
    )

    model: str = Field(min_length=1)
    messages: list[ChatMessageIn] = Field(
        description="The conversation; may be empty when outcrop.prompt gives the prompt."
    )
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    tools: list[ToolIn] | None = None
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceIn | None = None
    response_format: ResponseFormatIn | None = None
    user: str | None = None
    outcrop: OutcropExtension | None = None


class EmbeddingRequest(_Open):
    """``POST /v1/embeddings``."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "local:all-minilm-l6-v2", "input": "a cat"}]}
    )

    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] | None = "float"


def _message(i: int, m: ChatMessageIn) -> Message:
    if isinstance(m.content, list):
        texts = []
        for j, part in enumerate(m.content):
            if part.type != "text" or part.text is None:
                raise InvalidRequestError(
                    f"messages[{i}].content[{j}]: only text parts are supported (got "
                    f"{part.type!r})",
                    field=f"messages[{i}].content",
                )
            texts.append(part.text)
        text = "".join(texts)
    else:
        text = m.content or ""
    calls = []
    for j, c in enumerate(m.tool_calls or []):
        try:
            arguments = json.loads(c.function.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(
                f"messages[{i}].tool_calls[{j}].function.arguments is not JSON ({exc.msg})",
                field=f"messages[{i}].tool_calls",
            ) from None
        if not isinstance(arguments, dict):
            raise InvalidRequestError(
                f"messages[{i}].tool_calls[{j}].function.arguments must be a JSON object",
                field=f"messages[{i}].tool_calls",
            )
        calls.append(ToolCall(id=c.id, name=c.function.name, arguments=arguments))
    role = "system" if m.role == "developer" else m.role
    try:
        return Message(
            role=role,
            content=[TextPart(text=text)] if text else [],
            tool_calls=calls,
            tool_call_id=m.tool_call_id,
            name=m.name,
        )
    except ValidationError as exc:
        raise validation_error(exc, f"messages[{i}]") from None


def stored_prompt(body: ChatCompletionRequest, store: Store) -> PromptVersion | None:
    """The stored prompt version ``outcrop.prompt`` names (None when the body names none)."""
    if body.outcrop is None:
        return None
    from ..prompts.versions import PromptRegistry

    try:
        return PromptRegistry(store).get(body.outcrop.prompt)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"outcrop.prompt: {exc}", field="outcrop.prompt") from None


def _from_prompt(
    prompt: Prompt, body: ChatCompletionRequest, messages: list[Message]
) -> dict[str, Any]:
    """The prompt's messages (then ``messages``), options and output format."""
    variables = body.outcrop.variables if body.outcrop else {}
    try:
        base = prompt.request(variables, model=body.model)
    except InvalidRequestError as exc:
        where = "outcrop.variables" if exc.field == "variables" else "outcrop.prompt"
        raise InvalidRequestError(f"{where}: {exc}", field=where) from None
    except jinja2.TemplateError as exc:  # a stored template the sandbox cannot compile
        raise InvalidRequestError(
            f"outcrop.prompt: its templates cannot be used ({exc})", field="outcrop.prompt"
        ) from None
    data: dict[str, Any] = base.options().model_dump(exclude_defaults=True)
    data["messages"] = [*base.messages, *messages]
    if base.response_format is not None:
        data["response_format"] = base.response_format
    return data


def to_chat_request(
    body: ChatCompletionRequest, max_tokens_cap: int | None, prompt: Prompt | None = None
) -> ChatRequest:
    """The outcrop request an OpenAI body asks for (``max_tokens`` capped by a budget), after
    ``prompt`` when the body names a stored one (its options under the body's)."""
    if body.n not in (None, 1):
        raise InvalidRequestError("n must be 1: outcrop answers one choice per request", field="n")
    messages = [_message(i, m) for i, m in enumerate(body.messages)]
    data: dict[str, Any] = {"model": body.model, "messages": messages}
    if prompt is not None:
        data.update(_from_prompt(prompt, body, messages))
    elif not messages:
        raise InvalidRequestError(
            "messages: give at least one message (or outcrop.prompt, a stored prompt to send)",
            field="messages",
        )
    for name in ("temperature", "top_p", "seed"):
        value = getattr(body, name)
        if value is not None:
            data[name] = value
    max_tokens = (
        body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    )
    if max_tokens is not None:
        data["max_tokens"] = max_tokens
    if max_tokens_cap is not None:
        data["max_tokens"] = max(1, min(data.get("max_tokens", max_tokens_cap), max_tokens_cap))
    if body.stop is not None:
        data["stop"] = body.stop
    if body.tools:
        data["tools"] = [
            ToolSpec(
                name=t.function.name,
                description=t.function.description or "",
                parameters=t.function.parameters or {"type": "object", "properties": {}},
            )
            if _valid_name(t.function.name, i)
            else None
            for i, t in enumerate(body.tools)
        ]
    if body.tool_choice is not None:
        data["tool_choice"] = (
            body.tool_choice
            if isinstance(body.tool_choice, str)
            else {"name": body.tool_choice.function.name}
        )
    fmt = body.response_format
    if fmt is not None and fmt.type != "text":
        schema = fmt.json_schema.schema_ if fmt.json_schema else None
        if fmt.type == "json_schema" and not schema:
            raise InvalidRequestError(
                "response_format.json_schema.schema is required for type json_schema",
                field="response_format",
            )
        data["response_format"] = ResponseFormat(type=fmt.type, json_schema=schema)
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


class FunctionCallOut(BaseModel):
    name: str
    arguments: str = Field(description="The arguments as a JSON object, encoded as a string.")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """A whole answer (``stream`` false); streamed answers are ``chat.completion.chunk`` events."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(
        description="The vector, or with encoding_format base64 its little-endian float32 bytes."
    )


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    default: bool = Field(default=False, description="The server's default model (outcrop).")
    installed: bool = Field(default=True, description="Usable now (outcrop).")


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


def _valid_name(name: str, i: int) -> bool:
    import re

    if not re.match(r"^[A-Za-z0-9_-]{1,64}$", name):
        raise InvalidRequestError(
            f"tools[{i}].function.name {name!r} is not valid: 1-64 letters, digits, '_' or '-'",
            field="tools",
        )
    return True


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _tool_call_out(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
    }


def completion(response: ChatResponse, created: int | None = None) -> dict[str, Any]:
    """A whole chat completion in OpenAI's shape."""
    message: dict[str, Any] = {"role": "assistant", "content": response.text or None}
    if response.tool_calls:
        message["tool_calls"] = [_tool_call_out(c) for c in response.tool_calls]
    elif message["content"] is None:
        message["content"] = ""
    return {
        "id": f"chatcmpl-{response.id}",
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": response.model,
        "choices": [{"index": 0, "message": message, "finish_reason": response.finish_reason}],
        "usage": _usage(response.usage),
    }


def chunk(
    trace_id: str,
    model: str,
    created: int,
    *,
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    usage: Usage | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; with ``usage`` and no delta, the final usage chunk."""
    out: dict[str, Any] = {
        "id": f"chatcmpl-{trace_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
    }
    if delta is not None or finish_reason is not None:
        out["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}]
    if usage is not None:
        out["usage"] = _usage(usage)
    return out


def event_delta(event: StreamEvent, tool_index: int) -> dict[str, Any] | None:
    """The delta a stream event becomes (None for events without one)."""
    if event.type == "text" and event.text:
        return {"content": event.text}
    if event.type == "tool_call" and event.tool_call is not None:
        return {"tool_calls": [{"index": tool_index, **_tool_call_out(event.tool_call)}]}
    return None
