"""Amazon Bedrock through boto3: Converse and ConverseStream for chat, InvokeModel for
embeddings (Titan Text Embeddings, Cohere Embed) and images (Titan Image Generator,
Stability SDXL).

Region and profile come from the usual AWS settings (``AWS_REGION``,
``AWS_PROFILE``, ``~/.aws/config``) unless ``[endpoints.bedrock]`` names them.
boto3's own retries are off: the gateway retries, so every attempt is traced.

Bedrock is strict about conversation shape: roles must alternate and start with
the user, a tool's result must follow the assistant turn that asked for it, and
any conversation holding tool blocks needs a tool configuration. outcrop turns
any valid outcrop conversation into that shape (see :func:`to_converse`).
"""

from __future__ import annotations

import base64
import difflib
import json
import re
from collections.abc import Iterator
from typing import Any

from ..config import EndpointSettings
from ..errors import (
    InvalidRequestError,
    MissingExtraError,
    ProviderError,
    ProviderTimeoutError,
    UnknownModelError,
    UserError,
)
from ..types import ChatRequest, FinishReason, StreamEvent, ToolCall, Usage, estimate_tokens
from .base import EmbeddingResult, ImageResult, ModelInfo, Provider

__all__ = ["JSON_TOOL", "BedrockProvider", "to_converse"]

JSON_TOOL = "json_output"  # the forced tool that carries a JSON-schema answer

_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "stop",
    "content_filtered": "stop",
}
_RETRYABLE_CODES = {
    "ThrottlingException",
    "ServiceUnavailableException",
    "InternalServerException",
    "ModelTimeoutException",
    "ModelNotReadyException",
    "ModelStreamErrorException",
}


