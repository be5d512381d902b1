"""``outcrop prompts``: list, show, render, lint, run, compare, promote and roll back prompts."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import textwrap
import time
from pathlib import Path
from typing import Any

import click

from ..errors import InvalidRequestError, OutcropError
from ..prompts import PromptRegistry, PromptVersion
from ..prompts.lint import lint as run_lint
from ._common import Ctx, DefaultGroup, echo_json, parse_options, pass_ctx


def _vars(pairs: tuple[str, ...]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InvalidRequestError(
                f"--var takes NAME=VALUE (got {pair!r}), e.g. --var question='What is RAG?'",
                field="var",
            )
        values[name.strip()] = value
    return values


def _registry(obj: Ctx) -> PromptRegistry:
    return PromptRegistry(obj.gateway.store)


var_option = click.option(
    "--var", "variables", multiple=True, metavar="NAME=VALUE", help="A variable, repeatable."
)


@click.group(cls=DefaultGroup)
def prompts() -> None:
    """Prompts in prompts/ of your project: versions, labels, lint, render, run, compare.

    A prompt is referred to as NAME (its newest version), NAME@3 (version 3) or
    NAME@production (what a label points at). Every change to a prompt file is
    recorded as a new version the next time any prompts command runs.
    """


@prompts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def list_(obj: Ctx, as_json: bool) -> None:
    """Every prompt, its newest version and its labels."""
    registry = _registry(obj)
    registry.sync()
    rows: list[dict[str, Any]] = []
    for name in registry.names():
        versions = registry.versions(name)
        rows.append(
            {
                "name": name,
                "version": versions[-1].version if versions else None,
                "labels": registry.labels(name),
                "description": versions[-1].prompt.description if versions else "",
            }
        )
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("No prompts yet. Write one in prompts/NAME.toml (see docs/prompts.md).")
        return
    for row in rows:
        labels = ", ".join(f"{k}→{v}" for k, v in row["labels"].items())
        click.echo(
            f"{row['name']}@{row['version']}"
            + (f"  [{labels}]" if labels else "")
            + (f"  {row['description']}" if row["description"] else "")
        )


@prompts.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def show(obj: Ctx, ref: str, as_json: bool) -> None:
    """A prompt version's parts, and the history of the prompt."""
    registry = _registry(obj)
    version = registry.resolve(ref)
    history = registry.versions(version.name)
    labels = registry.labels(version.name)
    if as_json:
        echo_json(
            {
                "name": version.name,
                "version": version.version,
                "hash": version.hash,
                "prompt": version.prompt.model_dump(
                    mode="json", by_alias=True, exclude_defaults=True
                ),
                "labels": labels,
                "versions": [
                    {
                        "version": v.version,
                        "hash": v.hash[:12],
                        "created_at": v.created_at,
                        "author": v.author,
                        "note": v.note,
                    }
                    for v in history
                ],
            }
        )
        return
    click.secho(f"{version.ref}  (sha256 {version.hash[:12]})", bold=True)
    data = version.prompt.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    for key, value in data.items():
        if key == "name":
            continue
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        click.echo(f"  {key}: {shown}")
    click.echo("versions:")
    for v in history:
        marks = [label for label, n in labels.items() if n == v.version]
        when = dt.datetime.fromtimestamp(v.created_at).strftime("%Y-%m-%d %H:%M")
        click.echo(
            f"  {v.version:>3}  {when}  {v.author or '-'}  {v.note or ''}"
            + (f"  [{', '.join(marks)}]" if marks else "")
        )


def _render(obj: Ctx, version: PromptVersion, values: dict[str, str], model: str | None) -> Any:
    request = version.prompt.request(values, model=model)
    return request, obj.gateway.render(request)


