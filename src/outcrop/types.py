"""The typed model API every part of outcrop speaks.

A :class:`ChatRequest` goes into the gateway; a :class:`ChatResponse` comes out,
or a stream of :class:`StreamEvent` when the caller streams. Every model is
pydantic v2 with ``extra="forbid"``, so a misspelt option is an error, not a
silent default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import InvalidRequestError

__all__ = [
    "ChatOptions",
    "ChatRequest",
    "ChatResponse",
    "EmbeddingResponse",
    "FinishReason",
    "ImageResponse",
    "Message",
    "ResponseFormat",
    "Role",
    "StreamEvent",
    "TextPart",
    "ToolCall",
    "ToolChoice",
    "ToolSpec",
    "Usage",
    "estimate_tokens",
    "validation_error",
]

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Model):
    """One text part of a message's content."""

    type: Literal["text"] = "text"
    text: str

    @field_validator("text")
    @classmethod
    def _valid_unicode(cls, value: str) -> str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"the text is not valid Unicode (a lone surrogate at position {exc.start}); "
                "decode input bytes as UTF-8 with errors='replace'"
            ) from None
        return value


class ToolCall(_Model):
    """A model's request to call one tool with arguments."""

    id: str = Field(description="Identifier that the tool's result message refers back to.")
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Message(_Model):
    """One turn of a conversation.

    ``content`` accepts a plain string, kept as a single :class:`TextPart`.
    """

    role: Role
    content: list[TextPart] = Field(default_factory=list)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_to_parts(cls, value: object) -> object:
        if isinstance(value, str):
            return [TextPart(text=value)]
        if value is None:
            return []
        return value

    @model_validator(mode="after")
    def _check_role_fields(self) -> Self:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id (the id of the call it answers)")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    @property
    def text(self) -> str:
        """The concatenated text of every text part."""
        return "".join(part.text for part in self.content)

    @classmethod
    def system(cls, text: str) -> Message:
        return cls(role="system", content=[TextPart(text=text)])

    @classmethod
    def user(cls, text: str) -> Message:
        return cls(role="user", content=[TextPart(text=text)])

    @classmethod
    def assistant(cls, text: str, tool_calls: list[ToolCall] | None = None) -> Message:
        return cls(role="assistant", content=[TextPart(text=text)], tool_calls=tool_calls or [])

    @classmethod
    def tool(cls, tool_call_id: str, text: str) -> Message:
        return cls(role="tool", content=[TextPart(text=text)], tool_call_id=tool_call_id)


class ToolSpec(_Model):
    """A tool the model may call: a name, what it does, and a JSON schema of its arguments."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str = ""
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON schema of the arguments object.",
    )


class ToolChoiceFunction(_Model):
    name: str


ToolChoice = Literal["auto", "none", "required"] | ToolChoiceFunction


class ResponseFormat(_Model):
    """Ask for free text, any JSON object, or JSON matching a schema."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict[str, Any] | None = Field(
        default=None, description="The JSON schema the output must match (type json_schema)."
    )

    @model_validator(mode="after")
    def _schema_when_needed(self) -> Self:
        if self.type == "json_schema" and not self.json_schema:
            raise ValueError("type 'json_schema' needs a json_schema")
        return self


class Usage(_Model):
    """Tokens read (the prompt) and written (the completion) by one call."""

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    estimated: bool = Field(
        default=False,
        description="True when the provider reported no usage and outcrop estimated it.",
    )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            estimated=self.estimated or other.estimated,
        )


class ChatOptions(_Model):
    """Generation options. The same class validates the Python API, `-o key value` and HTTP."""

    temperature: float | None = Field(
        default=None, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy."
    )
    top_p: float | None = Field(
        default=None, gt=0.0, le=1.0, description="Nucleus sampling: keep this share of mass."
    )
    max_tokens: int | None = Field(
        default=None, ge=1, le=131072, description="Most tokens to generate."
    )
    stop: list[str] = Field(
        default_factory=list, max_length=8, description="Stop when any of these strings appears."
    )
    seed: int | None = Field(
        default=None, ge=0, le=2**32 - 1, description="Seed for reproducible sampling."
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: object) -> object:
        if isinstance(value, str):
            return [value]
        if value is None:
            return []
        return value

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: list[str]) -> list[str]:
        if any(s == "" for s in value):
            raise ValueError("stop strings must not be empty")
        for s in value:
            TextPart._valid_unicode(s)
        return value


class ChatRequest(ChatOptions):
    """One call to a chat model."""

    model: str | None = Field(default=None, min_length=1, description="provider:model id or alias.")
    messages: list[Message] = Field(min_length=1)
    tools: list[ToolSpec] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    response_format: ResponseFormat | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not any(m.text.strip() or m.tool_calls for m in self.messages):
            raise ValueError("the prompt is empty: give at least one message with text")
        if isinstance(self.tool_choice, ToolChoiceFunction) and self.tool_choice.name not in {
            t.name for t in self.tools
        }:
            raise ValueError(f"tool_choice names {self.tool_choice.name!r}, which is not in tools")
        names = [t.name for t in self.tools]
        if len(names) != len(set(names)):
            raise ValueError("tool names must be unique")
        return self

    def options(self) -> ChatOptions:
        return ChatOptions.model_validate(self.model_dump(include=set(ChatOptions.model_fields)))


class ChatResponse(_Model):
    """What a call returned, with exact usage and where it came from."""

    id: str
    model: str = Field(description="The model that answered (after aliases and fallbacks).")
    message: Message
    finish_reason: FinishReason = "stop"
    usage: Usage = Field(default_factory=Usage)
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cost_usd: float | None = None

    @property
    def text(self) -> str:
        return self.message.text

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.message.tool_calls

    def parse_json(self) -> Any:
        """The answer parsed as JSON (for ``response_format`` json_object or json_schema)."""
        try:
            return json.loads(self.text)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(
                f"The answer is not valid JSON ({exc.msg} at position {exc.pos}); ask for "
                "response_format json_schema to constrain the model's output."
            ) from None


class EmbeddingResponse(_Model):
    """Vectors for the texts of one embedding call, in order."""

    id: str
    model: str
    vectors: list[list[float]]
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = None


class ImageResponse(_Model):
    """Files written by one image-generation call."""

    id: str
    model: str
    paths: list[Path]
    cost_usd: float | None = None


class StreamEvent(_Model):
    """One event of a streamed call.

    ``text``: a piece of the answer. ``tool_call``: one complete tool call.
    ``finish``: the last event, with the exact usage and the finish reason.
    """

    type: Literal["text", "tool_call", "finish"]
    text: str = ""
    tool_call: ToolCall | None = None
    usage: Usage | None = None
    finish_reason: FinishReason | None = None
    model: str | None = None


def estimate_tokens(text: str) -> int:
    """About four characters a token: outcrop's one estimate, used only where a model's own
    tokenizer or a provider's count is missing (and then marked as estimated)."""
    return (len(text) + 3) // 4


def validation_error(exc: ValidationError, what: str = "request") -> InvalidRequestError:
    """Turn pydantic's error into one that names the field, the problem and the value."""
    parts = []
    first_field: str | None = None
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        first_field = first_field or loc or None
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = ""
        if err["type"] not in ("missing", "model_type") and not isinstance(value, dict | list):
            shown = f" (got {value!r})"
        if err["type"] == "extra_forbidden":
            msg = "unknown option"
        parts.append(f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}")
    return InvalidRequestError(f"Invalid {what}: " + "; ".join(parts), field=first_field)
