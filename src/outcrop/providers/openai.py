"""Any OpenAI-compatible server — vLLM, TGI, Ollama, llama.cpp's server, OpenAI itself —
through the official ``openai`` SDK.

The wire format (this module) is separate from the endpoint (base URL, key,
headers: ``[endpoints.NAME]`` in outcrop.toml), so one class serves them all.
The SDK's own retries are off: the gateway retries, so every attempt is traced.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..config import EndpointSettings
from ..errors import (
    MissingExtraError,
    MissingKeyError,
    ProviderError,
    ProviderTimeoutError,
    UnknownModelError,
)
from ..keys import env_var_for, resolve_key
from ..types import (
    ChatRequest,
    FinishReason,
    Message,
    StreamEvent,
    ToolCall,
    Usage,
    estimate_tokens,
)
from .base import EmbeddingResult, ImageResult, ModelInfo, Provider

__all__ = ["OpenAIProvider", "to_openai_messages"]

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "stop",
}


def to_openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """outcrop messages in the Chat Completions wire format."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.text})
        elif m.role == "assistant" and m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": m.text or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                        }
                        for c in m.tool_calls
                    ],
                }
            )
        else:
            item: dict[str, Any] = {"role": m.role, "content": m.text}
            if m.name:
                item["name"] = m.name
            out.append(item)
    return out


def _request_body(
    model: str, request: ChatRequest, json_schema_mode: str = "json_schema"
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": to_openai_messages(request.messages)}
    for name in ("temperature", "top_p", "max_tokens", "seed"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.stop:
        body["stop"] = request.stop
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in request.tools
        ]
        choice = request.tool_choice
        body["tool_choice"] = (
            choice
            if isinstance(choice, str)
            else {"type": "function", "function": {"name": choice.name}}
        )
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_schema" and json_schema_mode == "json_object":
        body["response_format"] = {"type": "json_object", "schema": fmt.json_schema}
    elif fmt is not None and fmt.type == "json_schema":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt.json_schema, "strict": False},
        }
    elif fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    return body


