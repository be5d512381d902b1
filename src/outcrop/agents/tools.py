"""Tools from plain Python functions.

::

    @tool
    def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
        \"\"\"Current weather for a city.

        Args:
            city: The city name, e.g. Paris.
            unit: Celsius or Fahrenheit.
        \"\"\"

The JSON schema of the arguments comes from the type hints (pydantic), the
descriptions from the docstring. Arguments are validated before the call; a
bad call, a failing tool or a timeout becomes a tool result the model reads and
can recover from — never an exception that ends the run.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from ..errors import UserError
from ..types import ToolSpec

__all__ = ["Tool", "ToolResult", "tool"]

MAX_OUTPUT_CHARS = 8_000


@dataclass
class ToolResult:
    """What a tool call gave back to the model."""

    ok: bool
    content: str
    seconds: float = 0.0
    error: str | None = None


@dataclass
class Tool:
    """A function the model may call, with its argument schema and limits."""

    name: str
    description: str
    fn: Callable[..., Any]
    arguments: type[BaseModel]
    requires_approval: bool = False
    timeout: float = 30.0
    max_output_chars: int = MAX_OUTPUT_CHARS
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def parameters(self) -> dict[str, Any]:
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return schema

    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def invoke(self, arguments: dict[str, Any]) -> ToolResult:
        """Validate, run within the timeout, cap the output. Never raises."""
        started = time.perf_counter()
        try:
            parsed = self.arguments.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}"
                for e in exc.errors()
            )
            message = f"Invalid arguments for {self.name}: {problems}. Schema: {self.parameters}"
            return ToolResult(False, message, time.perf_counter() - started, error=message)
        values = {name: getattr(parsed, name) for name in self.arguments.model_fields}
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                if inspect.iscoroutinefunction(self.fn):
                    box["value"] = asyncio.run(
                        asyncio.wait_for(self.fn(**values), timeout=self.timeout)
                    )
                else:
                    box["value"] = self.fn(**values)
            except BaseException as exc:  # the tool's failure is the model's information
                box["error"] = exc

        # A daemon thread: a tool that overruns its timeout is abandoned, and its late
        # result is ignored; the run goes on.
        worker = threading.Thread(target=work, name=f"tool-{self.name}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        seconds = time.perf_counter() - started
        if worker.is_alive() or isinstance(box.get("error"), asyncio.TimeoutError):
            message = f"{self.name} did not finish within {self.timeout:g} s"
            return ToolResult(False, message, seconds, error=message)
        if "error" in box:
            failure = box["error"]
            message = f"{self.name} failed: {failure.__class__.__name__}: {failure}"
            return ToolResult(False, message, seconds, error=message)
        content = _text(box.get("value"))
        if len(content) > self.max_output_chars:
            content = (
                content[: self.max_output_chars]
                + f"\n[output cut at {self.max_output_chars} characters]"
            )
        return ToolResult(True, content, seconds)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        import json

        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _doc_parts(doc: str) -> tuple[str, dict[str, str]]:
    """The description (first paragraph) and per-argument descriptions (an Args: section)."""
    text = inspect.cleandoc(doc or "")
    description = text.split("\n\n", 1)[0].replace("\n", " ").strip()
    arguments: dict[str, str] = {}
    match = re.search(r"^(Args|Arguments|Parameters):\s*$(.*?)(^\S|\Z)", text, re.M | re.S)
    if match:
        for line in match.group(2).splitlines():
            found = re.match(r"^\s+(\w+)(?:\s*\([^)]*\))?:\s*(.+)$", line)
            if found:
                arguments[found.group(1)] = found.group(2).strip()
    return description, arguments


def _make(
    fn: Callable[..., Any],
    *,
    name: str | None,
    description: str | None,
    requires_approval: bool,
    timeout: float,
    max_output_chars: int,
) -> Tool:
    tool_name = name or fn.__name__
    if not re.match(r"^[A-Za-z0-9_-]{1,64}$", tool_name):
        raise UserError(f"Tool name {tool_name!r} must be letters, digits, '_' or '-'.")
    summary, arg_docs = _doc_parts(fn.__doc__ or "")
    try:
        hints = get_type_hints(fn)
    except Exception as exc:  # a hint that does not resolve
        raise UserError(f"Tool {tool_name}: its type hints cannot be read ({exc}).") from None
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise UserError(
                f"Tool {tool_name}: *{param.name} / **{param.name} cannot be described to a "
                "model; give each argument a name and a type."
            )
        if param.name not in hints:
            raise UserError(
                f"Tool {tool_name}: parameter {param.name!r} has no type hint; the model needs "
                "one to know what to send (e.g. `city: str`)."
            )
        default = ... if param.default is param.empty else param.default
        from pydantic import Field

        fields[param.name] = (
            hints[param.name],
            Field(default, description=arg_docs.get(param.name)),
        )
    try:
        model = create_model(
            f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
        model.model_json_schema()
    except Exception as exc:  # pydantic cannot describe some types (callables, sockets, …)
        raise UserError(
            f"Tool {tool_name}: its parameters cannot be turned into a JSON schema "
            f"({exc.__class__.__name__}: {exc}). Use str, int, float, bool, lists, dicts, "
            "Literal, Enum or pydantic models."
        ) from None
    return Tool(
        name=tool_name,
        description=description or summary or tool_name,
        fn=fn,
        arguments=model,
        requires_approval=requires_approval,
        timeout=timeout,
        max_output_chars=max_output_chars,
    )


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    timeout: float = 30.0,
    max_output_chars: int = MAX_OUTPUT_CHARS,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    timeout: float = 30.0,
    max_output_chars: int = MAX_OUTPUT_CHARS,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a tool of a function: ``@tool`` or ``@tool(requires_approval=True, timeout=5)``.

    Unsupported parameters (no type hint, ``*args``, types without a JSON schema)
    are refused here, with the reason.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        return _make(
            f,
            name=name,
            description=description,
            requires_approval=requires_approval,
            timeout=timeout,
            max_output_chars=max_output_chars,
        )

    return wrap(fn) if fn is not None else wrap
