"""The one pipeline. Every model call in outcrop goes through :class:`Gateway`.

::

    request
      → validate (InvalidRequestError names the field)
      → resolve the model id (aliases; "Did you mean …?"; the fallback chain)
      → provider call (retries with backoff and jitter; next fallback on failure)
      → usage and cost
      → one trace row in the store — plain, streamed, failed and cancelled calls alike
      → response or stream

A plain call is the stream collected, so a streamed call and the same call
made without streaming record the same tokens by construction. Budgets,
guardrails and OpenTelemetry export join this path as they land.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import difflib
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from .config import Settings, load_settings
from .errors import (
    AllModelsFailedError,
    InvalidRequestError,
    OutcropError,
    ProviderError,
    ProviderTimeoutError,
    StreamCancelled,
    UnknownModelError,
)
from .observe.store import Store, TraceRow, open_store
from .providers.base import ModelInfo, Provider
from .types import (
    ChatRequest,
    ChatResponse,
    EmbeddingResponse,
    FinishReason,
    ImageResponse,
    Message,
    StreamEvent,
    TextPart,
    ToolCall,
    Usage,
    estimate_tokens,
    validation_error,
)

if TYPE_CHECKING:
    from .guardrails.guard import Guard

__all__ = [
    "ChatStream",
    "Gateway",
    "RenderedPrompt",
    "ResolvedModel",
    "TokenView",
    "TraceInfo",
    "new_id",
]

_MAX_ALIAS_DEPTH = 8
T = TypeVar("T")


class _Entropy:
    """Random bytes from the operating system, fetched 4 KiB at a time.

    ``os.urandom`` is a system call that lets go of the interpreter lock; once a call
    (one per trace id) made every call hand the lock over to the trace writer thread
    whenever that thread was waiting for it. The bytes are the same kind (the kernel's);
    a forked child starts a pool of its own, so two processes never hand out the same
    bytes.
    """

    _SIZE = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._pool):
                self._pool = os.urandom(max(self._SIZE, n))
                self._at = 0
            start = self._at
            self._at += n
            return self._pool[start : start + n]


_ENTROPY = _Entropy()


def new_id() -> str:
    """A time-ordered id: milliseconds since the epoch, then 48 random bits."""
    return f"{int(time.time() * 1000):012x}{_ENTROPY.take(6).hex()}"


@dataclass(frozen=True)
class ResolvedModel:
    """A model id after aliases: which provider serves it, under which name."""

    id: str
    provider: Provider
    name: str


def _default_providers(settings: Settings) -> dict[str, Provider]:
    """The local provider, and one provider per endpoint (built-in or in outcrop.toml)."""
    from .providers.local import LocalProvider

    providers: dict[str, Provider] = {"local": LocalProvider()}
    timeout = settings.retry.timeout_s
    for name, endpoint in settings.endpoints.items():
        if endpoint.api == "bedrock":
            from .providers.bedrock import BedrockProvider

            providers[name] = BedrockProvider(name, endpoint, timeout=timeout)
        else:
            from .providers.openai import OpenAIProvider

            providers[name] = OpenAIProvider(name, endpoint, timeout=timeout)
    return providers


PromptInput = str | Message | Sequence[Message] | ChatRequest


def build_request(
    prompt: PromptInput,
    *,
    model: str | None = None,
    system: str | None = None,
    **options: Any,
) -> ChatRequest:
    """Make a validated ChatRequest from a string, messages or a request plus options."""
    try:
        if isinstance(prompt, ChatRequest):
            data = prompt.model_dump(exclude_unset=True)
            data.update(options)
            if model is not None:
                data["model"] = model
            return ChatRequest.model_validate(data)
        if isinstance(prompt, str):
            messages = [Message.user(prompt)]
        elif isinstance(prompt, Message):
            messages = [prompt]
        else:
            messages = list(prompt)
        if system:
            messages = [Message.system(system), *messages]
        return ChatRequest(model=model, messages=messages, **options)
    except ValidationError as exc:
        raise validation_error(exc) from None


@dataclass
class RenderedPrompt:
    """A request as its model reads it."""

    model: str
    messages: list[Message]
    text: str | None  # the template-applied prompt, when the provider can tell
    tokens: int
    estimated: bool
    message_tokens: list[int]
    context_window: int | None


@dataclass
class TokenView:
    """A text as one model's tokens."""

    model: str
    pieces: list[tuple[int, str]] | None  # (id, text); None without a tokenizer here
    tokens: int
    estimated: bool
    context_window: int | None
    cost_usd: float | None


# The server API key a call is made for. The server sets it around work that makes model
# calls of its own (a knowledge-base answer, an agent run), so those calls are counted
# against the key's budgets like its chat calls; worker threads inherit it
# (asyncio.to_thread copies the context).
current_api_key: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "outcrop_api_key", default=None
)


