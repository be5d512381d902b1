"""``outcrop logs`` (every call, as recorded) and ``outcrop usage`` (totals by model and day)."""

from __future__ import annotations

import datetime as dt

import click

from ..errors import InvalidRequestError
from ._common import Ctx, DefaultGroup, echo_json, pass_ctx


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


@click.group(cls=DefaultGroup)
def logs() -> None:
    """Every model call, with tokens, latency, cost and status (default: list)."""


@logs.command("list")
@click.option("-n", "--count", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("-m", "--model", help="Only calls to this model.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def list_logs(obj: Ctx, count: int, model: str | None, as_json: bool) -> None:
    """The most recent calls, newest first.

    \b
    Example:
      outcrop logs list -n 5
      outcrop logs show 01a2f3        (an id or its first characters)
    """
    rows = obj.gateway.store.recent(limit=count, model=model)
    if as_json:
        echo_json([r.to_dict() for r in rows])
        return
    if not rows:
        click.echo('No calls yet. Try: outcrop "What is a token?"')
        return
    click.echo(
        f"{'id':<14} {'when':<19} {'model':<26} {'status':<9} {'in':>5} {'out':>5} "
        f"{'latency':>10} {'ttft':>9}"
    )
    for r in rows:
        color = {"ok": None, "error": "red", "cancelled": "yellow"}.get(r.status)
        click.secho(
            f"{r.id[:14]:<14} {_when(r.started_at):<19} {(r.model or r.requested_model)[:26]:<26} "
            f"{r.status:<9} {r.input_tokens:>5} {r.output_tokens:>5} {_ms(r.latency_ms):>10} "
            f"{_ms(r.ttft_ms):>9}",
            fg=color,
        )


@logs.command("show")
@click.argument("trace_id")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def show_log(obj: Ctx, trace_id: str, as_json: bool) -> None:
    """One call in full: the request, the answer, usage, timing and attempts."""
    row = obj.gateway.store.get(trace_id)
    if row is None:
        raise InvalidRequestError(
            f"No call with id {trace_id!r} (or more than one starts with it); "
            "see `outcrop logs list` for ids.",
            field="trace_id",
        )
    if as_json:
        echo_json(row.to_dict())
        return
    click.echo(f"id:        {row.id}")
    click.echo(f"when:      {_when(row.started_at)}")
    click.echo(f"model:     {row.model or '-'} (asked for {row.requested_model})")
    click.echo(f"status:    {row.status}" + (f" — {row.error}" if row.error else ""))
    click.echo(
        f"finish:    {row.finish_reason or '-'}    streamed: {row.stream}    kind: {row.kind}"
    )
    if row.prompt_name:
        version = f"@{row.prompt_version}" if row.prompt_version is not None else ""
        click.echo(f"prompt:    {row.prompt_name}{version}")
    if row.parent_id:
        click.echo(f"parent:    {row.parent_id}")
    click.echo(
        f"tokens:    {row.input_tokens} in, {row.output_tokens} out    "
        f"cost: ${row.cost_usd or 0:.6f}"
    )
    click.echo(f"latency:   {_ms(row.latency_ms)}    time to first token: {_ms(row.ttft_ms)}")
    if len(row.attempts) > 1:
        click.echo("attempts:")
        for a in row.attempts:
            click.echo(f"  {a['model']}: {a['error'] or 'ok'}")
    click.echo("request:")
    for message in row.request.get("messages", []):
        text = "".join(p.get("text", "") for p in message.get("content", []))
        click.echo(f"  [{message['role']}] {text}")
    options = {k: v for k, v in row.request.items() if k not in ("messages", "model")}
    if options:
        click.echo(f"  options: {options}")
    click.echo("response:")
    click.echo(f"  {row.response or ''}")


@click.command()
@click.option("--days", type=click.IntRange(1, 3650), help="Only the last N days.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def usage(obj: Ctx, days: int | None, as_json: bool) -> None:
    """Token, call and cost totals by day and model.

    \b
    Example:
      outcrop usage --days 7
    """
    rows = obj.gateway.store.usage(days=days)
    if as_json:
        echo_json([r.__dict__ for r in rows])
        return
    if not rows:
        click.echo("No calls recorded yet.")
        return
    click.echo(
        f"{'day':<10}  {'model':<28} {'calls':>6} {'errors':>6} {'in':>9} {'out':>9} {'cost':>10}"
    )
    for r in rows:
        click.echo(
            f"{r.day:<10}  {r.model[:28]:<28} {r.calls:>6} {r.errors:>6} {r.input_tokens:>9,} "
            f"{r.output_tokens:>9,} {'$' + format(r.cost_usd, '.4f'):>10}"
        )
    total_in = sum(r.input_tokens for r in rows)
    total_out = sum(r.output_tokens for r in rows)
    total_cost = sum(r.cost_usd for r in rows)
    click.echo(
        f"{'total':<10}  {'':<28} {sum(r.calls for r in rows):>6} "
        f"{sum(r.errors for r in rows):>6} {total_in:>9,} {total_out:>9,} "
        f"{'$' + format(total_cost, '.4f'):>10}"
    )


@logs.command("path")
@pass_ctx
def logs_path(obj: Ctx) -> None:
    """Print where the log database lives: the SQLite file, or the PostgreSQL URL (no password)."""
    store = obj.gateway.store
    click.echo(str(store.path) if store.path is not None else store.url)
