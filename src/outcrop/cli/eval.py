"""``outcrop eval``: run suites, compare runs with paired statistics, reports, the CI gate."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from ._common import Ctx, DefaultGroup, echo_json, pass_ctx
from .eval_baseline import baseline


@click.group("eval", cls=DefaultGroup)
def eval_() -> None:
    """Evaluate prompts and models: suites, metrics, judges, comparisons (default: list)."""


class _Bar:
    """A one-line progress bar on stderr when it is a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.errors = 0

    def __call__(self, done: int, total: int, row: Any) -> None:
        self.errors += row.status != "ok"
        if not self.tty:
            return
        width = 28
        filled = int(width * done / max(total, 1))
        elapsed = time.monotonic() - self.t0
        eta = elapsed / done * (total - done) if done else 0.0
        bar = "█" * filled + "·" * (width - filled)
        extra = f" · {self.errors} errors" if self.errors else ""
        sys.stderr.write(f"\r{bar} {done}/{total}{extra} · eta {eta:4.0f}s ")
        sys.stderr.flush()
        if done == total:
            sys.stderr.write("\n")


@eval_.command("run")
@click.argument("suite_file", type=click.Path(path_type=Path))
@click.option(
    "-m", "--model", "models", multiple=True, help="Models to run (instead of the suite's)."
)
@click.option("--limit", type=click.IntRange(1), help="Run the first N cases only.")
@click.option(
    "--repeats", type=click.IntRange(1, 100), help="Answers per case (instead of the suite's)."
)
@click.option("--concurrency", type=click.IntRange(1, 64), help="Calls at once per remote model.")
@click.option("--no-cache", is_flag=True, help="Call the models even for calls answered before.")
@click.option("--resume", "resume", metavar="RUN", help="Finish a stopped run of this suite.")
@click.option(
    "--gate", is_flag=True, help="Exit 1 on a metric under its threshold or a regression."
)
@click.option(
    "--baseline", metavar="RUN", help="With --gate: fail on significant regressions against RUN."
)
@click.option("--html", "html", type=click.Path(path_type=Path), help="Write the HTML report here.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_ctx
def run(
    obj: Ctx,
    suite_file: Path,
    models: tuple[str, ...],
    limit: int | None,
    repeats: int | None,
    concurrency: int | None,
    no_cache: bool,
    resume: str | None,
    gate: bool,
    baseline: str | None,
    html: Path | None,
    as_json: bool,
) -> None:
    """Run a suite: every case × prompt × model, scored and stored.

    \b
    Examples:
      outcrop eval run evals/capitals.yaml
      outcrop eval run evals/capitals.yaml -m local:qwen2.5-coder-0.5b --repeats 3
      outcrop eval run evals/capitals.yaml --gate --baseline 3f2a9c1e
      outcrop eval run evals/capitals.yaml --resume 3f2a9c1e     after Ctrl-C or a crash
    """
    from ..errors import UserError
    from ..evals.runner import Runner, load_run
    from ..evals.suite import load_suite
    from ..evals.summary import gate as gate_fn
    from ..evals.summary import summarize, summary_table

    if baseline and not gate:
        raise UserError("--baseline goes with --gate (compare any two runs with eval compare)")
    suite = load_suite(suite_file)
    gateway = obj.gateway
    base_run = load_run(gateway, baseline) if baseline else None
    runner = Runner(
        suite,
        gateway=gateway,
        models=models or None,
        limit=limit,
        repeats=repeats,
        cache=not no_cache,
        concurrency=concurrency,
        progress=_Bar(),
    )
    jobs = runner.plan()
    if not as_json:
        click.echo(
            f"suite {suite.name}: {len(jobs)} calls "
            f"({len({j.case.id for j in jobs})} cases × {len({j.prompt_ref for j in jobs})} "
            f"prompts × {len(runner.models)} models × {runner.repeats} repeats)",
            err=True,
        )
    try:
        result = runner.run(resume=resume)
    except KeyboardInterrupt:
        rid = (runner.run_id or "RUN")[:8]
        click.echo(
            f"\nStopped. Finished cases are stored; resume with: outcrop eval run {suite_file} "
            f"--resume {rid}",
            err=True,
        )
        raise SystemExit(130) from None
    if html is not None:
        from ..evals.report import write_html

        write_html(result, html)
    failures = gate_fn(result, base_run) if gate else []
    if as_json:
        echo_json(
            {
                "run": result.id,
                "suite": result.name,
                "status": result.status,
                "cells": [c.to_dict() for c in summarize(result)],
                "gate": {"passed": not failures, "failures": failures} if gate else None,
            }
        )
    else:
        click.echo(summary_table(result))
        click.echo(f"\nrun {result.id}  ·  outcrop eval report {result.id[:8]} --html report.html")
        if html is not None:
            click.echo(f"report: {html}")
        if gate:
            click.echo("gate: passed" if not failures else "gate: FAILED")
            for f in failures:
                click.echo(f"  - {f}")
    if failures:
        raise SystemExit(1)


@eval_.command("list")
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(1))
@click.option("--suite", help="Only runs of this suite.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def list_(obj: Ctx, limit: int, suite: str | None, as_json: bool) -> None:
    """The latest eval runs."""
    runs = obj.gateway.store.eval_runs(limit=limit, suite=suite)
    if as_json:
        echo_json(runs)
        return
    if not runs:
        click.echo("No eval runs yet. Run one: outcrop eval run SUITE.yaml")
        return
    for r in runs:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"]))
        click.echo(
            f"{r['id'][:8]}  {when}  {r['suite']:<24} {r['status']:<12} {r['done']}/{r['total']}"
        )


@eval_.command("report")
@click.argument("run_id", metavar="RUN")
@click.option("--html", "html", type=click.Path(path_type=Path), help="Write the HTML report here.")
@click.option("--json", "as_json", is_flag=True, help="The summary and every row as JSON.")
@pass_ctx
def report(obj: Ctx, run_id: str, html: Path | None, as_json: bool) -> None:
    """Show a run: the matrix of metrics; --html for the full report with drill-down."""
    from ..evals.runner import load_run
    from ..evals.summary import summarize, summary_table

    result = load_run(obj.gateway, run_id)
    if html is not None:
        from ..evals.report import write_html

        write_html(result, html)
    if as_json:
        echo_json(
            {
                "run": result.id,
                "suite": result.name,
                "status": result.status,
                "cells": [c.to_dict() for c in summarize(result)],
                "rows": [r.__dict__ for r in result.rows],
                "unreadable": result.corrupt,
            }
        )
        return
    click.echo(summary_table(result))
    if html is not None:
        click.echo(f"\nreport: {html}")


@eval_.command("compare")
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@click.option("--a-prompt", help="Use this prompt's cell of RUN_A.")
@click.option("--a-model", help="Use this model's cell of RUN_A.")
@click.option("--b-prompt", help="Use this prompt's cell of RUN_B.")
@click.option("--b-model", help="Use this model's cell of RUN_B.")
@click.option("--alpha", default=0.05, show_default=True, type=click.FloatRange(0.001, 0.5))
@click.option("--json", "as_json", is_flag=True)
@click.option("--gate", is_flag=True, help="Exit 1 when any metric regressed significantly.")
@pass_ctx
def compare(
    obj: Ctx,
    run_a: str,
    run_b: str,
    a_prompt: str | None,
    a_model: str | None,
    b_prompt: str | None,
    b_model: str | None,
    alpha: float,
    as_json: bool,
    gate: bool,
) -> None:
    """Is RUN_B better than RUN_A? Per metric: mean difference, paired bootstrap 95% CI,
    paired permutation test, and improved / regressed / no significant change.

    \b
    Examples:
      outcrop eval compare 3f2a9c1e 8d0b7a44
      outcrop eval compare 3f2a RUN --a-prompt capital@1 --b-prompt capital@2   (one run, two cells)
    """
    from ..evals.runner import load_run
    from ..evals.summary import compare_runs

    a = load_run(obj.gateway, run_a)
    b = load_run(obj.gateway, run_b)
    result = compare_runs(
        a, b, a_prompt=a_prompt, a_model=a_model, b_prompt=b_prompt, b_model=b_model, alpha=alpha
    )
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(result.table())
    if gate and result.regressions():
        raise SystemExit(1)


@eval_.command("metrics")
def metrics() -> None:
    """The metrics a suite can name."""
    from ..evals.metrics import METRICS

    for name, description in METRICS.items():
        click.echo(f"{name:<22} {description}")


eval_.add_command(baseline)