@dataclass(frozen=True)
class TraceInfo:
    """Where a call sits: its parent trace (a chain or agent run) and the prompt behind it."""

    parent_id: str | None = None
    prompt_name: str | None = None
    prompt_version: int | None = None
    kind: str = "chat"
    api_key: str | None = None  # the server API key's id, for per-key usage and budgets
    # Guardrail decisions taken before the call (on retrieved passages, tool results),
    # recorded on its trace; and the context an answer's grounding is checked against.
    guard: tuple[dict[str, Any], ...] = ()
    grounding: str | None = None


@dataclass
class _Attempt:
    model: str
    error: str | None = None
    status_code: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "error": self.error, "status_code": self.status_code}


@dataclass
class _Run:
    """What one call has gathered so far."""

    trace_id: str
    request: ChatRequest
    requested: str
    stream: bool
    started: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    text: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    model: ResolvedModel | None = None
    finish_reason: FinishReason | None = None
    attempts: list[_Attempt] = field(default_factory=list)
    recorded: bool = False
    trace: TraceInfo = field(default_factory=lambda: TraceInfo())
    cancel: threading.Event = field(default_factory=threading.Event)
    use_fallbacks: bool = True
    guard: list[dict[str, Any]] = field(default_factory=list)
    hold_output: bool = False  # an output guardrail may mask or block: release text at the end
    blocked: str | None = None  # the input was blocked: answer with this message
    record_lock: threading.Lock = field(default_factory=threading.Lock)


