"""``outcrop agent run``: give a model tools and a task, and watch each step."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import InvalidRequestError, UserError
from ._common import Ctx, DefaultGroup, echo_json, pass_ctx


def _load_module_tools(path: Path) -> list[Any]:
    from ..agents import Tool

    if not path.is_file():
        raise UserError(f"--tools-module {path} does not exist; give the path of a .py file.")
    spec = importlib.util.spec_from_file_location(f"outcrop_user_tools_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UserError(f"{path} cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path} failed to import: {exc.__class__.__name__}: {exc}") from None
    found = [v for v in vars(module).values() if isinstance(v, Tool)]
    if not found:
        raise UserError(f"{path} defines no tools; decorate functions with @outcrop.agents.tool.")
    return found


def _tools(names: str, modules: tuple[Path, ...], obj: Ctx) -> list[Any]:
    from ..agents import calculator, current_datetime, kb_search_tool

    builtin = {"calculator": calculator, "datetime": current_datetime}
    out: list[Any] = []
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        if name.startswith("kb:"):
            out.append(kb_search_tool(name[3:], gateway=obj.gateway))
        elif name in builtin:
            out.append(builtin[name])
        else:
            raise InvalidRequestError(
                f"Unknown tool {name!r}; built-in tools: calculator, datetime, kb:NAME "
                "(or --tools-module FILE.py for your own)",
                field="tools",
            )
    for module in modules:
        out.extend(_load_module_tools(module))
    return out


class _RunByDefault(DefaultGroup):
    default_command = "run"


@click.group(cls=_RunByDefault)
def agent() -> None:
    """Agents: a model that calls tools (default: run)."""


@agent.command("run")
@click.argument("task")
@click.option(
    "--tools",
    "tool_names",
    default="calculator,datetime",
    show_default=True,
    help="Comma-separated: calculator, datetime, kb:NAME.",
)
@click.option(
    "--tools-module",
    "modules",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A .py file whose @tool functions the agent may use; repeatable.",
)
@click.option("-m", "--model", help="Model id or alias.")
@click.option("-s", "--instructions", help="System instructions for the agent.")
@click.option("--max-steps", default=8, show_default=True, type=click.IntRange(1, 100))
@click.option("--timeout", default=300.0, show_default=True, type=click.FloatRange(1, 86400))
@click.option("--yes", "auto_approve", is_flag=True, help="Approve every tool call that asks.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def run(
    obj: Ctx,
    task: str,
    tool_names: str,
    modules: tuple[Path, ...],
    model: str | None,
    instructions: str | None,
    max_steps: int,
    timeout: float,
    auto_approve: bool,
    as_json: bool,
) -> None:
    """Work on TASK with tools, printing each step.

    \b
    Examples:
      outcrop agent run "What is 17.5% of 2,340?" -m local:qwen2.5-coder-0.5b
      outcrop agent run "What does the handbook say about refunds?" --tools kb:handbook
      outcrop agent run "Email Ada the total" --tools-module my_tools.py
    """
    from ..agents import Agent, AgentStep

    tools = _tools(tool_names, modules, obj)
    runner = Agent(
        model, tools, instructions, max_steps=max_steps, timeout=timeout, gateway=obj.gateway
    )

    def show(step: AgentStep) -> None:
        if as_json:
            return
        if step.kind == "tool":
            mark = "←" if step.ok else "✗"
            click.secho(f"→ {step.tool}({step.arguments})", fg="cyan")
            click.secho(f"{mark} {step.text[:500]}", fg="green" if step.ok else "red")

    result = runner.run(task, on_step=show)
    while result.status == "pending_approval":
        approvals = {}
        for call in result.pending:
            if auto_approve:
                approvals[call.id] = True
            elif sys.stdin is not None and sys.stdin.isatty():
                approvals[call.id] = click.confirm(f"Allow {call.name}({call.arguments})?")
            else:
                click.secho(
                    f"{call.name} needs approval; refused (no terminal to ask, and no --yes).",
                    fg="yellow",
                    err=True,
                )
                approvals[call.id] = False
        result = runner.resume(result, approvals, on_step=show)
    if as_json:
        echo_json(
            {
                "status": result.status,
                "output": result.output,
                "trace_id": result.trace_id,
                "usage": result.usage.model_dump(),
                "cost_usd": result.cost_usd,
                "steps": [s.__dict__ for s in result.steps],
            }
        )
        return
    if result.status != "done":
        click.secho(f"[{result.status}] {result.output}", fg="yellow", err=True)
        raise SystemExit(1)
    click.echo(str(result.output))