@prompts.command("render")
@click.argument("ref")
@var_option
@click.option("-m", "--model", help="The model to render for (default: the prompt's, else yours).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def render(
    obj: Ctx, ref: str, variables: tuple[str, ...], model: str | None, as_json: bool
) -> None:
    """Show the exact messages a model receives, with token counts.

    \b
    Example:
      outcrop prompts render support --var question="Where is my order?"
    """
    version = _registry(obj).resolve(ref)
    _, rendered = _render(obj, version, _vars(variables), model)
    if as_json:
        echo_json(
            {
                "prompt": version.ref,
                "model": rendered.model,
                "messages": [
                    m.model_dump(mode="json", exclude_defaults=True) for m in rendered.messages
                ],
                "message_tokens": rendered.message_tokens,
                "text": rendered.text,
                "tokens": rendered.tokens,
                "estimated": rendered.estimated,
                "context_window": rendered.context_window,
            }
        )
        return
    for message, tokens in zip(rendered.messages, rendered.message_tokens, strict=True):
        click.secho(f"── {message.role} ({tokens} tokens) ──", fg="cyan")
        click.echo(message.text)
    total = f"{'~' if rendered.estimated else ''}{rendered.tokens} tokens"
    if rendered.context_window:
        total += f", {rendered.tokens / rendered.context_window:.1%} of {rendered.context_window}"
    click.secho(f"── {version.ref} on {rendered.model}: {total} ──", fg="green")
    if rendered.text is not None:
        click.secho("As the model reads it (its chat template applied):", fg="cyan")
        click.echo(rendered.text)


@prompts.command("lint")
@click.argument("ref")
@var_option
@click.option("-m", "--model", help="The model whose context window to check against.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def lint_cmd(
    obj: Ctx, ref: str, variables: tuple[str, ...], model: str | None, as_json: bool
) -> None:
    """Check a prompt against prompt-engineering practice: a scored checklist.

    Exits 1 when a check fails, so it can guard a CI step.

    \b
    Example:
      outcrop prompts lint prompts/support.toml --json
    """
    version = _registry(obj).resolve(ref)
    tokens = window = None
    values = _vars(variables)
    prompt = version.prompt
    defaults = {k for k, v in prompt.variables.items() if v.default is not None}
    for name in sorted(prompt.used_variables() - set(values) - defaults):
        values[name] = f"<{name}>"  # count with a placeholder where no value was given
    try:
        _, rendered = _render(obj, version, values, model)
        tokens, window = rendered.tokens, rendered.context_window
    except OutcropError as exc:
        if not as_json:
            click.secho(f"(cannot render to count tokens: {exc})", fg="yellow", err=True)
    report = run_lint(version.prompt, tokens=tokens, context_window=window)
    report.prompt = version.ref
    if as_json:
        echo_json(report.to_dict())
    else:
        click.secho(f"{version.ref}: {report.score}/100", bold=True)
        for check in report.checks:
            mark = click.style("✓", fg="green") if check.passed else click.style("✗", fg="red")
            click.echo(f" {mark} {check.title} — {check.reason}")
            if not check.passed and check.suggestion:
                click.echo(f"     → {check.suggestion}")
    if report.failed:
        raise SystemExit(1)


@prompts.command("run")
@click.argument("ref")
@var_option
@click.option("-m", "--model", help="Model id or alias.")
@click.option("-o", "--option", "options", type=(str, str), multiple=True, metavar="KEY VALUE")
@click.option("--json", "as_json", is_flag=True, help="Print the response as JSON.")
@pass_ctx
def run(
    obj: Ctx,
    ref: str,
    variables: tuple[str, ...],
    model: str | None,
    options: tuple[tuple[str, str], ...],
    as_json: bool,
) -> None:
    """Run a prompt version on a model; the trace records NAME@VERSION.

    \b
    Example:
      outcrop prompts run support@production --var question="Where is my order?"
    """
    from ..gateway import TraceInfo
    from .prompt import _print_stream

    version = _registry(obj).resolve(ref)
    request = version.prompt.request(_vars(variables), model=model, **parse_options(options))
    trace = TraceInfo(prompt_name=version.name, prompt_version=version.version)
    if as_json:
        response = obj.gateway.chat(request, trace=trace)
        echo_json({"prompt": version.ref, **response.model_dump(mode="json")})
        return
    _print_stream(obj.gateway.stream(request, trace=trace))


def _inputs(variables: tuple[str, ...], inputs: Path | None) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    if inputs is not None:
        try:
            text = inputs.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InvalidRequestError(f"{inputs} is not UTF-8 text", field="inputs") from None
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidRequestError(
                    f"{inputs}:{number}: not JSON ({exc.msg}); each line is an object of variables",
                    field="inputs",
                ) from None
            if not isinstance(row, dict):
                raise InvalidRequestError(
                    f"{inputs}:{number}: each line is an object of variables", field="inputs"
                )
            rows.append({k: str(v) for k, v in row.items()})
    if variables or not rows:
        rows.append(_vars(variables))
    return rows