class ChatStream:
    """A streamed call: iterate for :class:`StreamEvent`; ``response`` once it has finished.

    Use it as a context manager, or call :meth:`close`, to stop early: the call
    is then recorded as ``cancelled`` with the tokens generated so far.
    """

    def __init__(self, gateway: Gateway, run: _Run, primary: ResolvedModel):
        self._gateway = gateway
        self._run = run
        self._gen = gateway._events(run, primary)
        self.response: ChatResponse | None = None

    @property
    def trace_id(self) -> str:
        return self._run.trace_id

    def __iter__(self) -> Iterator[StreamEvent]:
        return self

    def __next__(self) -> StreamEvent:
        event = next(self._gen)
        if event.type == "finish":
            self.response = self._gateway._response(self._run)
        return event

    def text(self) -> Iterator[str]:
        """Only the text pieces of the answer."""
        for event in self:
            if event.type == "text":
                yield event.text

    def collect(self) -> ChatResponse:
        """Read the stream to its end and return the whole response."""
        for _ in self:
            pass
        if self.response is None:
            raise StreamCancelled("The stream was closed before the model finished.")
        return self.response

    def close(self) -> None:
        """Stop the call; it is recorded as cancelled if it had not finished.

        Safe from any thread: a stream being read elsewhere stops at its next token.
        """
        self._run.cancel.set()
        try:
            self._gen.close()
        except ValueError:
            return  # running in another thread: it sees the flag and stops there
        self._gateway._record(self._run, status="cancelled", error="closed before it finished")

    def __del__(self) -> None:
        # A stream dropped without close() must not hold the model or go unrecorded.
        try:
            if not self._run.recorded:
                self.close()
        except Exception:
            pass

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Gateway:
    """Resolve, call, retry, fall back, record. The only caller of providers.

    ``Gateway()`` reads ``outcrop.toml`` and uses the store it names (``[storage]``,
    ``OUTCROP_DATABASE_URL``), else the one in outcrop's home.
    Pass ``providers`` to add or replace providers (e.g. test doubles),
    ``store`` or ``settings`` to use others.
    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        store: Store | None = None,
        providers: Mapping[str, Provider] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        guard: Guard | None = None,
    ):
        self.settings = settings if settings is not None else load_settings()
        self._store = store
        self._store_lock = threading.Lock()
        self.providers: dict[str, Provider] = _default_providers(self.settings)
        self.providers.update(providers or {})
        self._sleep = sleep
        self._guard: Guard | None = guard

    @property
    def guard(self) -> Guard | None:
        """The guardrails of outcrop.toml's [guardrails] (None when there are none)."""
        if self._guard is None and self.settings.guardrails:
            from .guardrails.guard import Guard, GuardPolicy

            policy = GuardPolicy.from_mapping(self.settings.guardrails)
            if policy.active():
                self._guard = Guard(policy)
        return self._guard

    def close(self) -> None:
        """Close provider connections and write any queued trace rows (the store stays open
        for other users of it)."""
        for provider in self.providers.values():
            provider.close()
        if self._store is not None:
            self._store.flush()

    @property
    def store(self) -> Store:
        with self._store_lock:
            if self._store is None:
                self._store = open_store(self.settings)
            return self._store

    # -- models -------------------------------------------------------------

    def known_ids(self) -> list[str]:
        ids = list(self.settings.aliases)
        for prefix, provider in self.providers.items():
            ids.append(prefix)
            ids.extend(m.id for m in provider.models())
        return sorted(set(ids))

    def models(self) -> list[ModelInfo]:
        """Every model the configured providers know, installed or not."""
        out: list[ModelInfo] = []
        for provider in self.providers.values():
            out.extend(provider.models())
        return out

    def resolve(self, model_id: str | None) -> ResolvedModel:
        """Turn an id or alias into the provider and name that serve it."""
        original = model_id or self.settings.default_model
        current = original
        for _ in range(_MAX_ALIAS_DEPTH):
            if current in self.settings.aliases:
                current = self.settings.aliases[current]
            else:
                break
        else:
            raise InvalidRequestError(
                f"Alias {original!r} does not resolve (a loop in [aliases] of outcrop.toml?)",
                field="model",
            )
        prefix, _, name = current.partition(":")
        provider = self.providers.get(prefix)
        if provider is None:
            hint = ""
            if ":" not in current:
                hint = (
                    " Model ids look like provider:model, e.g. 'local:smollm2-135m'."
                    " Run `outcrop models list` to see the models you can use."
                )
            raise UnknownModelError(original, self._suggest(original), hint=hint)
        provider.check_model(name)
        return ResolvedModel(id=current, provider=provider, name=name)

    def _suggest(self, model_id: str) -> list[str]:
        known = self.known_ids()
        close = difflib.get_close_matches(model_id, known, n=2, cutoff=0.5)
        if not close:
            # A bare name that is the tail of a known id: "smollm2-135m" -> "local:smollm2-135m".
            close = [k for k in known if k.split(":", 1)[-1] == model_id][:2]
        return close

    def fallbacks(self, primary: ResolvedModel) -> list[str]:
        """The fallback ids tried after ``primary``, in order (resolved only when needed)."""
        return [f for f in self.settings.fallbacks if f != primary.id]

    def count_tokens(self, text: str, model: str | None = None) -> int:
        """Tokens in ``text`` for the model's own tokenizer."""
        resolved = self.resolve(model)
        count = resolved.provider.count_tokens(resolved.name, text)
        if count is None:
            raise InvalidRequestError(f"{resolved.id} cannot count tokens", field="model")
        return count

    def tokenize(self, text: str, model: str | None = None) -> TokenView:
        """How ``model`` splits ``text``: the pieces (when its tokenizer runs here), the count,
        the context window and the cost of the text as input."""
        resolved = self.resolve(model)
        provider = resolved.provider
        pieces = provider.tokenize(resolved.name, text)
        count = len(pieces) if pieces is not None else estimate_tokens(text)
        return TokenView(
            model=resolved.id,
            pieces=pieces,
            tokens=count,
            estimated=pieces is None,
            context_window=provider.context_window(resolved.name),
            cost_usd=provider.cost(resolved.name, Usage(input_tokens=count)),
        )

    def render(self, request: ChatRequest) -> RenderedPrompt:
        """What the model reads for ``request``: exact text and tokens where the provider can
        tell (local models: their own chat template), else an estimate of about four
        characters a token."""
        resolved = self.resolve(request.model)
        provider = resolved.provider
        exact = provider.render(resolved.name, request)
        per_message: list[int] = []
        for message in request.messages:
            count = provider.count_tokens(resolved.name, message.text)
            per_message.append(count if count is not None else estimate_tokens(message.text))
        if exact is not None:
            text, tokens = exact
            total, estimated = len(tokens), False
        else:
            text = None
            total, estimated = sum(per_message) + 4 * len(request.messages), True
        return RenderedPrompt(
            model=resolved.id,
            messages=request.messages,
            text=text,
            tokens=total,
            estimated=estimated,
            message_tokens=per_message,
            context_window=provider.context_window(resolved.name),
        )

    # -- calls --------------------------------------------------------------

    def stream(
        self,
        prompt: PromptInput,
        *,
        model: str | None = None,
        system: str | None = None,
        trace: TraceInfo | None = None,
        fallbacks: bool = True,
        **options: Any,
    ) -> ChatStream:
        """Start a streamed call. The call is recorded when the stream ends or is closed.

        ``fallbacks=False`` asks the model named and no other (an evaluation must
        score the model it names)."""
        request = build_request(prompt, model=model, system=system, **options)
        return self._start(request, stream=True, trace=trace, fallbacks=fallbacks)

    def chat(
        self,
        prompt: PromptInput,
        *,
        model: str | None = None,
        system: str | None = None,
        trace: TraceInfo | None = None,
        fallbacks: bool = True,
        **options: Any,
    ) -> ChatResponse:
        """Make a call and return the whole response (the stream, collected).

        ``trace`` links the call to its parent (a chain, an agent run) and to the
        prompt name and version that produced it.
        """
        request = build_request(prompt, model=model, system=system, **options)
        stream = self._start(request, stream=False, trace=trace, fallbacks=fallbacks)
        try:
            return stream.collect()
        finally:
            stream.close()

    async def achat(
        self,
        prompt: PromptInput,
        *,
        model: str | None = None,
        system: str | None = None,
        **options: Any,
    ) -> ChatResponse:
        """:meth:`chat` for async code; runs the call on a worker thread."""
        return await asyncio.to_thread(self.chat, prompt, model=model, system=system, **options)

    def embed(
        self, texts: str | Sequence[str], *, model: str, api_key: str | None = None
    ) -> EmbeddingResponse:
        """Embed texts with ``model`` (one trace row, kind ``embedding``).

        Retries like a chat call, but never falls back: vectors of two models
        cannot be mixed in one index.
        """
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items or any(not isinstance(t, str) for t in items):
            raise InvalidRequestError("Give one or more texts to embed.", field="input")
        for i, t in enumerate(items):
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidRequestError(
                    f"input[{i}] is not valid Unicode (a lone surrogate at position {exc.start})",
                    field="input",
                ) from None
        resolved = self.resolve(model)
        preview = items[0][:200]
        result, attempts, started, t0 = self._with_retries(
            resolved,
            lambda: resolved.provider.embed(resolved.name, items),
            kind="embedding",
            request={"model": model, "input_count": len(items), "input_preview": preview},
        )
        cost = resolved.provider.cost(resolved.name, result.usage)
        trace_id = self._record_call(
            api_key=api_key,
            kind="embedding",
            resolved=resolved,
            requested=model,
            started=started,
            t0=t0,
            attempts=attempts,
            usage=result.usage,
            cost=cost,
            request={"model": model, "input_count": len(items), "input_preview": preview},
            response=f"{len(result.vectors)} vectors of {len(result.vectors[0])} dimensions",
        )
        return EmbeddingResponse(
            id=trace_id,
            model=resolved.id,
            vectors=result.vectors,
            usage=result.usage,
            cost_usd=cost,
        )

    def yes_no(self, conversations: Sequence[Sequence[Message]], *, model: str) -> list[float]:
        """Score each conversation by the model's logit of "Yes" minus "No" as its next word
        (one trace row, kind ``score``). Local models only: remote APIs do not expose logits."""
        resolved = self.resolve(model)
        judge = getattr(resolved.provider, "yes_no", None)
        if judge is None:
            raise InvalidRequestError(
                f"{resolved.id} cannot score Yes/No (it needs the model's logits); use a local "
                "model, e.g. local:qwen2.5-coder-0.5b",
                field="model",
            )
        items = [list(c) for c in conversations]
        request = {"model": model, "conversations": len(items)}
        scores, attempts, started, t0 = self._with_retries(
            resolved, lambda: judge(resolved.name, items), kind="score", request=request
        )
        self._record_call(
            kind="score",
            resolved=resolved,
            requested=model,
            started=started,
            t0=t0,
            attempts=attempts,
            usage=Usage(),
            cost=0.0,
            request=request,
            response=json.dumps([round(s, 4) for s in scores]),
        )
        return list(scores)

    def generate_image(
        self,
        prompt: str,
        *,
        model: str,
        size: str = "1024x1024",
        count: int = 1,
        seed: int | None = None,
        out_dir: Path | str = ".",
    ) -> ImageResponse:
        """Generate images from a prompt, save them in ``out_dir`` and trace the call."""
        if not prompt.strip():
            raise InvalidRequestError("The image prompt is empty.", field="prompt")
        if not 1 <= count <= 10:
            raise InvalidRequestError(f"count must be 1 to 10 (got {count})", field="count")
        width, _, height = size.partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise InvalidRequestError(f"size must look like 1024x1024 (got {size!r})", field="size")
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        resolved = self.resolve(model)
        request = {"model": model, "prompt": prompt, "size": size, "count": count, "seed": seed}
        result, attempts, started, t0 = self._with_retries(
            resolved,
            lambda: resolved.provider.generate_image(
                resolved.name, prompt, size=size, count=count, seed=seed
            ),
            kind="image",
            request=request,
        )
        trace_id = new_id()
        paths = []
        for i, data in enumerate(result.images):
            suffix = ".jpg" if data[:2] == b"\xff\xd8" else ".png"
            path = folder / f"image-{trace_id}-{i + 1}{suffix}"
            path.write_bytes(data)
            paths.append(path)
        cost = resolved.provider.image_cost(resolved.name, len(result.images))
        self._record_call(
            kind="image",
            resolved=resolved,
            requested=model,
            started=started,
            t0=t0,
            attempts=attempts,
            usage=Usage(),
            cost=cost,
            request=request,
            response=json.dumps([str(p) for p in paths]),
            trace_id=trace_id,
        )
        return ImageResponse(id=trace_id, model=resolved.id, paths=paths, cost_usd=cost)

    def _with_retries(
        self,
        resolved: ResolvedModel,
        call: Callable[[], T],
        *,
        kind: str,
        request: dict[str, Any],
    ) -> tuple[T, list[_Attempt], float, float]:
        """Run a non-streaming provider call with the configured retries; trace failures."""
        started, t0 = time.time(), time.perf_counter()
        attempts: list[_Attempt] = []
        retry = self.settings.retry

        def failed(exc: BaseException) -> None:
            self._record_call(
                kind=kind,
                resolved=resolved,
                requested=str(request.get("model")),
                started=started,
                t0=t0,
                attempts=attempts,
                usage=Usage(),
                cost=None,
                request=request,
                response=None,
                status="error",
                error=f"{exc.__class__.__name__}: {exc}",
            )

        for attempt in range(1, retry.max_attempts + 1):
            attempts.append(_Attempt(model=resolved.id))
            try:
                return call(), attempts, started, t0
            except ProviderError as exc:
                attempts[-1].error = str(exc)
                attempts[-1].status_code = exc.status_code
                if not exc.retryable or attempt == retry.max_attempts:
                    failed(exc)
                    raise
                self._sleep(self._backoff(attempt, exc))
            except BaseException as exc:
                failed(exc)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _record_call(
        self,
        *,
        kind: str,
        resolved: ResolvedModel,
        requested: str,
        started: float,
        t0: float,
        attempts: list[_Attempt],
        usage: Usage,
        cost: float | None,
        request: dict[str, Any],
        response: str | None,
        status: str = "ok",
        error: str | None = None,
        trace_id: str | None = None,
        api_key: str | None = None,
    ) -> str:
        trace_id = trace_id or new_id()
        api_key = api_key or current_api_key.get()
        self.store.record_later(
            TraceRow(
                id=trace_id,
                kind=kind,
                started_at=started,
                requested_model=requested,
                model=resolved.id,
                provider=resolved.id.split(":", 1)[0],
                stream=False,
                status=status,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                latency_ms=(time.perf_counter() - t0) * 1000,
                cost_usd=cost,
                error=error,
                attempts=[a.as_dict() for a in attempts],
                request=request,
                response=response,
                usage_estimated=usage.estimated,
                api_key=api_key,
            )
        )
        return trace_id

    def _start(
        self,
        request: ChatRequest,
        *,
        stream: bool,
        trace: TraceInfo | None = None,
        fallbacks: bool = True,
    ) -> ChatStream:
        requested = request.model or self.settings.default_model
        trace = trace or TraceInfo()
        if trace.api_key is None and current_api_key.get() is not None:
            trace = dataclasses.replace(trace, api_key=current_api_key.get())
        run = _Run(
            trace_id=new_id(),
            request=request,
            requested=requested,
            stream=stream,
            trace=trace,
            use_fallbacks=fallbacks,
        )
        run.guard.extend(run.trace.guard)
        try:
            primary = self.resolve(request.model)
        except OutcropError as exc:
            self._record(run, status="error", error=str(exc))
            raise
        guard = self.guard
        if guard is not None:
            self._guard_input(guard, run)
        return ChatStream(self, run, primary)

    def _guard_input(self, guard: Guard, run: _Run) -> None:
        """Check the newest turn only (a user message, or a tool result), so one early block
        does not lock a conversation; mask it in place or block the call."""
        request = run.request
        last = request.messages[-1]
        point: Any = {"user": "input", "tool": "tool"}.get(last.role)
        if point is not None and last.text:
            result = guard.check(last.text, point)
            run.guard.extend(result.to_list())
            if result.blocked:
                run.blocked = guard.policy.message
            elif result.text != last.text:
                masked = last.model_copy(update={"content": [TextPart(text=result.text)]})
                run.request = request.model_copy(
                    update={"messages": [*request.messages[:-1], masked]}
                )
        rules = guard.policy.output
        run.hold_output = (
            any(getattr(rules, c) in ("mask", "block") for c in ("pii", "patterns", "topics"))
            or rules.injection == "block"
            or rules.grounding == "block"
        )

    def _events(self, run: _Run, primary: ResolvedModel) -> Generator[StreamEvent, None, None]:
        if run.blocked is not None:  # an input guardrail blocked it: no model call
            run.model = primary
            run.text.append(run.blocked)
            run.finish_reason = "stop"
            self._record(run, status="blocked", error="blocked by a guardrail")
            yield StreamEvent(type="text", text=run.blocked)
            yield StreamEvent(
                type="finish", usage=run.usage, finish_reason="stop", model=primary.id
            )
            return
        errors: dict[str, BaseException] = {}
        candidates: list[ResolvedModel | str] = [primary]
        if run.use_fallbacks:
            candidates += self.fallbacks(primary)
        try:
            for candidate in candidates:
                if isinstance(candidate, str):
                    try:
                        resolved = self.resolve(candidate)
                    except OutcropError as exc:
                        # A broken fallback setting is reported, not fatal to the call.
                        run.attempts.append(_Attempt(model=candidate, error=str(exc)))
                        errors[candidate] = exc
                        continue
                else:
                    resolved = candidate
                run.model = resolved
                retry = self.settings.retry
                for attempt in range(1, retry.max_attempts + 1):
                    run.attempts.append(_Attempt(model=resolved.id))
                    try:
                        yield from self._call_once(run, resolved)
                        return
                    except ProviderError as exc:
                        run.attempts[-1].error = str(exc)
                        run.attempts[-1].status_code = exc.status_code
                        if run.first_token_at is not None:
                            raise  # part of the answer is out: no retry, no fallback
                        errors[resolved.id] = exc
                        if not exc.retryable or attempt == retry.max_attempts:
                            break
                        self._sleep(self._backoff(attempt, exc))
            if len(errors) == 1:
                raise next(iter(errors.values()))
            raise AllModelsFailedError(errors)
        except StreamCancelled:
            self._record(run, status="cancelled", error="stopped by the caller")
            return
        except GeneratorExit:
            self._record(run, status="cancelled", error="stopped by the caller")
            raise
        except KeyboardInterrupt:
            self._record(run, status="cancelled", error="interrupted (Ctrl-C)")
            raise
        except BaseException as exc:
            self._record(run, status="error", error=f"{exc.__class__.__name__}: {exc}")
            raise

    def _backoff(self, attempt: int, exc: ProviderError) -> float:
        retry = self.settings.retry
        after = exc.headers.get("retry-after") or exc.headers.get("Retry-After")
        if after:
            try:
                seconds = float(after)
            except ValueError:
                seconds = math.nan  # an HTTP date or junk: use the back-off below
            if math.isfinite(seconds):
                return min(max(seconds, 0.0), retry.max_delay_s)
        delay: float = min(retry.initial_delay_s * 2.0 ** (attempt - 1), retry.max_delay_s)
        return delay * (0.5 + random.random() / 2)  # jitter: half to full delay

    def _call_once(self, run: _Run, resolved: ResolvedModel) -> Iterator[StreamEvent]:
        """One attempt on one model. The timeout counts the provider's time, not the reader's."""
        timeout = self.settings.retry.timeout_s
        spent = 0.0
        events = iter(resolved.provider.stream(resolved.name, run.request, plain=not run.stream))
        try:
            while True:
                if run.cancel.is_set():
                    raise StreamCancelled("stopped by the caller")
                began = time.perf_counter()
                try:
                    event = next(events)
                except StopIteration:
                    break
                spent += time.perf_counter() - began
                if spent > timeout:
                    raise ProviderTimeoutError(
                        f"{resolved.id} did not finish within {timeout:g} s; raise "
                        "[retry] timeout_s in outcrop.toml or lower max_tokens",
                        model=resolved.id,
                    )
                if event.usage is not None:
                    run.usage = event.usage
                if event.type == "finish":
                    run.finish_reason = event.finish_reason or "stop"
                    status = "ok"
                    guard = self.guard
                    if guard is not None and run.text:
                        result = guard.check(
                            "".join(run.text), "output", context=run.trace.grounding
                        )
                        run.guard.extend(result.to_list())
                        if result.action in ("mask", "block"):
                            run.text = [result.text]
                        status = "blocked" if result.blocked else "ok"
                        if run.hold_output:
                            if run.first_token_at is None:
                                run.first_token_at = time.perf_counter()
                            yield StreamEvent(type="text", text="".join(run.text))
                    self._record(run, status=status)
                    yield event.model_copy(update={"model": resolved.id, "usage": run.usage})
                    return
                if event.type == "text" and not event.text:
                    continue  # progress only: tokens counted while output is held back
                if run.first_token_at is None and not (event.type == "text" and run.hold_output):
                    run.first_token_at = time.perf_counter()
                if event.type == "text":
                    run.text.append(event.text)
                    if run.hold_output:
                        continue  # released, checked, at the end
                elif event.tool_call is not None:
                    run.tool_calls.append(event.tool_call)
                yield event
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
        raise ProviderError(f"{resolved.id} ended its stream without finishing", model=resolved.id)

    # -- recording ----------------------------------------------------------

    def _response(self, run: _Run) -> ChatResponse:
        assert run.model is not None
        return ChatResponse(
            id=run.trace_id,
            model=run.model.id,
            message=Message.assistant("".join(run.text), tool_calls=run.tool_calls),
            finish_reason=run.finish_reason or "stop",
            usage=run.usage,
            latency_ms=(time.perf_counter() - run.t0) * 1000,
            ttft_ms=self._ttft(run),
            cost_usd=self._cost(run),
        )

    @staticmethod
    def _ttft(run: _Run) -> float | None:
        if run.first_token_at is None:
            return None
        return (run.first_token_at - run.t0) * 1000

    @staticmethod
    def _cost(run: _Run) -> float | None:
        if run.model is None:
            return None
        return run.model.provider.cost(run.model.name, run.usage)

    def _record(self, run: _Run, *, status: str, error: str | None = None) -> None:
        with run.record_lock:
            if run.recorded:
                return
            run.recorded = True
        finish = run.finish_reason if status == "ok" else status if status == "cancelled" else None
        text = "".join(run.text)
        response: str | None = text
        if run.tool_calls:
            response = ChatResponse(
                id=run.trace_id,
                model=run.model.id if run.model else run.requested,
                message=Message.assistant(text, tool_calls=run.tool_calls),
            ).message.model_dump_json()
        row = TraceRow(
            id=run.trace_id,
            started_at=run.started,
            requested_model=run.requested,
            model=run.model.id if run.model else None,
            provider=run.model.id.split(":", 1)[0] if run.model else None,
            stream=run.stream,
            status=status,
            finish_reason=finish,
            input_tokens=run.usage.input_tokens,
            output_tokens=run.usage.output_tokens,
            latency_ms=(time.perf_counter() - run.t0) * 1000,
            ttft_ms=self._ttft(run),
            cost_usd=self._cost(run),
            error=error,
            attempts=[a.as_dict() for a in run.attempts],
            request=run.request.model_dump(mode="json", exclude_defaults=True),
            response=response,
            usage_estimated=run.usage.estimated,
            parent_id=run.trace.parent_id,
            kind=run.trace.kind,
            prompt_name=run.trace.prompt_name,
            prompt_version=run.trace.prompt_version,
            api_key=run.trace.api_key,
            guardrails=list(run.guard),
        )
        self.store.record_later(row)
