"""Server settings from outcrop.toml: agents the server runs by name."""

from __future__ import annotations

from typing import Any

from ..config import Settings, load_toml
from ..errors import ConfigError

__all__ = ["agents_from_settings"]

_TOOLS = {"calculator", "datetime"}


def agents_from_settings(settings: Settings) -> dict[str, dict[str, Any]]:
    """``[agents.NAME]`` tables: model, tools (calculator, datetime, kb:NAME), instructions,
    max_steps. Checked now, so a typo stops the server from starting, not a request."""
    if settings.path is None:
        return {}
    data = load_toml(settings.path.read_text(encoding="utf-8"), settings.path)
    agents = data.get("agents", {})
    if not isinstance(agents, dict):
        raise ConfigError("[agents] holds tables: [agents.NAME]", path=settings.path)
    out: dict[str, dict[str, Any]] = {}
    for name, spec in agents.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"[agents.{name}] must be a table", path=settings.path)
        unknown = set(spec) - {"model", "tools", "instructions", "max_steps"}
        if unknown:
            raise ConfigError(
                f"[agents.{name}]: unknown field {sorted(unknown)[0]!r} (fields: model, tools, "
                "instructions, max_steps)",
                path=settings.path,
            )
        tools = spec.get("tools", [])
        for tool in tools:
            if tool not in _TOOLS and not str(tool).startswith("kb:"):
                raise ConfigError(
                    f"[agents.{name}]: unknown tool {tool!r} (tools: calculator, datetime, "
                    "kb:NAME)",
                    path=settings.path,
                )
        out[name] = dict(spec)
    return out
