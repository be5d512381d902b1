"""Agents: tools from Python functions and a bounded, traced loop that calls them."""

from .agent import Agent, AgentResult, AgentStep
from .builtin import calculate, calculator, current_datetime, kb_search_tool
from .tools import Tool, ToolResult, tool

__all__ = [
    "Agent",
    "AgentResult",
    "AgentStep",
    "Tool",
    "ToolResult",
    "calculate",
    "calculator",
    "current_datetime",
    "kb_search_tool",
    "tool",
]
