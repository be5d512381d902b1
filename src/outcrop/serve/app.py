"""``outcrop serve``: outcrop's models, knowledge bases and agents over an OpenAI-compatible API.

Every request goes through the same :class:`~outcrop.gateway.Gateway` as the
library and the CLI, so every call is a trace row — carrying the API key that
made it, which is what budgets are counted from. Local models sit behind a fair
(FIFO) queue with a length limit and a wait timeout; remote models run
concurrently. A client that disconnects mid-stream stops the generation, and
the call is recorded as cancelled with its partial usage.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    InvalidRequestError,
    MissingKeyError,
    OutcropError,
    ProviderError,
    ProviderTimeoutError,
    UnknownModelError,
    UserError,
)
from ..gateway import ChatStream, Gateway, TraceInfo, current_api_key
from ..observe.online import OnlineEvaluator
from ..observe.otel import install_telemetry, telemetry_config
from ..types import StreamEvent, Usage, estimate_tokens
from .evals_api import evals_router
from .keys import ApiKey, KeyCache
from .limits import Call, Denied, FairQueue, Grant, QueueFull, QueueTimeout, limits_for
from .metrics import Metrics
from .monitor import monitor_router
from .openai_api import (
    ChatCompletion,
    ChatCompletionRequest,
    EmbeddingList,
    EmbeddingRequest,
    ErrorBody,
    ModelList,
    chunk,
    completion,
    event_delta,
    stored_prompt,
    to_chat_request,
)
from .pages_api import pages_router
from .ui import router as ui_router

__all__ = ["ServeConfig", "create_app", "tune_gc"]

log = logging.getLogger("outcrop.serve")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass
class ServeConfig:
    max_body_bytes: int = 4 * 1024 * 1024
    queue_max: int = 32  # requests waiting for a local model, beyond those it serves
    queue_timeout: float = 120.0  # seconds a request may wait for a local model
    local_slots: int = 1  # calls a local model serves at once (more with batching)
    require_keys: bool = False  # also when no key exists yet (otherwise: once one does)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.retry_after = retry_after


def _error(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    # A message may quote what the request sent, lone surrogates included: keep it encodable.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _from_outcrop(exc: OutcropError) -> ApiError:
    if isinstance(exc, UnknownModelError):
        return ApiError(404, str(exc), code="model_not_found", param="model")
    if isinstance(exc, MissingKeyError):
        return ApiError(
            503, f"The server is not set up for this model: {exc}", type_="server_error"
        )
    if isinstance(exc, InvalidRequestError):
        return ApiError(400, str(exc), param=exc.field)
    if isinstance(exc, UserError):
        return ApiError(400, str(exc))
    if isinstance(exc, ProviderTimeoutError):
        return ApiError(504, str(exc), type_="server_error", code="timeout")
    if isinstance(exc, ProviderError):
        if exc.status_code == 429:
            retry = exc.headers.get("retry-after") or exc.headers.get("Retry-After")
            return ApiError(
                429,
                str(exc),
                type_="rate_limit_error",
                code="upstream_rate_limit",
                retry_after=float(retry) if retry and retry.isdigit() else 1.0,
            )
        if exc.status_code is not None and 400 <= exc.status_code < 500:
            return ApiError(400, str(exc), code="upstream_rejected")
        return ApiError(502, str(exc), type_="server_error", code="upstream_error")
    return ApiError(500, str(exc), type_="server_error")


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Invalid request (the message names the field)",
        401: "Missing or unknown API key",
        403: "The key may not use this model or knowledge base",
        404: "Unknown model, knowledge base or agent",
        413: "Request body too large",
        415: "The body is not sent as JSON (Content-Type: application/json)",
        429: "Rate limit, budget or queue full (see Retry-After)",
        502: "The model provider failed",
        503: "Waited too long for a local model (see Retry-After)",
    }.items()
}
# The same, for a route whose own answer is not JSON (errors still are).
_JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {
        "description": spec["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for code, spec in _ERRORS.items()
}
_CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    200: {
        "description": "The completion; with `stream: true`, server-sent `chat.completion.chunk` "
        "events ending with `data: [DONE]`",
        "content": {
            "text/event-stream": {
                "schema": {  # one event (Open API 3.1 has no itemSchema yet)
                    "type": "object",
                    "properties": {
                        "data": {
                            "type": "string",
                            "description": "A chat.completion.chunk as JSON; `[DONE]` last",
                        }
                    },
                    "required": ["data"],
                }
            }
        },
    },
}


class _BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, whether sized or chunked."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = (
            f"The request body is over the server's limit of {self.limit:,} bytes; send less "
            "(or start the server with a larger --max-body-mb)."
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _error(413, message, code="body_too_large")(scope, receive, send)
                return
        seen = 0
        too_big = False

        async def limited() -> MutableMapping[str, Any]:
            nonlocal seen, too_big
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    too_big = True
                    raise ApiError(413, message, code="body_too_large")
            return msg

        started = False

        async def tracking_send(msg: MutableMapping[str, Any]) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited, tracking_send)
        except ApiError as exc:
            if too_big and not started:
                await _error(413, exc.message, code="body_too_large")(scope, receive, send)
                return
            raise


class _Measure:
    """Count each request by route and status, timed to its last byte (a stream included).

    A plain ASGI wrapper: Starlette's ``BaseHTTPMiddleware`` costs a task and a queue per
    request, a fifth of the event loop's time on a fast model."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        recorded = False

        def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                path = getattr(scope.get("route"), "path", "unmatched")
                self.metrics.request(path, status, time.perf_counter() - t0)

        async def timed(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                record()

        try:
            await self.app(scope, receive, timed)
        finally:
            record()


class _Body(BaseModel):
    model_config = ConfigDict(strict=True)  # the JSON types /openapi.json documents: 0 is not false


class KBSearch(_Body):
    query: str = Field(min_length=1)
    k: int = Field(default=5, ge=1, le=100)
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"
    filters: dict[str, str] | None = None


class KBAsk(_Body):
    question: str = Field(min_length=1)
    model: str | None = Field(default=None, min_length=1)
    k: int = Field(default=5, ge=1, le=50)


class AgentRun(_Body):
    task: str = Field(min_length=1)
    model: str | None = Field(default=None, min_length=1)


class Health(BaseModel):
    status: Literal["ok"]
    queues: dict[str, int] = Field(description="Requests waiting, per local model.")


class KBHit(BaseModel):
    source: str
    title: str | None
    chunk: int
    start: int
    end: int
    heading_path: list[str]
    score: float
    scores: dict[str, float] = Field(description="The score of each stage that produced it.")
    text: str


class KBHits(BaseModel):
    object: Literal["list"]
    data: list[KBHit]


class KBCitation(BaseModel):
    number: int
    source: str
    chunk: int
    start: int
    end: int
    score: float
    text: str
    inferred: bool


class KBAnswer(BaseModel):
    answer: str
    found: bool
    citations: list[KBCitation]
    sources: list[KBHit]
    trace_id: str | None


class AgentStepOut(BaseModel):
    kind: Literal["model", "tool"]
    text: str
    tool: str | None
    arguments: dict[str, Any] | None
    ok: bool


class AgentUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class AgentRunResult(BaseModel):
    id: str
    status: str
    output: Any
    steps: list[AgentStepOut]
    usage: AgentUsage
    cost_usd: float | None


class _Server:
    """State shared by the routes: the gateway, limits, queues and metrics."""

    def __init__(self, gateway: Gateway, config: ServeConfig):
        self.gateway = gateway
        self.config = config
        self.limiter = limits_for(gateway.store, gateway.settings)  # OUTCROP_REDIS_URL: shared
        self.keys = KeyCache(gateway.store)
        self.metrics = Metrics()
        self.metrics.follow(gateway.store)  # every traced call, by model, prompt and key
        self.queues: dict[str, FairQueue] = {}
        self.metrics.gauge(
            "outcrop_queue_waiting",
            "Requests waiting for a local model.",
            lambda: {m: float(q.waiting) for m, q in self.queues.items()},
        )
        self.metrics.gauge(
            "outcrop_queue_active",
            "Calls a local model is serving now.",
            lambda: {m: float(q.active) for m, q in self.queues.items()},
        )

    def queue_for(self, model_id: str, provider: str) -> FairQueue | None:
        if provider != "local":
            return None
        queue = self.queues.get(model_id)
        if queue is None:
            queue = FairQueue(
                self.config.local_slots, self.config.queue_max, self.config.queue_timeout
            )
            self.queues[model_id] = queue
        return queue

    async def caller(self, request: Request) -> ApiKey | None:
        if self.keys.stale():  # once a second at most: the database, off the event loop
            await asyncio.to_thread(self.keys.refresh)
        required = self.config.require_keys or self.keys.required()
        if not required:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(
                401,
                "Missing API key: send the header 'Authorization: Bearer <key>' (create a key "
                "with: outcrop keys create NAME).",
                code="missing_api_key",
            )
        secret = secret.strip()
        if self.keys.cached(secret):
            key = self.keys.lookup(secret)
        else:
            key = await asyncio.to_thread(self.keys.lookup, secret)
        if key is None:
            raise ApiError(
                401,
                f"Incorrect API key provided: {secret.strip()[:7]}…. Check it, or see "
                "`outcrop keys list` on the server.",
                code="invalid_api_key",
            )
        return key

    async def admit_call(
        self,
        key: ApiKey | None,
        model: str | None = None,
        body: ChatCompletionRequest | None = None,
    ) -> Grant:
        """Check the key's limits (off the event loop when replicas share them). For a chat
        completion's ``body``, a shared backend holds the call's share of the key's budgets
        until the call is settled."""
        if key is None:
            return Grant()
        limits = key.limits
        budgets = limits.tokens_per_day or limits.tokens_per_month
        if self.limiter.shared or budgets or limits.usd_per_day or limits.usd_per_month:
            # Budgets read the ledger (a database round trip after the queued rows are
            # written): never on the event loop, where it would hold up every stream.
            return await asyncio.to_thread(self._admit, key, model, body)
        return self._admit(key, model)

    def _admit(
        self, key: ApiKey | None, model: str | None, body: ChatCompletionRequest | None = None
    ) -> Grant:
        if key is None:
            return Grant()
        if model is not None and not key.allows_model(model):
            raise ApiError(
                403,
                f"Key {key.name!r} may not use model {model!r} (it may use: "
                f"{', '.join(key.models)}).",
                code="model_not_allowed",
                param="model",
            )
        call = self._call(key, model, body) if body is not None else None
        try:
            return self.limiter.admit(key, call)
        except Denied as denied:
            self.metrics.reject(denied.code)
            raise ApiError(
                denied.status,
                denied.message,
                type_=denied.type,
                code=denied.code,
                retry_after=denied.retry_after,
            ) from None

    def _call(self, key: ApiKey, model: str | None, body: ChatCompletionRequest) -> Call:
        """What a chat completion asks of the key's budgets: its max_tokens, its prompt (four
        characters a token and four a message, as Gateway.render estimates) and prices."""
        asked = body.max_completion_tokens
        limits = key.limits
        dollars = bool(limits.usd_per_day or limits.usd_per_month)
        if not (dollars or limits.tokens_per_day or limits.tokens_per_month):
            return Call(body.max_tokens if asked is None else asked)
        stored = stored_prompt(body, self.gateway.store) if body.outcrop else None
        request = to_chat_request(body, None, stored.prompt if stored else None)
        prompt = sum(estimate_tokens(m.text) + 4 for m in request.messages)
        prices = self._prices(model) if dollars else (None, None)
        return Call(body.max_tokens if asked is None else asked, prompt, *prices)

    def _prices(self, model: str | None) -> tuple[float | None, float | None]:
        """The price of one input and one output token of ``model`` (None: unknown)."""
        try:
            resolved = self.gateway.resolve(model)
            cost_in = resolved.provider.cost(resolved.name, Usage(input_tokens=1_000_000))
            cost_out = resolved.provider.cost(resolved.name, Usage(output_tokens=1_000_000))
        except OutcropError:
            return None, None
        return (cost_in / 1e6 if cost_in else None), (cost_out / 1e6 if cost_out else None)

    def spent(self, key: ApiKey | None, model: str, usage: Usage) -> None:
        if key is not None:
            self.limiter.settle(Grant(key), usage.input_tokens + usage.output_tokens)

    async def enter(self, queue: FairQueue | None) -> None:
        if queue is None:
            return
        try:
            await queue.acquire()
        except QueueFull as full:
            self.metrics.reject("queue_full")
            raise ApiError(
                429,
                f"The local model is busy: {full.waiting} requests are waiting already. Try "
                "again shortly.",
                type_="rate_limit_error",
                code="queue_full",
                retry_after=full.retry_after,
            ) from None
        except QueueTimeout as late:
            self.metrics.reject("queue_timeout")
            raise ApiError(
                503,
                f"Waited {late.waited:.0f} s for the local model without a turn. Try again "
                "shortly.",
                type_="server_error",
                code="queue_timeout",
                retry_after=late.retry_after,
            ) from None


class _Puller:
    """Reads a stream on worker threads, one event at a time.

    A client that goes away cancels the reading coroutine while a worker may still
    be inside the stream; ``abandon()`` then leaves the closing to that worker, so
    the generation stops and the call is recorded as cancelled either way.
    """

    def __init__(self, stream: ChatStream):
        self.stream = stream
        self._lock = threading.Lock()
        self._busy = False
        self._abandoned = False

    def _pull(self) -> StreamEvent | None:
        with self._lock:
            if self._abandoned:
                return None
            self._busy = True
        try:
            return next(self.stream, None)
        finally:
            with self._lock:
                self._busy = False
                abandoned = self._abandoned
            if abandoned:
                self.stream.close()

    async def next(self) -> StreamEvent | None:
        return await asyncio.to_thread(self._pull)

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            busy = self._busy
        if busy:
            self.stream._run.cancel.set()  # the worker stops at the next token and closes
        else:
            self.stream.close()


def _check_text(body: BaseModel) -> None:
    """Refuse strings that are not Unicode: a lone surrogate, which JSON can carry as an escape
    such as "\\ud800", cannot be encoded, stored or sent to a model."""
    try:
        body.model_dump_json(by_alias=True)  # fast, and fails on such a string
        return
    except ValueError:
        pass  # find where, for the message
    where = _not_unicode(body.model_dump(by_alias=True), "")
    if where is not None:
        raise ApiError(
            400,
            f"{where or 'body'}: the text is not valid Unicode (a lone surrogate such as "
            "\\ud800); send UTF-8 text.",
            param=where or None,
        )


def _not_unicode(value: Any, where: str) -> str | None:
    """Where in ``value`` the first string with a lone surrogate is, or None."""
    if isinstance(value, str):
        return None if value.isascii() or _encodes(value) else where
    if isinstance(value, dict):
        for name, item in value.items():
            inside = f"{where}.{name}" if where else str(name)
            if not _encodes(str(name)):
                return where or "body"
            found = _not_unicode(item, inside)
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _not_unicode(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(value: Any) -> str:
    """A short rendering of a value a request sent, for error messages."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def tune_gc() -> None:
    """Garbage collection for a server process (``outcrop serve``), once everything it
    loads at start is loaded: what exists now is frozen (never scanned again), and a young
    collection waits for 20,000 new objects instead of 700. A request allocates hundreds;
    each trace row lives until the writer stores it, and at the default every few requests
    paid for a collection that scanned the rows queued. Measured with
    ``benchmarks/tracing.py`` (HTTP part, three interleaved runs each way): tracing's cost
    in requests/s 7% on average against 15% without (3–11% against 3–23%: the machine is
    noisy). Left to the host process when outcrop is a library."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def create_app(gateway: Gateway | None = None, config: ServeConfig | None = None) -> FastAPI:
    """The ASGI app. ``gateway`` defaults to one built from outcrop.toml."""
    gw = gateway if gateway is not None else Gateway()
    server = _Server(gw, config or ServeConfig())
    otel = telemetry_config(gw.settings)  # [telemetry] or OTEL_* variables; None when off
    online = OnlineEvaluator.from_gateway(gw)  # [monitor.online_eval] in outcrop.toml, or None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        telemetry = install_telemetry(gw, otel) if otel is not None else None
        if online is not None:
            online.start()
        # Model calls run on worker threads; the loop's default pool (CPU count + 4 threads)
        # would hold back concurrent requests to remote models and batched local slots.
        workers = max(32, 4 * server.config.local_slots)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="outcrop-call")
        asyncio.get_running_loop().set_default_executor(pool)
        yield
        if online is not None:
            await asyncio.to_thread(online.close)  # scores what is queued, 10 s at most
        if telemetry is not None:
            await asyncio.to_thread(telemetry.shutdown)  # sends the spans left
        gw.close()  # in-flight requests have finished or been cancelled (and recorded)
        server.limiter.close()

    app = FastAPI(
        title="outcrop",
        version="1",
        summary="OpenAI-compatible API over outcrop's models, knowledge bases and agents.",
        lifespan=lifespan,
    )
    app.state.server = server
    app.state.online = online

    def openapi() -> dict[str, Any]:
        # Bad input gets a 400 in OpenAI's error shape, never FastAPI's 422: document that.
        doc = app.openapi_schema
        if doc is None:
            doc = FastAPI.openapi(app)  # builds the document once and keeps it
            for operations in doc["paths"].values():
                for operation in operations.values():
                    operation["responses"].pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                doc["components"]["schemas"].pop(name, None)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.type, exc.code, exc.param, exc.retry_after)

    @app.exception_handler(OutcropError)
    async def outcrop_error(_: Request, exc: OutcropError) -> JSONResponse:
        e = _from_outcrop(exc)
        return _error(e.status, e.message, e.type, e.code, e.param, e.retry_after)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("loc") == ("body",) and isinstance(e.get("input"), bytes) for e in errors):
            # FastAPI reads the body as JSON only when the content type says it is JSON.
            got = request.headers.get("content-type", "")
            return _error(
                415,
                "Send the body as JSON, with the header 'Content-Type: application/json' (got "
                f"{got!r}).",
                code="unsupported_media_type",
            )
        parts = []
        param = None
        for err in errors[:5]:
            loc = [str(p) for p in err.get("loc", ()) if p != "body"]
            where = ".".join(loc)
            param = param or where or None
            if err.get("type") == "json_invalid":
                ctx = err.get("ctx", {})
                parts.append(f"the body is not valid JSON ({ctx.get('error', 'parse error')})")
                continue
            value = err.get("input")
            shown = ""
            if err.get("type") not in ("missing",) and not isinstance(value, dict | list):
                shown = f" (got {_shown(value)})" if value is not None else ""
            parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}{shown}")
        return _error(400, "Invalid request: " + "; ".join(parts), param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = "No such endpoint. The API is under /v1 (see /docs)."
        elif exc.status_code == 400:  # FastAPI could not read the body as JSON
            cause = exc.__cause__
            why = "send UTF-8 encoded JSON"
            if isinstance(cause, UnicodeDecodeError):
                why = f"it is not UTF-8: byte {cause.start} cannot be decoded"
            elif isinstance(cause, RecursionError):
                why = "it is nested too deeply"
            message = f"Invalid request: the body could not be read as JSON ({why})."
        elif exc.status_code == 405:
            message = "Method not allowed on this endpoint (see /docs)."
        response = _error(exc.status_code, message)
        response.headers.update(exc.headers or {})  # a 405 says which methods are allowed
        return response

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _error(500, f"Internal error ({exc.__class__.__name__}).", "server_error")

    app.add_middleware(_Measure, metrics=server.metrics)
    app.add_middleware(_BodyLimit, limit=server.config.max_body_bytes)

    caller = Depends(server.caller)

    @app.get("/health", tags=["server"], response_model=Health)
    async def health() -> dict[str, Any]:
        """Liveness: answers without a key."""
        return {"status": "ok", "queues": {m: q.waiting for m, q in server.queues.items()}}

    @app.get("/metrics", tags=["server"], response_class=PlainTextResponse, responses=_JSON_ERRORS)
    async def metrics(key: ApiKey | None = caller) -> PlainTextResponse:
        """Prometheus metrics: requests, latency, tokens, refusals, queue depth."""
        text = await asyncio.to_thread(server.metrics.render)  # waits for queued traces
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", tags=["openai"], responses=_ERRORS, response_model=ModelList)
    async def models(key: ApiKey | None = caller) -> dict[str, Any]:
        """The models this server serves (those the key may use)."""
        found = await asyncio.to_thread(gw.models)
        data = [
            {
                "id": m.id,
                "object": "model",
                "created": 0,
                "owned_by": m.provider,
                "default": m.id == gw.settings.default_model,
                "installed": m.installed,
            }
            for m in found
            if key is None or key.allows_model(m.id)
        ]
        return {"object": "list", "data": data}

    @app.post(
        "/v1/chat/completions",
        tags=["openai"],
        responses=_CHAT_RESPONSES,
        response_model=ChatCompletion,
        response_model_exclude_unset=True,
    )
    async def chat_completions(
        body: ChatCompletionRequest, reply: Response, key: ApiKey | None = caller
    ) -> Any:
        """Chat completions, plain or streamed (SSE), with tools and JSON-schema output.
        The header ``x-outcrop-trace-id`` names the call's trace (for feedback)."""
        _check_text(body)
        grant = await server.admit_call(key, body.model, body)
        try:
            prompt = (
                await asyncio.to_thread(stored_prompt, body, gw.store) if body.outcrop else None
            )
            chat_request = to_chat_request(body, grant.cap, prompt.prompt if prompt else None)
            resolved = gw.resolve(chat_request.model)
            queue = server.queue_for(resolved.id, resolved.provider.name)
            await server.enter(queue)
        except BaseException:
            server.limiter.settle(grant, 0)  # gives back what it held
            raise
        t0 = time.perf_counter()

        def release() -> None:
            if queue is not None:
                queue.release(time.perf_counter() - t0)

        trace = TraceInfo(
            kind="chat",
            api_key=key.id if key else None,
            prompt_name=prompt.name if prompt else None,
            prompt_version=prompt.version if prompt else None,
        )
        try:
            stream = gw.stream(chat_request, trace=trace)
        except BaseException:
            release()
            server.limiter.settle(grant, 0)
            raise
        server.limiter.bind(grant, stream.trace_id)  # its trace row settles what it holds
        reply.headers["x-outcrop-trace-id"] = stream.trace_id
        if not body.stream:
            try:
                response = await asyncio.to_thread(stream.collect)
            finally:
                stream.close()
                release()
            server.spent(key, response.model, response.usage)
            return completion(response)
        puller = _Puller(stream)
        try:
            first = await puller.next()  # errors before the first token get a status
        except BaseException:
            puller.abandon()
            release()
            raise
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(server, puller, first, body.model, key, include_usage, queue, t0),
            media_type="text/event-stream",
            headers={
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                "x-outcrop-trace-id": puller.stream.trace_id,
            },
        )

    @app.post("/v1/embeddings", tags=["openai"], responses=_ERRORS, response_model=EmbeddingList)
    async def embeddings(body: EmbeddingRequest, key: ApiKey | None = caller) -> dict[str, Any]:
        """Embeddings (float lists or base64 float32)."""
        _check_text(body)
        await server.admit_call(key, body.model)
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts or any(not t for t in texts):
            raise ApiError(400, "input: give one or more non-empty texts", param="input")
        if len(texts) > 2048:
            raise ApiError(400, "input: at most 2,048 texts per request", param="input")
        result = await asyncio.to_thread(
            gw.embed, texts, model=body.model, api_key=key.id if key else None
        )
        server.spent(key, result.model, result.usage)
        data = []
        for i, vector in enumerate(result.vectors):
            value: Any = vector
            if body.encoding_format == "base64":
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        tokens = result.usage.input_tokens
        return {
            "object": "list",
            "data": data,
            "model": result.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _kb(name: str, key: ApiKey | None) -> Any:
        if key is not None and not key.allows_kb(name):
            raise ApiError(
                403, f"Key {key.name!r} may not use knowledge base {name!r}.", code="kb_not_allowed"
            )
        from ..rag import KnowledgeBase, kb_names

        if name not in kb_names():
            raise ApiError(
                404,
                f"No knowledge base {name!r}; knowledge bases: {', '.join(kb_names()) or 'none'}.",
                code="kb_not_found",
            )
        return KnowledgeBase.open(name, gateway=gw)

    @app.post(
        "/v1/knowledge-bases/{name}/search",
        tags=["knowledge bases"],
        responses=_ERRORS,
        response_model=KBHits,
    )
    async def kb_search(name: str, body: KBSearch, key: ApiKey | None = caller) -> dict[str, Any]:
        """Hybrid search; every result carries its score per stage."""
        _check_text(body)
        await server.admit_call(key)
        base = _kb(name, key)
        try:
            hits = await asyncio.to_thread(
                base.search, body.query, k=body.k, mode=body.mode, filters=body.filters
            )
        finally:
            base.close()
        return {"object": "list", "data": [h.to_dict() for h in hits]}

    @app.post(
        "/v1/knowledge-bases/{name}/ask",
        tags=["knowledge bases"],
        responses=_ERRORS,
        response_model=KBAnswer,
    )
    async def kb_ask(name: str, body: KBAsk, key: ApiKey | None = caller) -> dict[str, Any]:
        """An answer from the knowledge base that cites its sources."""
        _check_text(body)
        model = body.model or gw.settings.default_model
        await server.admit_call(key, model)
        base = _kb(name, key)
        resolved = gw.resolve(model)
        queue = server.queue_for(resolved.id, resolved.provider.name)
        await server.enter(queue)
        t0 = time.perf_counter()
        acting = current_api_key.set(key.id if key else None)  # budgets count its calls
        try:
            answer = await asyncio.to_thread(base.ask, body.question, model=model, k=body.k)
        finally:
            current_api_key.reset(acting)
            base.close()
            if queue is not None:
                queue.release(time.perf_counter() - t0)
        return dict(answer.to_dict())

    @app.post(
        "/v1/agents/{name}/runs", tags=["agents"], responses=_ERRORS, response_model=AgentRunResult
    )
    async def agent_run(name: str, body: AgentRun, key: ApiKey | None = caller) -> dict[str, Any]:
        """Run an agent defined in outcrop.toml ([agents.NAME]) on a task."""
        _check_text(body)
        spec = server.config.agents.get(name)
        if spec is None:
            known = ", ".join(server.config.agents) or "none (define [agents.NAME] in outcrop.toml)"
            raise ApiError(
                404, f"No agent named {name!r}; agents: {known}.", code="agent_not_found"
            )
        model = body.model or spec.get("model") or gw.settings.default_model
        await server.admit_call(key, model)
        from ..agents import Agent
        from ..agents.builtin import calculator, current_datetime, kb_search_tool

        tools = []
        for tool_name in spec.get("tools", []):
            if tool_name.startswith("kb:"):
                if key is not None and not key.allows_kb(tool_name[3:]):
                    raise ApiError(
                        403, f"Key {key.name!r} may not use {tool_name}.", code="kb_not_allowed"
                    )
                tools.append(kb_search_tool(tool_name[3:], gateway=gw))
            else:
                tools.append({"calculator": calculator, "datetime": current_datetime}[tool_name])
        agent = Agent(
            model,
            tools,
            spec.get("instructions"),
            max_steps=int(spec.get("max_steps", 6)),
            gateway=gw,
        )
        resolved = gw.resolve(model)
        queue = server.queue_for(resolved.id, resolved.provider.name)
        await server.enter(queue)
        t0 = time.perf_counter()
        acting = current_api_key.set(key.id if key else None)  # budgets count its calls
        try:
            result = await asyncio.to_thread(agent.run, body.task)
        finally:
            current_api_key.reset(acting)
            if queue is not None:
                queue.release(time.perf_counter() - t0)
        return {
            "id": result.trace_id,
            "status": result.status,
            "output": result.output,
            "steps": [
                {
                    "kind": s.kind,
                    "text": s.text,
                    "tool": s.tool,
                    "arguments": s.arguments,
                    "ok": s.ok,
                }
                for s in result.steps
            ],
            "usage": {
                "prompt_tokens": result.usage.input_tokens,
                "completion_tokens": result.usage.output_tokens,
            },
            "cost_usd": result.cost_usd,
        }

    # The routers of the monitoring API and the pages go last: requests are matched against
    # routes in order, and the OpenAI-compatible routes above carry the traffic.
    app.include_router(monitor_router(gw, server.caller, ApiError, online), responses=_ERRORS)
    app.include_router(evals_router(gw, server.caller, ApiError, _JSON_ERRORS), responses=_ERRORS)
    app.include_router(pages_router(server, ApiError))  # the Knowledge and Models pages' API
    app.include_router(ui_router)  # the playground, monitor and trace pages (/ui)

    return app


async def _stream(
    server: _Server,
    puller: _Puller,
    first: StreamEvent | None,
    model: str,
    key: ApiKey | None,
    include_usage: bool,
    queue: FairQueue | None,
    t0: float,
) -> AsyncIterator[bytes]:
    created = int(time.time())
    trace_id = puller.stream.trace_id
    usage = Usage()
    tools = 0
    finished = False
    try:
        yield _sse(chunk(trace_id, model, created, delta={"role": "assistant", "content": ""}))
        event = first
        while event is not None:
            if event.usage is not None:
                usage = event.usage
            if event.type == "finish":
                finished = True
                yield _sse(chunk(trace_id, model, created, finish_reason=event.finish_reason))
            else:
                delta = event_delta(event, tools)
                if event.type == "tool_call":
                    tools += 1
                if delta is not None:
                    yield _sse(chunk(trace_id, model, created, delta=delta))
            event = await puller.next()
        if include_usage:
            yield _sse(chunk(trace_id, model, created, usage=usage))
        yield _sse("[DONE]")
    except OutcropError as exc:
        e = _from_outcrop(exc)
        yield _sse({"error": {"message": e.message, "type": e.type, "code": e.code}})
    finally:
        # A client that went away cancels this generator: stop the model and record
        # the call as cancelled with what it used so far.
        puller.abandon()
        if queue is not None:
            queue.release(time.perf_counter() - t0)
        server.spent(key, model, usage)
        if not finished:
            log.info("stream %s ended early", trace_id)