@dataclass
class _PendingCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OpenAIProvider(Provider):
    """Chat, streaming, tools, JSON schema, embeddings and images on an OpenAI-compatible API."""

    supports_tools = True
    supports_json_schema = True

    def __init__(
        self,
        name: str = "openai",
        endpoint: EndpointSettings | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 300.0,
    ):
        self.name = name
        self.endpoint = endpoint or EndpointSettings()
        self._explicit_key = api_key
        self.timeout = timeout
        self._client: Any = None

    @property
    def base_url(self) -> str:
        return self.endpoint.base_url or "the OpenAI API"

    def _key(self) -> str:
        key = resolve_key(self.name, self.endpoint, self._explicit_key)
        if key:
            return key
        required = self.endpoint.key_required
        if required is None:
            required = self.endpoint.base_url is None
        if required:
            raise MissingKeyError(self.name, env_var_for(self.name, self.endpoint))
        return "no-key"  # local servers (vLLM, Ollama, llama.cpp) accept any key

    def client(self) -> Any:
        if self._client is None:
            try:
                import openai
            except ImportError:
                raise MissingExtraError(f"The {self.name} endpoint", "openai") from None
            self._client = openai.OpenAI(
                api_key=self._key(),
                base_url=self.endpoint.base_url,
                timeout=self.timeout,
                max_retries=0,
                default_headers=self.endpoint.headers or None,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def check_model(self, model: str) -> None:
        if not model:
            raise UnknownModelError(
                self.name,
                hint=f" Name the model after the endpoint, e.g. {self.name}:gpt-4o-mini.",
            )

    def models(self) -> list[ModelInfo]:
        if self.name != "openai":
            return []
        from ..catalog.prices import describe as _price_text
        from ..catalog.prices import prices

        return [
            ModelInfo(
                id=f"openai:{model}",
                provider="openai",
                description=_price_text(p),
                installed=resolve_key("openai", self.endpoint, self._explicit_key) is not None,
                how_to_install="set OPENAI_API_KEY or run `outcrop keys set openai`",
                remote=True,
            )
            for (api, model), p in prices().items()
            if api == "openai"
        ]

    def cost(self, model: str, usage: Usage) -> float | None:
        if self.endpoint.api != "openai" or self.name != "openai":
            return None  # self-hosted: outcrop has no price for it
        from ..catalog.prices import cost

        return cost("openai", model, usage)

    # -- errors -------------------------------------------------------------

    def _error(self, exc: Exception, model: str) -> Exception:
        import openai

        where = f"{self.name} ({self.base_url})"
        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeoutError(
                f"{where} did not answer within {self.timeout:g} s; raise [retry] timeout_s "
                "in outcrop.toml or check the server",
                model=f"{self.name}:{model}",
            )
        if isinstance(exc, openai.APIConnectionError):
            return ProviderError(
                f"Cannot reach {where}: {exc.__cause__ or exc}. Check base_url in "
                f"[endpoints.{self.name}] of outcrop.toml and that the server is running.",
                model=f"{self.name}:{model}",
                retryable=True,
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            headers = dict(exc.response.headers)
            detail = _error_detail(exc.body) or exc.message
            if status == 401:
                env_var = env_var_for(self.name, self.endpoint)
                text = (
                    f"{where} rejected the key (401): {detail}. Set {env_var} "
                    f"or run `outcrop keys set {self.name}`."
                )
            elif status == 404:
                text = (
                    f"{where} has no model {model!r} or no such path (404): {detail}. Check the "
                    f"model id and that base_url ends in /v1."
                )
            else:
                text = f"{where} answered {status}: {detail}"
            return ProviderError(
                text,
                model=f"{self.name}:{model}",
                status_code=status,
                body=exc.body,
                headers=headers,
            )
        if isinstance(exc, openai.APIError):
            return ProviderError(
                f"{where} failed: {exc}", model=f"{self.name}:{model}", retryable=True
            )
        return exc

    # -- chat ---------------------------------------------------------------

    def stream(
        self, model: str, request: ChatRequest, *, plain: bool = False
    ) -> Iterator[StreamEvent]:
        import openai
        import pydantic

        body = _request_body(model, request, self.endpoint.json_schema_mode)
        if plain:
            try:
                completion = self.client().chat.completions.create(**body)
            except openai.APIError as exc:
                raise self._error(exc, model) from None
            yield from self._from_completion(completion, model, request)
            return
        try:
            chunks = self.client().chat.completions.create(
                **body, stream=True, stream_options={"include_usage": True}
            )
        except openai.APIError as exc:
            raise self._error(exc, model) from None
        usage: Usage | None = None
        finish: FinishReason = "stop"
        finished = False
        pending: dict[int, _PendingCall] = {}
        slots: dict[int, int] = {}  # the server's index → our call slot
        written: list[str] = []
        try:
            for chunk in chunks:
                if chunk.usage is not None:
                    usage = Usage(
                        input_tokens=chunk.usage.prompt_tokens or 0,
                        output_tokens=chunk.usage.completion_tokens or 0,
                    )
                for choice in chunk.choices or []:
                    delta = choice.delta
                    if delta is not None and delta.content:
                        written.append(delta.content)
                        yield StreamEvent(type="text", text=delta.content)
                    for tc in (delta.tool_calls if delta is not None else None) or []:
                        slot = slots.get(tc.index, tc.index)
                        call = pending.get(slot)
                        if call is not None and tc.id and call.id and tc.id != call.id:
                            # A new call reusing an index (Ollama numbers every call 0).
                            slot = max(pending) + 1
                            slots[tc.index] = slot
                            call = None
                        if call is None:
                            call = pending.setdefault(slot, _PendingCall())
                        if tc.id:
                            call.id = tc.id
                        if tc.function is not None:
                            name = tc.function.name
                            # OpenAI sends the name once; some servers repeat it in every delta.
                            if name and name != call.name:
                                call.name += name
                            if tc.function.arguments:
                                call.arguments.append(tc.function.arguments)
                    if choice.finish_reason:
                        finish = _FINISH.get(choice.finish_reason, "stop")
                        finished = True
        except openai.APIError as exc:
            if isinstance(exc, openai.APIConnectionError) and not isinstance(
                exc, openai.APITimeoutError
            ):
                raise ProviderError(
                    f"The stream from {self.name} ({self.base_url}) broke off: "
                    f"{exc.__cause__ or exc}",
                    model=f"{self.name}:{model}",
                    retryable=True,
                ) from None
            raise self._error(exc, model) from None
        except (pydantic.ValidationError, json.JSONDecodeError, ValueError) as exc:
            raise ProviderError(
                f"{self.name} sent a malformed stream: {exc}",
                model=f"{self.name}:{model}",
                retryable=True,
            ) from None
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if not finished and usage is None:
            # No finish reason and no usage: the connection ended mid-answer.
            raise ProviderError(
                f"The stream from {self.name} ({self.base_url}) broke off before the model "
                "finished",
                model=f"{self.name}:{model}",
                retryable=True,
            )
        for index in sorted(pending):
            call = pending[index]
            raw = "".join(call.arguments) or "{}"
            try:
                arguments = json.loads(raw)
            except json.JSONDecodeError:
                raise ProviderError(
                    f"{self.name}:{model} sent tool-call arguments that are not JSON: {raw[:200]}",
                    model=f"{self.name}:{model}",
                    retryable=True,
                ) from None
            yield StreamEvent(
                type="tool_call",
                tool_call=ToolCall(
                    id=call.id or f"call_{index}", name=call.name, arguments=arguments
                ),
            )
        if pending:
            finish = "tool_calls"
        if usage is None:
            # The server sent no usage (llama-cpp-python's server does not): estimate and say so.
            prompt = "".join(m.text for m in request.messages)
            usage = Usage(
                input_tokens=estimate_tokens(prompt),
                output_tokens=len(written) + len(pending),
                estimated=True,
            )
        yield StreamEvent(type="finish", usage=usage, finish_reason=finish)

    def _from_completion(
        self, completion: Any, model: str, request: ChatRequest
    ) -> Iterator[StreamEvent]:
        if not completion.choices:
            raise ProviderError(
                f"{self.name}:{model} answered with no choices",
                model=f"{self.name}:{model}",
                retryable=True,
            )
        choice = completion.choices[0]
        message = choice.message
        if completion.usage is not None:
            usage = Usage(
                input_tokens=completion.usage.prompt_tokens or 0,
                output_tokens=completion.usage.completion_tokens or 0,
            )
        else:
            prompt = "".join(m.text for m in request.messages)
            usage = Usage(
                input_tokens=estimate_tokens(prompt),
                output_tokens=estimate_tokens(message.content or ""),
                estimated=True,
            )
        if message.content:
            yield StreamEvent(type="text", text=message.content, usage=usage)
        calls = []
        for i, tc in enumerate(message.tool_calls or []):
            function = getattr(tc, "function", None)
            if function is None:
                continue
            try:
                arguments = json.loads(function.arguments or "{}")
            except json.JSONDecodeError:
                raise ProviderError(
                    f"{self.name}:{model} sent tool-call arguments that are not JSON: "
                    f"{(function.arguments or '')[:200]}",
                    model=f"{self.name}:{model}",
                    retryable=True,
                ) from None
            calls.append(ToolCall(id=tc.id or f"call_{i}", name=function.name, arguments=arguments))
        for call in calls:
            yield StreamEvent(type="tool_call", tool_call=call, usage=usage)
        finish = "tool_calls" if calls else _FINISH.get(choice.finish_reason or "stop", "stop")
        yield StreamEvent(type="finish", usage=usage, finish_reason=finish)

    # -- embeddings and images ---------------------------------------------

    def embed(self, model: str, texts: list[str]) -> EmbeddingResult:
        import openai

        try:
            response = self.client().embeddings.create(
                model=model, input=texts, encoding_format="float"
            )
        except openai.APIError as exc:
            raise self._error(exc, model) from None
        vectors: list[list[float]] = []
        for item in sorted(response.data, key=lambda d: d.index):
            vector = item.embedding
            if vector and isinstance(vector[0], list):
                raise ProviderError(
                    f"{self.name}:{model} returned one vector per token, not one per text; "
                    "serve an embedding model with pooling (e.g. llama.cpp's --pooling mean).",
                    model=f"{self.name}:{model}",
                    retryable=False,
                )
            vectors.append([float(x) for x in vector])
        if len(vectors) != len(texts):
            raise ProviderError(
                f"{self.name}:{model} returned {len(vectors)} vectors for {len(texts)} texts",
                model=f"{self.name}:{model}",
                retryable=False,
            )
        tokens = response.usage.prompt_tokens if response.usage is not None else None
        usage = Usage(
            input_tokens=tokens if tokens is not None else sum(map(estimate_tokens, texts)),
            estimated=tokens is None,
        )
        return EmbeddingResult(vectors=vectors, usage=usage)

    def generate_image(
        self, model: str, prompt: str, *, size: str, count: int, seed: int | None
    ) -> ImageResult:
        import openai

        try:
            response = self.client().images.generate(
                model=model, prompt=prompt, n=count, size=size, response_format="b64_json"
            )
        except openai.APIError as exc:
            raise self._error(exc, model) from None
        images = []
        for item in response.data or []:
            if not item.b64_json:
                raise ProviderError(
                    f"{self.name}:{model} returned an image without data", retryable=False
                )
            images.append(base64.b64decode(item.b64_json))
        if not images:
            raise ProviderError(f"{self.name}:{model} returned no image", retryable=False)
        return ImageResult(images=images)

    def image_cost(self, model: str, count: int) -> float | None:
        if self.name != "openai":
            return None
        from ..catalog.prices import image_cost

        return image_cost("openai", model, count)


def _error_detail(body: object) -> str:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error)
        return str(error)
    return str(body) if body else ""
