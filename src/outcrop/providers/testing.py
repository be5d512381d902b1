"""Test doubles for your own tests: deterministic models with no network and no weights.

``TestModel`` answers from a queue of replies and records every request::

    from outcrop import Gateway
    from outcrop.providers.testing import TestModel

    model = TestModel(["Paris.", "Berlin."])
    gw = Gateway(providers={"test": model})
    assert gw.chat("Capital of France?", model="test").text == "Paris."
    assert model.requests[0].messages[-1].text == "Capital of France?"

``FunctionModel`` answers with whatever your function returns for the request.

Both keep every request in ``requests`` unless told otherwise: in a load test or a
long-running server, ``keep=1000`` holds the latest thousand (``keep=0`` none), so the
log does not grow with every call.

Both count tokens as whitespace-separated words, so usage is deterministic.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from ..types import ChatRequest, Message, StreamEvent, ToolCall, Usage
from .base import ModelInfo, Provider

__all__ = ["FunctionModel", "TestModel"]

Reply = str | Message | ToolCall | list[ToolCall] | BaseException


def _words(text: str) -> list[str]:
    """Split text into word-with-following-space pieces; joined they give the text back."""
    return re.findall(r"\S+\s*|\s+", text)


def _input_tokens(request: ChatRequest) -> int:
    return sum(len(m.text.split()) for m in request.messages)


class _Double(Provider):
    supports_tools = True
    supports_json_schema = True
    _ids = itertools.count(1)

    def __init__(self, keep: int | None = None) -> None:
        if keep is not None and (type(keep) is not int or keep < 0):
            raise ValueError(f"keep must be None or a whole number, at least 0, not {keep!r}")
        self.requests: list[ChatRequest] = []
        self.keep = keep  # how many of the latest requests to keep (None: all of them)

    def _reply(self, request: ChatRequest) -> Reply | Iterable[str]:
        raise NotImplementedError

    def stream(
        self, model: str, request: ChatRequest, *, plain: bool = False
    ) -> Iterator[StreamEvent]:
        if self.keep is None or self.keep > 0:
            self.requests.append(request)
            if self.keep is not None and len(self.requests) > 2 * self.keep:
                del self.requests[: -self.keep]  # trimmed now and then, not on every call
        reply = self._reply(request)
        if isinstance(reply, BaseException):
            raise reply
        usage = Usage(input_tokens=_input_tokens(request))
        calls: list[ToolCall] = []
        if isinstance(reply, ToolCall):
            calls = [reply]
        elif isinstance(reply, list) and all(isinstance(c, ToolCall) for c in reply):
            calls = list(reply)
        elif isinstance(reply, Message):
            calls = list(reply.tool_calls)
            reply = reply.text
        pieces: Iterable[str] = []
        if isinstance(reply, str):
            pieces = _words(reply)
        elif not calls and isinstance(reply, Iterable):
            pieces = reply  # type: ignore[assignment]
        written = 0
        stopped = False
        limit = request.max_tokens
        emitted = ""
        for piece in pieces:
            if limit is not None and written >= limit:
                break
            for stop in request.stop:
                if stop in emitted + piece:
                    piece = (emitted + piece).split(stop, 1)[0][len(emitted) :]
                    stopped = True
            if piece:
                written += max(1, len(piece.split()))
                emitted += piece
                usage = Usage(input_tokens=usage.input_tokens, output_tokens=written)
                yield StreamEvent(type="text", text=piece, usage=usage)
            if stopped:
                break
        for call in calls:
            written += 1 + len(str(call.arguments).split())
            usage = Usage(input_tokens=usage.input_tokens, output_tokens=written)
            yield StreamEvent(type="tool_call", tool_call=call, usage=usage)
        finish = "tool_calls" if calls else "stop"
        if limit is not None and written >= limit and not stopped and not calls:
            finish = "length"
        yield StreamEvent(type="finish", usage=usage, finish_reason=finish)

    def count_tokens(self, model: str, text: str) -> int | None:
        return len(text.split())

    def cost(self, model: str, usage: Usage) -> float | None:
        return 0.0


class TestModel(_Double):
    """Answers from a queue of replies, then with ``default``; records requests.

    A reply may be a string, a :class:`Message`, a :class:`ToolCall` (or a list
    of them), or an exception to raise — e.g. a ``ProviderError(status_code=429)``
    to test retries and fallbacks.
    """

    __test__ = False  # not a pytest test class
    name = "test"

    def __init__(
        self, replies: Iterable[Reply] = (), *, default: str = "ok", keep: int | None = None
    ):
        super().__init__(keep)
        self.replies: deque[Reply] = deque(replies)
        self.default = default

    def _reply(self, request: ChatRequest) -> Reply:
        return self.replies.popleft() if self.replies else self.default

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=self.name, provider=self.name, description="queued test replies")]


class FunctionModel(_Double):
    """Answers with ``fn(request)``: a string, a Message, tool calls, or an iterable of pieces."""

    name = "function"

    def __init__(
        self, fn: Callable[[ChatRequest], Reply | Iterable[str]], *, keep: int | None = None
    ):
        super().__init__(keep)
        self.fn = fn

    def _reply(self, request: ChatRequest) -> Reply | Iterable[str]:
        return self.fn(request)

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=self.name, provider=self.name, description="answers with a function")]
