"""The agent loop: model → tool calls → results → model, until an answer or a limit.

On providers with native tool calling the tools are sent as tools. On the local
model the answer is constrained by a grammar to exactly one of two JSON shapes —
``{"tool_calls": [...]}`` naming a real tool with schema-valid arguments, or
``{"answer": "..."}`` — so a call is always well-formed.

Every run is a trace (kind ``agent``); each model call and each tool call is a
child of it. A tool marked ``requires_approval`` pauses the run: :meth:`Agent.run`
returns a result with ``status == "pending_approval"`` and :meth:`Agent.resume`
continues it once a person has said yes or no.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from ..errors import InvalidRequestError
from ..types import ChatResponse, Message, ResponseFormat, ToolCall, Usage
from .tools import Tool, ToolResult

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["Agent", "AgentResult", "AgentStep"]

Status = Literal["done", "pending_approval", "max_steps", "timeout"]


@dataclass
class AgentStep:
    """One thing the run did: a model turn, or a tool call and its result."""

    kind: Literal["model", "tool"]
    text: str = ""
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    ok: bool = True
    seconds: float = 0.0


@dataclass
class AgentResult:
    status: Status
    output: Any
    steps: list[AgentStep]
    usage: Usage
    cost_usd: float
    trace_id: str
    pending: list[ToolCall] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    model_turns: int = 0
    started: float = 0.0
    done_calls: dict[str, str] = field(default_factory=dict)  # call key → its result
    force_answer: bool = False

    @property
    def text(self) -> str:
        return self.output if isinstance(self.output, str) else json.dumps(self.output)


class Agent:
    """A bounded loop that lets a model use the tools it is given, and only those."""

    def __init__(
        self,
        model: str | None = None,
        tools: Sequence[Tool] = (),
        instructions: str | None = None,
        *,
        max_steps: int = 8,
        timeout: float = 300.0,
        output_schema: dict[str, Any] | None = None,
        gateway: Gateway | None = None,
        max_tokens: int = 512,
    ):
        names = [t.name for t in tools]
        if len(names) != len(set(names)):
            raise InvalidRequestError("Two tools have the same name.", field="tools")
        if max_steps < 1:
            raise InvalidRequestError("max_steps must be at least 1", field="max_steps")
        self.model = model
        self.tools = {t.name: t for t in tools}
        self.instructions = instructions
        self.max_steps = max_steps
        self.timeout = timeout
        self.output_schema = output_schema
        self.max_tokens = max_tokens
        if gateway is None:
            from ..gateway import Gateway

            gateway = Gateway()
        self.gateway = gateway
        self.local = gateway.resolve(model).provider.name == "local"

    # -- prompts ------------------------------------------------------------

    def _system(self) -> str:
        parts = [
            self.instructions or "You are a careful assistant that completes the user's task.",
        ]
        if self.tools:
            parts.append(
                "Use the tools when they help; never guess what a tool can tell you. "
                "After the tool results, give the final answer."
            )
        if self.local and self.tools:
            specs = [t.spec().model_dump() for t in self.tools.values()]
            parts.append(
                "Tools:\n" + json.dumps(specs, ensure_ascii=False) + "\nReply with JSON only: "
                '{"tool_calls": [{"name": ..., "arguments": {...}}]} to call tools, or '
                '{"answer": ...} with the final answer.'
            )
        return "\n\n".join(parts)

    def _local_schema(self) -> dict[str, Any]:
        """One of two shapes: the local provider's tool-call schema, or the final answer."""
        from ..providers.local import tool_calls_schema

        answer = {
            "type": "object",
            "properties": {"answer": self.output_schema or {"type": "string"}},
            "required": ["answer"],
        }
        if not self.tools:
            return answer
        calls = tool_calls_schema([t.spec() for t in self.tools.values()])
        return {"oneOf": [calls, answer]}

    # -- running ------------------------------------------------------------

    def run(self, task: str, *, on_step: Callable[[AgentStep], None] | None = None) -> AgentResult:
        """Work on ``task`` until a final answer, a pause for approval, or a limit."""
        from ..gateway import new_id

        if not task.strip():
            raise InvalidRequestError("The task is empty.", field="task")
        result = AgentResult(
            status="done",
            output=None,
            steps=[],
            usage=Usage(),
            cost_usd=0.0,
            trace_id=new_id(),
            messages=[Message.system(self._system()), Message.user(task)],
            started=time.time(),
        )
        return self._loop(result, on_step)

    def resume(
        self,
        paused: AgentResult,
        approved: bool | dict[str, bool],
        *,
        on_step: Callable[[AgentStep], None] | None = None,
    ) -> AgentResult:
        """Continue a paused run. ``approved``: one answer for all pending calls, or one per
        call id. A refused call is reported to the model as refused."""
        if paused.status != "pending_approval":
            raise InvalidRequestError(
                "Only a run waiting for approval can be resumed.", field="run"
            )
        calls, paused.pending = paused.pending, []
        answers = {
            c.id: approved if isinstance(approved, bool) else bool(approved.get(c.id))
            for c in calls
        }
        self._execute(paused, calls, on_step, approvals=answers)
        paused.status = "done"
        return self._loop(paused, on_step)

    def _loop(
        self, result: AgentResult, on_step: Callable[[AgentStep], None] | None
    ) -> AgentResult:
        from ..gateway import TraceInfo

        began = time.monotonic()
        try:
            while True:
                if result.model_turns >= self.max_steps:
                    result.status = "max_steps"
                    result.output = f"Stopped after {self.max_steps} model turns without an answer."
                    return result
                if time.monotonic() - began > self.timeout:
                    result.status = "timeout"
                    result.output = f"Stopped after {self.timeout:g} s without an answer."
                    return result
                response = self._ask(result, TraceInfo(parent_id=result.trace_id))
                result.model_turns += 1
                result.usage = result.usage + response.usage
                result.cost_usd += response.cost_usd or 0.0
                calls, answer = self._read(response)
                step = AgentStep(kind="model", text=response.text)
                result.steps.append(step)
                if on_step is not None:
                    on_step(step)
                if not calls:
                    result.output = answer
                    result.status = "done"
                    return result
                repeats = [c for c in calls if _key(c) in result.done_calls]
                if len(repeats) == len(calls):
                    # The same calls again: their results are known. Ask for the answer, and
                    # (on grammar-constrained models) allow nothing else.
                    known = "; ".join(f"{c.name} gave {result.done_calls[_key(c)]}" for c in calls)
                    result.messages.append(
                        Message.user(
                            f"You already have these results: {known}. Give the final answer now."
                        )
                    )
                    result.force_answer = True
                    continue
                result.messages.append(Message.assistant("", tool_calls=calls))
                waiting = [
                    c
                    for c in calls
                    if c.name in self.tools and self.tools[c.name].requires_approval
                ]
                now = [c for c in calls if c not in waiting]
                self._execute(result, now, on_step)
                if waiting:
                    result.status = "pending_approval"
                    result.pending = waiting
                    result.output = None
                    return result
        finally:
            self._record(result)

    def _ask(self, result: AgentResult, trace: Any) -> ChatResponse:
        if self.local:
            return self.gateway.chat(
                result.messages
                if not _has_tool_turns(result.messages)
                else _flatten(result.messages),
                model=self.model,
                response_format=ResponseFormat(
                    type="json_schema", json_schema=self._local_schema()
                ),
                max_tokens=self.max_tokens,
                temperature=0.0,
                trace=trace,
            )
        options: dict[str, Any] = {"max_tokens": self.max_tokens}
        if self.tools:
            options["tools"] = [t.spec() for t in self.tools.values()]
        elif self.output_schema:
            options["response_format"] = ResponseFormat(
                type="json_schema", json_schema=self.output_schema
            )
        return self.gateway.chat(result.messages, model=self.model, trace=trace, **options)

    def _read(self, response: ChatResponse) -> tuple[list[ToolCall], Any]:
        if not self.local:
            if response.tool_calls:
                return response.tool_calls, None
            text = response.text
            if self.output_schema:
                try:
                    return [], json.loads(text)
                except json.JSONDecodeError:
                    return [], text
            return [], text
        try:
            data = json.loads(response.text)
        except json.JSONDecodeError:
            return [], response.text  # cut off at max_tokens: give back what there is
        if isinstance(data, dict) and "tool_calls" in data:
            return [
                ToolCall(
                    id=f"call_{i}_{int(time.time() * 1000) % 100000}",
                    name=c["name"],
                    arguments=c.get("arguments") or {},
                )
                for i, c in enumerate(data["tool_calls"])
            ], None
        return [], data.get("answer") if isinstance(data, dict) else data

    def _execute(
        self,
        result: AgentResult,
        calls: list[ToolCall],
        on_step: Callable[[AgentStep], None] | None,
        approvals: dict[str, bool] | None = None,
    ) -> None:
        """Run tool calls (in parallel), add their results to the conversation, trace each."""
        if not calls:
            return

        def one(call: ToolCall) -> ToolResult:
            tool = self.tools.get(call.name)
            if tool is None:
                names = ", ".join(self.tools) or "none"
                message = f"There is no tool named {call.name!r}. Tools: {names}."
                return ToolResult(False, message, error=message)
            if approvals is not None and not approvals.get(call.id, False):
                message = f"A person refused this call to {call.name}; do not try it again."
                return ToolResult(False, message, error=message)
            return tool.invoke(call.arguments)

        started = time.time()
        with ThreadPoolExecutor(max_workers=min(8, len(calls))) as pool:
            outcomes = list(pool.map(one, calls))
        guard = self.gateway.guard
        for call, outcome in zip(calls, outcomes, strict=True):
            decisions: list[dict[str, Any]] = []
            if guard is not None and outcome.content:
                # A tool result is data entering the prompt: check it before the model sees it.
                checked = guard.check(outcome.content, "tool")
                decisions = checked.to_list()
                if checked.blocked:
                    withheld = "; ".join(d["check"] for d in decisions if d["action"] == "block")
                    outcome = replace(
                        outcome,
                        content=f"[The result of {call.name} was withheld by a guardrail "
                        f"({withheld}). Do not rely on it.]",
                    )
                elif checked.text != outcome.content:
                    outcome = replace(outcome, content=checked.text)
            result.messages.append(Message.tool(call.id, outcome.content))
            result.done_calls[_key(call)] = outcome.content
            step = AgentStep(
                kind="tool",
                text=outcome.content,
                tool=call.name,
                arguments=call.arguments,
                ok=outcome.ok,
                seconds=outcome.seconds,
            )
            result.steps.append(step)
            if on_step is not None:
                on_step(step)
            self._trace_tool(result, call, outcome, started, decisions)

    def _trace_tool(
        self,
        result: AgentResult,
        call: ToolCall,
        outcome: ToolResult,
        started: float,
        decisions: list[dict[str, Any]] | None = None,
    ) -> None:
        from ..gateway import new_id
        from ..observe.store import TraceRow

        self.gateway.store.record(
            TraceRow(
                id=new_id(),
                parent_id=result.trace_id,
                kind="tool",
                started_at=started,
                requested_model=call.name,
                model=f"tool:{call.name}",
                stream=False,
                status="ok" if outcome.ok else "error",
                latency_ms=outcome.seconds * 1000,
                error=outcome.error,
                request={"tool": call.name, "arguments": call.arguments},
                response=outcome.content,
                guardrails=decisions or [],
            )
        )

    def _record(self, result: AgentResult) -> None:
        from ..observe.store import TraceRow

        row = self.gateway.store.get(result.trace_id)
        status = {"done": "ok", "pending_approval": "pending"}.get(result.status, "error")
        data = TraceRow(
            id=result.trace_id,
            kind="agent",
            started_at=result.started,
            requested_model=self.model or self.gateway.settings.default_model,
            model=self.gateway.resolve(self.model).id,
            stream=False,
            status=status,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            latency_ms=(time.time() - result.started) * 1000,
            cost_usd=result.cost_usd,
            error=None if status != "error" else result.status,
            request={"task": result.messages[1].text if len(result.messages) > 1 else ""},
            response=None if result.output is None else _jsonable_text(result.output),
        )
        if row is not None:
            self.gateway.store.replace(data)
        else:
            self.gateway.store.record(data)


def _jsonable_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _key(call: ToolCall) -> str:
    return call.name + json.dumps(call.arguments, sort_keys=True)


def _has_tool_turns(messages: list[Message]) -> bool:
    return any(m.role == "tool" or m.tool_calls for m in messages)


def _flatten(messages: list[Message]) -> list[Message]:
    """For chat templates without tool roles: tool calls and results as plain turns."""
    out: list[Message] = []
    names: dict[str, str] = {}
    for m in messages:
        if m.tool_calls:
            calls = [{"name": c.name, "arguments": c.arguments} for c in m.tool_calls]
            names.update({c.id: f"{c.name}({json.dumps(c.arguments)})" for c in m.tool_calls})
            out.append(Message.assistant(json.dumps({"tool_calls": calls})))
        elif m.role == "tool":
            call = names.get(m.tool_call_id or "", "the tool")
            text = (
                f"Result of {call}: {m.text}\nIf this completes the task, reply with "
                '{"answer": ...}; call another tool only if you still need something.'
            )
            if out and out[-1].role == "user":  # several results: one turn
                out[-1] = Message.user(out[-1].text + "\n" + text)
            else:
                out.append(Message.user(text))
        else:
            out.append(m)
    return out