def to_converse(request: ChatRequest) -> dict[str, Any]:
    """The Converse API arguments for a request: system, messages, inference and tool config."""
    system = [{"text": m.text} for m in request.messages if m.role == "system" and m.text]
    turns: list[dict[str, Any]] = []
    used_tools: set[str] = set()
    asked: set[str] = set()  # tool-use ids of the latest assistant turn
    for m in request.messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            if m.tool_call_id not in asked:
                raise InvalidRequestError(
                    f"A tool result answers call {m.tool_call_id!r}, which the assistant turn "
                    "before it did not make; keep each tool message right after its call.",
                    field="messages",
                )
            role = "user"
            blocks: list[dict[str, Any]] = [
                {
                    "toolResult": {
                        "toolUseId": m.tool_call_id,
                        "content": [{"text": m.text or "(no output)"}],
                        "status": "success",
                    }
                }
            ]
        elif m.role == "assistant":
            role = "assistant"
            blocks = [{"text": m.text}] if m.text.strip() else []
            for call in m.tool_calls:
                blocks.append(
                    {"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.arguments}}
                )
                used_tools.add(call.name)
            asked = {c.id for c in m.tool_calls}
            if not blocks:
                continue  # Bedrock rejects an empty turn; an empty answer adds nothing
        else:
            role = "user"
            blocks = [{"text": m.text}] if m.text else []
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            # Same role twice: one turn. Tool results go before any text of that turn.
            merged = turns[-1]["content"] + blocks
            merged.sort(key=lambda b: 0 if "toolResult" in b else 1)
            turns[-1]["content"] = merged
        else:
            turns.append({"role": role, "content": blocks})
    if not turns or turns[0]["role"] != "user":
        raise InvalidRequestError(
            "Bedrock needs the conversation to start with a user message.", field="messages"
        )
    args: dict[str, Any] = {"messages": turns}
    if system:
        args["system"] = system
    inference: dict[str, Any] = {}
    if request.max_tokens is not None:
        inference["maxTokens"] = request.max_tokens
    if request.temperature is not None:
        inference["temperature"] = request.temperature
    if request.top_p is not None:
        inference["topP"] = request.top_p
    if request.stop:
        inference["stopSequences"] = request.stop
    if inference:
        args["inferenceConfig"] = inference

    # Converse has no tool_choice "none": the only way to forbid calls is to send no tools
    # (outside the specs that earlier tool turns need).
    offered = [] if request.tool_choice == "none" else request.tools
    tools = [
        {
            "toolSpec": {
                "name": t.name,
                "description": t.description or t.name,
                "inputSchema": {"json": t.parameters},
            }
        }
        for t in offered
    ]
    given = {t.name for t in offered}
    for name in sorted(used_tools - given):
        # Earlier turns used a tool the request no longer lists: Bedrock still wants its spec.
        tools.append(
            {
                "toolSpec": {
                    "name": name,
                    "description": name,
                    "inputSchema": {"json": {"type": "object"}},
                }
            }
        )
    fmt = request.response_format
    if fmt is not None and fmt.type in ("json_schema", "json_object"):
        if request.tools:
            raise InvalidRequestError(
                "On Bedrock, response_format cannot be combined with tools; ask for one or the "
                "other.",
                field="response_format",
            )
        schema = fmt.json_schema or {"type": "object"}
        tools.append(
            {
                "toolSpec": {
                    "name": JSON_TOOL,
                    "description": "Give the answer as JSON matching the schema.",
                    "inputSchema": {"json": schema},
                }
            }
        )
        args["toolConfig"] = {"tools": tools, "toolChoice": {"tool": {"name": JSON_TOOL}}}
        return args
    if tools:
        config: dict[str, Any] = {"tools": tools}
        choice = request.tool_choice
        if choice == "required":
            config["toolChoice"] = {"any": {}}
        elif not isinstance(choice, str):
            config["toolChoice"] = {"tool": {"name": choice.name}}
        args["toolConfig"] = config
    return args


class BedrockProvider(Provider):
    """Chat, embeddings and images on Amazon Bedrock."""

    supports_tools = True
    supports_json_schema = True

    def __init__(
        self,
        name: str = "bedrock",
        endpoint: EndpointSettings | None = None,
        *,
        timeout: float = 300.0,
        client: Any = None,
    ):
        self.name = name
        self.endpoint = endpoint or EndpointSettings(api="bedrock")
        self.timeout = timeout
        self._client = client

    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
                from botocore.exceptions import BotoCoreError
            except ImportError:
                raise MissingExtraError("Amazon Bedrock", "bedrock") from None
            try:
                session = boto3.Session(
                    profile_name=self.endpoint.profile, region_name=self.endpoint.region
                )
                self._client = session.client(
                    "bedrock-runtime",
                    endpoint_url=self.endpoint.base_url,
                    config=Config(
                        read_timeout=self.timeout,
                        connect_timeout=min(10.0, self.timeout),
                        retries={"max_attempts": 1, "mode": "standard"},
                    ),
                )
            except BotoCoreError as exc:
                raise self._setup_error(exc) from None
        return self._client

    def _setup_error(self, exc: Exception) -> Exception:
        from botocore.exceptions import NoCredentialsError, NoRegionError, ProfileNotFound

        if isinstance(exc, NoRegionError):
            return UserError(
                f"No AWS region for {self.name}: set AWS_REGION, or region in "
                f"[endpoints.{self.name}] of outcrop.toml."
            )
        if isinstance(exc, NoCredentialsError):
            return UserError(
                f"No AWS credentials for {self.name}: run `aws configure`, set AWS_PROFILE, or "
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
            )
        if isinstance(exc, ProfileNotFound):
            return UserError(f"{exc}; fix profile in [endpoints.{self.name}] or AWS_PROFILE.")
        return ProviderError(f"{self.name}: {exc}", retryable=False)

    # -- models and prices --------------------------------------------------

    @staticmethod
    def _known() -> list[str]:
        from ..catalog.prices import prices

        return sorted(model for (api, model) in prices() if api == "bedrock")

    def models(self) -> list[ModelInfo]:
        from ..catalog.prices import describe as _price_text
        from ..catalog.prices import price

        out = []
        for model in self._known():
            p = price("bedrock", model)
            assert p is not None
            description = _price_text(p)
            out.append(
                ModelInfo(
                    id=f"{self.name}:{model}",
                    provider=self.name,
                    description=description,
                    installed=True,
                    how_to_install="enable it under Model access in the Bedrock console",
                    remote=True,
                )
            )
        return out

    def check_model(self, model: str) -> None:
        known = self._known()
        if not model:
            raise UnknownModelError(
                self.name, [f"{self.name}:{k}" for k in known[:2]], hint=" Name a Bedrock model id."
            )
        bare = re.sub(r"^(us|eu|apac|jp|ca|au|us-gov|global)\.", "", model)
        if bare in known or model.startswith("arn:"):
            return
        if re.search(r"-v\d+(:\d+)?$", bare):
            return  # well-formed: a model outcrop does not list yet; Bedrock decides
        close = difflib.get_close_matches(bare, known, n=2, cutoff=0.85)
        if close:  # a known id without its version suffix, or a typo of one
            raise UnknownModelError(f"{self.name}:{model}", [f"{self.name}:{c}" for c in close])

    def cost(self, model: str, usage: Usage) -> float | None:
        from ..catalog.prices import cost

        return cost("bedrock", model, usage)

    def image_cost(self, model: str, count: int) -> float | None:
        from ..catalog.prices import image_cost

        return image_cost("bedrock", model, count)

    # -- errors -------------------------------------------------------------

    def _error(self, exc: Exception, model: str) -> Exception:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            NoRegionError,
            ReadTimeoutError,
        )

        full = f"{self.name}:{model}"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            detail = str(error.get("Message", "")) or code
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "ResourceNotFoundException" or status == 404:
                text = (
                    f"Bedrock has no model {model!r} here ({code}): {detail}. Check the model id "
                    "and region; `outcrop models list` shows known ids."
                )
            elif code == "AccessDeniedException":
                text = (
                    f"No access to {model} on Bedrock ({code}): {detail}. Enable the model under "
                    "Model access in the Bedrock console, or check your IAM permissions."
                )
            elif code == "ValidationException":
                text = (
                    f"Bedrock rejected the request to {model} ({code}): {detail}. If the model "
                    "id is wrong, `outcrop models list` shows known ids."
                )
            else:
                text = f"Bedrock answered {status} {code} for {model}: {detail}"
            return ProviderError(
                text,
                model=full,
                status_code=status,
                body=error,
                headers=exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}),
                retryable=code in _RETRYABLE_CODES or (status is not None and status >= 500),
            )
        if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
            return ProviderTimeoutError(f"Bedrock did not answer in time: {exc}", model=full)
        if isinstance(exc, EndpointConnectionError):
            return ProviderError(f"Cannot reach Bedrock: {exc}", model=full, retryable=True)
        if isinstance(exc, NoCredentialsError | NoRegionError):
            return self._setup_error(exc)
        if isinstance(exc, BotoCoreError):
            return ProviderError(f"Bedrock call failed: {exc}", model=full, retryable=False)
        return exc

    def _call(self, method: str, model: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        try:
            return getattr(client, method)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, model) from None

    # -- chat ---------------------------------------------------------------

    def stream(
        self, model: str, request: ChatRequest, *, plain: bool = False
    ) -> Iterator[StreamEvent]:
        args = to_converse(request)
        json_mode = "toolConfig" in args and args["toolConfig"].get("toolChoice") == {
            "tool": {"name": JSON_TOOL}
        }
        if plain:
            response = self._call("converse", model, modelId=model, **args)
            yield from self._from_converse(response, json_mode)
            return
        response = self._call("converse_stream", model, modelId=model, **args)
        yield from self._from_stream(response["stream"], model, json_mode)

    @staticmethod
    def _usage(raw: dict[str, Any] | None) -> Usage:
        raw = raw or {}
        return Usage(
            input_tokens=int(raw.get("inputTokens", 0)),
            output_tokens=int(raw.get("outputTokens", 0)),
            estimated=not raw,
        )

    def _from_converse(self, response: dict[str, Any], json_mode: bool) -> Iterator[StreamEvent]:
        usage = self._usage(response.get("usage"))
        finish = _STOP.get(response.get("stopReason", "end_turn"), "stop")
        blocks = response.get("output", {}).get("message", {}).get("content", [])
        calls = []
        for block in blocks:
            if block.get("text"):
                yield StreamEvent(type="text", text=block["text"], usage=usage)
            elif "toolUse" in block:
                use = block["toolUse"]
                if json_mode and use.get("name") == JSON_TOOL:
                    yield StreamEvent(type="text", text=json.dumps(use.get("input", {})))
                    finish = "stop"
                else:
                    calls.append(
                        ToolCall(
                            id=use["toolUseId"], name=use["name"], arguments=use.get("input") or {}
                        )
                    )
        for call in calls:
            yield StreamEvent(type="tool_call", tool_call=call, usage=usage)
        yield StreamEvent(type="finish", usage=usage, finish_reason=finish)

    def _from_stream(self, events: Any, model: str, json_mode: bool) -> Iterator[StreamEvent]:
        from botocore.exceptions import BotoCoreError, ClientError

        tools: dict[int, dict[str, Any]] = {}
        finish: FinishReason = "stop"
        usage: Usage | None = None
        try:
            for event in events:
                if "contentBlockStart" in event:
                    start = event["contentBlockStart"]
                    use = start.get("start", {}).get("toolUse")
                    if use:
                        tools[start["contentBlockIndex"]] = {
                            "id": use["toolUseId"],
                            "name": use["name"],
                            "input": [],
                        }
                elif "contentBlockDelta" in event:
                    body = event["contentBlockDelta"]
                    delta = body.get("delta", {})
                    if delta.get("text"):
                        yield StreamEvent(type="text", text=delta["text"])
                    elif "toolUse" in delta:
                        entry = tools.setdefault(
                            body["contentBlockIndex"], {"id": "", "name": "", "input": []}
                        )
                        entry["input"].append(delta["toolUse"].get("input", ""))
                elif "messageStop" in event:
                    finish = _STOP.get(event["messageStop"].get("stopReason", "end_turn"), "stop")
                elif "metadata" in event:
                    usage = self._usage(event["metadata"].get("usage"))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, model) from None
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
        for index in sorted(tools):
            entry = tools[index]
            raw = "".join(entry["input"]) or "{}"
            try:
                arguments = json.loads(raw)
            except json.JSONDecodeError:
                raise ProviderError(
                    f"{self.name}:{model} streamed tool input that is not JSON: {raw[:200]}",
                    model=f"{self.name}:{model}",
                    retryable=True,
                ) from None
            if json_mode and entry["name"] == JSON_TOOL:
                yield StreamEvent(type="text", text=json.dumps(arguments))
                finish = "stop"
                continue
            yield StreamEvent(
                type="tool_call",
                tool_call=ToolCall(id=entry["id"], name=entry["name"], arguments=arguments),
            )
        if usage is None:
            raise ProviderError(
                f"{self.name}:{model} ended its stream without the metadata event (usage)",
                model=f"{self.name}:{model}",
                retryable=True,
            )
        yield StreamEvent(type="finish", usage=usage, finish_reason=finish)

    # -- embeddings and images ---------------------------------------------

    def _invoke(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self._call(
            "invoke_model",
            model,
            modelId=model,
            body=json.dumps(body),
            contentType="application/json",
            accept="application/json",
        )
        raw = response["body"].read()
        try:
            data = json.loads(raw)
        except ValueError:
            raise ProviderError(
                f"{self.name}:{model} answered with a body that is not JSON", retryable=False
            ) from None
        if not isinstance(data, dict):
            raise ProviderError(
                f"{self.name}:{model} answered with unexpected JSON", retryable=False
            )
        return data

    def embed(self, model: str, texts: list[str]) -> EmbeddingResult:
        if model.startswith("amazon.titan-embed"):
            vectors, tokens = [], 0
            for text in texts:
                data = self._invoke(model, {"inputText": text})
                vectors.append([float(x) for x in data["embedding"]])
                tokens += int(data.get("inputTextTokenCount", 0))
            return EmbeddingResult(vectors=vectors, usage=Usage(input_tokens=tokens))
        if model.startswith("cohere.embed"):
            vectors = []
            for start in range(0, len(texts), 96):  # Cohere Embed takes 96 texts a call
                batch = texts[start : start + 96]
                data = self._invoke(model, {"texts": batch, "input_type": "search_document"})
                vectors.extend([float(x) for x in v] for v in data["embeddings"])
            estimate = sum(estimate_tokens(t) for t in texts)
            return EmbeddingResult(
                vectors=vectors, usage=Usage(input_tokens=estimate, estimated=True)
            )
        raise InvalidRequestError(
            f"{self.name}:{model} is not an embedding model outcrop knows; use "
            "amazon.titan-embed-text-v2:0 or cohere.embed-english-v3",
            field="model",
        )

    def generate_image(
        self, model: str, prompt: str, *, size: str, count: int, seed: int | None
    ) -> ImageResult:
        width, height = (int(x) for x in size.split("x"))
        if model.startswith("amazon.titan-image-generator"):
            config: dict[str, Any] = {
                "numberOfImages": count,
                "width": width,
                "height": height,
                "cfgScale": 8.0,
            }
            if seed is not None:
                config["seed"] = seed
            data = self._invoke(
                model,
                {
                    "taskType": "TEXT_IMAGE",
                    "textToImageParams": {"text": prompt},
                    "imageGenerationConfig": config,
                },
            )
            if data.get("error"):
                raise ProviderError(f"{self.name}:{model}: {data['error']}", retryable=False)
            return ImageResult(images=[base64.b64decode(i) for i in data.get("images", [])])
        if model.startswith("stability."):
            images = []
            for i in range(count):
                data = self._invoke(
                    model,
                    {
                        "text_prompts": [{"text": prompt}],
                        "cfg_scale": 7,
                        "steps": 30,
                        "seed": (seed or 0) + i,
                        "width": width,
                        "height": height,
                    },
                )
                for artifact in data.get("artifacts", []):
                    if artifact.get("finishReason") not in (None, "SUCCESS"):
                        raise ProviderError(
                            f"{self.name}:{model} refused the image: {artifact['finishReason']}",
                            retryable=False,
                        )
                    images.append(base64.b64decode(artifact["base64"]))
            return ImageResult(images=images)
        raise InvalidRequestError(
            f"{self.name}:{model} is not an image model outcrop knows; use "
            "amazon.titan-image-generator-v1 or stability.stable-diffusion-xl-v1",
            field="model",
        )