@prompts.command("compare")
@click.argument("refs", nargs=-1, required=True)
@click.option("-m", "--model", "models", multiple=True, help="A model to compare; repeatable.")
@var_option
@click.option(
    "--inputs",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL file: one object of variables per line.",
)
@click.option("-o", "--option", "options", type=(str, str), multiple=True, metavar="KEY VALUE")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def compare(
    obj: Ctx,
    refs: tuple[str, ...],
    models: tuple[str, ...],
    variables: tuple[str, ...],
    inputs: Path | None,
    options: tuple[tuple[str, str], ...],
    as_json: bool,
) -> None:
    """Run prompt versions and/or models on the same inputs, side by side.

    \b
    Examples:
      outcrop prompts compare support@1 support@2 --var question="Where is my order?"
      outcrop prompts compare support -m local:smollm2-135m -m local:qwen2.5-coder-0.5b \\
          --inputs questions.jsonl
    """
    from ..gateway import TraceInfo

    registry = _registry(obj)
    versions = [registry.resolve(r) for r in refs]
    model_list: list[str | None] = list(models) or [None]
    columns = [(v, m) for v in versions for m in model_list]
    if len(columns) < 2:
        raise InvalidRequestError(
            "Compare needs two or more columns: give two prompt versions, or one prompt and "
            "two -m models.",
            field="refs",
        )
    opts = parse_options(options)
    results: list[dict[str, Any]] = []
    for values in _inputs(variables, inputs):
        row = []
        for version, model in columns:
            request = version.prompt.request(values, model=model, **opts)
            started = time.perf_counter()
            response = obj.gateway.chat(
                request, trace=TraceInfo(prompt_name=version.name, prompt_version=version.version)
            )
            row.append(
                {
                    "prompt": version.ref,
                    "model": response.model,
                    "text": response.text,
                    "input_tokens": response.usage.input_tokens,
                    "output_tokens": response.usage.output_tokens,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 1),
                    "cost_usd": response.cost_usd,
                    "trace_id": response.id,
                }
            )
        results.append({"variables": values, "results": row})
    if as_json:
        echo_json(results)
        return
    width = max(
        24, (shutil.get_terminal_size((120, 20)).columns - 3 * len(columns)) // len(columns)
    )
    for item in results:
        if item["variables"]:
            click.secho(
                "input: " + ", ".join(f"{k}={v!r}" for k, v in item["variables"].items()), bold=True
            )
        headers = [f"{r['prompt']} on {r['model']}" for r in item["results"]]
        stats = [
            f"{r['output_tokens']} tokens out, {r['latency_ms']:.0f} ms" for r in item["results"]
        ]
        cells = [textwrap.wrap(r["text"], width) or [""] for r in item["results"]]
        _table_row([h[:width] for h in headers], width, bold=True)
        _table_row(stats, width)
        click.echo(" | ".join("-" * width for _ in columns))
        for i in range(max(len(c) for c in cells)):
            _table_row([c[i] if i < len(c) else "" for c in cells], width)
        click.echo()


def _table_row(cells: list[str], width: int, bold: bool = False) -> None:
    click.secho(" | ".join(c.ljust(width) for c in cells).rstrip(), bold=bold)


@prompts.command("promote")
@click.argument("name")
@click.argument("version")
@click.option("--label", default="production", show_default=True)
@pass_ctx
def promote(obj: Ctx, name: str, version: str, label: str) -> None:
    """Point a label at a version.

    \b
    Example:
      outcrop prompts promote support 3 --label production
    """
    registry = _registry(obj)
    registry.sync()
    previous = registry.promote(name, version, label)
    target = registry.get(f"{name}@{version}")
    was = f" (was {previous})" if previous is not None else ""
    click.echo(f"{name}@{label} → version {target.version}{was}")


@prompts.command("rollback")
@click.argument("name")
@click.option("--label", default="production", show_default=True)
@pass_ctx
def rollback(obj: Ctx, name: str, label: str) -> None:
    """Move a label back to the version it pointed at before."""
    registry = _registry(obj)
    version = registry.rollback(name, label)
    click.echo(f"{name}@{label} → version {version}")
