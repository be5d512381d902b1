"""Built-in tools: a safe calculator, the current date and time, knowledge-base search."""

from __future__ import annotations

import ast
import datetime as dt
import math
import operator
import re
from typing import Any

from ..errors import UserError
from .tools import Tool, tool

__all__ = ["calculate", "calculator", "current_datetime", "kb_search_tool"]

_BINARY: dict[type[ast.operator], Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Any] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Any] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "log": math.log,
    "exp": math.exp,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def _normalise(expression: str) -> str:
    """Everyday arithmetic to Python's: 2,340 → 2340; 17.5% of 2340 → (17.5/100)*2340."""
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("^", "**")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s*%\s*of\s*", r"(\1/100)*", text, flags=re.I)
    text = re.sub(r"(\d+(?:\.\d+)?)\s*%(?!\s*\d)", r"(\1/100)", text)
    return text


def calculate(expression: str) -> float | int:
    """Evaluate arithmetic with a parser that allows numbers, + - * / // % **, brackets,
    pi, e and sqrt/abs/round/min/max/log/exp — never Python's eval."""
    try:
        tree = ast.parse(_normalise(expression), mode="eval")
    except SyntaxError:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from None

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.Name) and node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 1000 or abs(left) > 1e100):
                raise ValueError("exponent too large")
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](walk(node.operand))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS
            and not node.keywords
        ):
            return _FUNCTIONS[node.func.id](*[walk(a) for a in node.args])
        raise ValueError(f"not allowed in a calculation: {ast.dump(node)[:60]}")

    value = walk(tree)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    if isinstance(value, float):
        return round(value, 10)
    return int(value)


@tool(name="calculator")
def calculator(expression: str) -> str:
    """Do arithmetic exactly. Use it for every calculation.

    Args:
        expression: An arithmetic expression, e.g. "0.175 * 2340" or "17.5% of 2,340".
    """
    return str(calculate(expression))


@tool(name="datetime")
def current_datetime(timezone: str = "UTC") -> str:
    """The current date and time.

    Args:
        timezone: An IANA time zone name, e.g. Europe/Paris (default UTC).
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}; use a name like Europe/Paris") from None
    now = dt.datetime.now(zone)
    return now.strftime("%A %Y-%m-%d %H:%M:%S %Z")


def kb_search_tool(name: str, *, k: int = 5, gateway: Any = None) -> Tool:
    """A tool that searches the knowledge base ``name`` (checked now, opened on use)."""
    from ..rag import KnowledgeBase, kb_names

    if name not in kb_names():
        KnowledgeBase.open(name)  # raises the error that suggests close names
        raise UserError(f"No knowledge base {name!r}")

    def search(query: str) -> str:
        base = KnowledgeBase.open(name, gateway=gateway)
        try:
            hits = base.search(query, k=k)
        finally:
            base.close()
        if not hits:
            return "No passages found."
        return "\n\n".join(
            f"[{n}] ({h.chunk.source}) {h.chunk.text}" for n, h in enumerate(hits, 1)
        )

    search.__doc__ = (
        f"Search the knowledge base {name!r} for passages about a query.\n\n"
        "Args:\n    query: What to look for, in a few words.\n"
    )
    return tool(name=f"search_{name.replace('-', '_')}")(search)
