"""The evaluation and prompt API behind the Evals page and the playground's prompt versions:
eval runs, a run's matrix and cases, run comparisons, the HTML report; stored prompts and
their versions. The same data ``outcrop eval list|report|compare`` and ``outcrop prompts
list|show`` print.

A run's matrix is :func:`~outcrop.evals.summarize` and a comparison is
:func:`~outcrop.evals.compare_runs`, unchanged: the page and the CLI cannot disagree.
"""

from __future__ import annotations

import asyncio
import base64
import difflib
import hashlib
import math
from collections.abc import Callable
from typing import Any, Literal

import jinja2
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field, ValidationError

from ..errors import ConfigError, InvalidRequestError, UserError
from ..evals.report import _JS as _REPORT_SCRIPT
from ..evals.report import render_html
from ..evals.runner import EvalRun, load_run
from ..evals.stats import Verdict
from ..evals.summary import compare_runs, summarize
from ..gateway import Gateway
from ..prompts.versions import PromptRegistry, PromptVersion
from .openai_api import ErrorBody

__all__ = ["REPORT_POLICY", "evals_router"]

# The report is one self-contained page: inline CSS (style attributes too) and SVG, and one
# script of its own (the filter and sort of its table), which no run's text is ever put in.
# Its policy allows exactly that script by its hash, styles inline, nothing from anywhere;
# the sandbox gives it an origin of its own, so it cannot read the web UI's stored key.
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_REPORT_SCRIPT.encode("utf-8")).digest()).decode()
REPORT_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'self'; sandbox allow-scripts"
)
_REPORT_HEADERS = {
    "Content-Security-Policy": REPORT_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


# -- response models ----------------------------------------------------------------------


class Headline(BaseModel):
    metric: str
    mean: float | None = Field(description="Mean over every scored answer of the run.")
    n: int
    higher_is_better: bool


class EvalRunOut(BaseModel):
    id: str
    suite: str
    status: str = Field(description="running, done or interrupted.")
    created_at: float
    finished_at: float | None
    total: int = Field(description="Answers planned: cases × prompts × models × repeats.")
    done: int = Field(description="Answers stored.")
    errors: int = Field(description="Answers that failed to run.")
    cases: int
    prompts: list[str]
    models: list[str]
    headline: list[Headline]


class EvalRunList(BaseModel):
    object: Literal["list"]
    data: list[EvalRunOut]


class MetricInfo(BaseModel):
    name: str
    higher_is_better: bool
    threshold: float | None


class MetricCell(BaseModel):
    metric: str
    mean: float | None
    n: int
    std: float | None
    ci_low: float | None = Field(description="The 95% bootstrap interval of the mean.")
    ci_high: float | None
    higher_is_better: bool
    threshold: float | None
    passed: bool | None = Field(description="The mean meets its threshold (null without one).")


class MatrixCell(BaseModel):
    cell: str = Field(description="'prompt × model': the value of ?cell= for its cases.")
    prompt: str
    model: str
    rows: int
    errors: int
    cached: int
    judge_invalid: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    cost_usd: float
    tokens: int
    metrics: dict[str, MetricCell]


class EvalRunDetail(EvalRunOut):
    metrics: list[MetricInfo]
    cells: list[MatrixCell]
    unreadable: list[str] = Field(description="Stored answers that could not be read.")


class ResultOut(BaseModel):
    cell: str
    prompt: str
    model: str
    case_id: str
    repeat: int
    status: str
    input: str = Field(description="The question as the model read it (the last message).")
    output: str
    expected: list[str]
    error: str | None
    scores: dict[str, float | None]
    reasons: dict[str, str]
    judge_invalid: int
    latency_ms: float | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    cached: bool
    trace_id: str | None
    tags: list[str]
    contexts: list[dict[str, Any]]
    tool_calls: list[dict[str, Any]]


class ResultList(BaseModel):
    object: Literal["list"]
    run: str
    cell: str | None
    total: int = Field(description="Answers that match, before limit and offset.")
    data: list[ResultOut]
    unreadable: list[str]


class ComparisonOut(BaseModel):
    cell: str
    metric: str
    n: int = Field(description="Cases scored in both runs.")
    mean_a: float | None
    mean_b: float | None
    diff: float | None = Field(description="Head minus base, over the paired cases.")
    ci_low: float | None = Field(description="Paired bootstrap interval of diff.")
    ci_high: float | None
    p_value: float = Field(description="Paired permutation test.")
    verdict: Verdict
    higher_is_better: bool


class RunSide(BaseModel):
    id: str
    suite: str
    label: str
    prompt: str | None
    model: str | None


class RunComparisonOut(BaseModel):
    base: RunSide
    head: RunSide
    alpha: float
    unpaired_cases: int = Field(description="Cases scored in one run only, left out.")
    comparisons: list[ComparisonOut]


class PromptSummary(BaseModel):
    name: str
    latest: int | None
    versions: list[int]
    labels: dict[str, int]
    description: str


class PromptList(BaseModel):
    object: Literal["list"]
    data: list[PromptSummary]
    problems: list[str] = Field(description="Prompt files that could not be read, and why.")


class PromptVersionOut(BaseModel):
    version: int
    ref: str = Field(description="name@version: what outcrop.prompt on a chat takes.")
    hash: str
    created_at: float
    author: str | None
    note: str | None
    labels: list[str]
    prompt: dict[str, Any] = Field(description="The prompt's parts, as POST /v1/prompts/render.")
    variables: list[str] = Field(description="The variables its templates use.")
    defaults: dict[str, str]
    problem: str | None = Field(description="Why its templates cannot be read, if they cannot.")


class PromptDetail(BaseModel):
    name: str
    labels: dict[str, int]
    versions: list[PromptVersionOut]


# -- helpers ------------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """A number JSON can carry: NaN and infinities (a failed score, say) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _cells_in_order(run: EvalRun) -> tuple[list[str], list[str]]:
    prompts: dict[str, None] = {}
    models: dict[str, None] = {}
    for r in run.rows:
        prompts.setdefault(r.prompt, None)
        models.setdefault(r.model, None)
    return list(prompts), list(models)


def _run_out(run: EvalRun) -> dict[str, Any]:
    """A run as the list shows it: counts and each metric's mean over the whole run."""
    prompts, models = _cells_in_order(run)
    ok = [r for r in run.rows if r.status == "ok"]
    headline = []
    for metric, higher in run.metric_directions().items():
        values = [
            float(v) for r in ok if (v := r.scores.get(metric)) is not None and math.isfinite(v)
        ]
        headline.append(
            {
                "metric": metric,
                "mean": sum(values) / len(values) if values else None,
                "n": len(values),
                "higher_is_better": higher,
            }
        )
    return {
        "id": run.id,
        "suite": run.name,
        "status": run.status,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "total": run.total,
        "done": len(run.rows) + len(run.corrupt),
        "errors": len(run.rows) - len(ok),
        "cases": len({r.case_id for r in run.rows}),
        "prompts": prompts,
        "models": models,
        "headline": headline,
    }


def _run_detail(run: EvalRun) -> dict[str, Any]:
    thresholds = run.thresholds()
    detail: dict[str, Any] = _finite(
        {
            **_run_out(run),
            "metrics": [
                {"name": m, "higher_is_better": h, "threshold": thresholds.get(m)}
                for m, h in run.metric_directions().items()
            ],
            "cells": [c.to_dict() for c in summarize(run)],
            "unreadable": run.corrupt,
        }
    )
    return detail


def _version_out(v: PromptVersion, labels: dict[str, int]) -> dict[str, Any]:
    problem = None
    try:
        used = sorted(v.prompt.used_variables())
    except (InvalidRequestError, jinja2.TemplateError) as exc:  # a filter that does not exist
        used, problem = sorted(v.prompt.variables), str(exc)
    return {
        "version": v.version,
        "ref": v.ref,
        "hash": v.hash,
        "created_at": v.created_at,
        "author": v.author,
        "note": v.note,
        "labels": sorted(label for label, n in labels.items() if n == v.version),
        "prompt": v.prompt.model_dump(mode="json", by_alias=True, exclude_defaults=True),
        "variables": used,
        "defaults": {k: d.default for k, d in v.prompt.variables.items() if d.default is not None},
        "problem": problem,
    }


# -- the routes ---------------------------------------------------------------------------


def evals_router(
    gateway: Gateway,
    caller: Any,
    error: Callable[..., Exception],
    json_errors: dict[int | str, dict[str, Any]],
) -> APIRouter:
    """Routes under /v1 for the Evals page and stored prompts. ``caller`` is the key
    dependency; ``error`` the server's API error class (status, message, code=…, param=…);
    ``json_errors`` the error responses documented as JSON, for the one route whose own
    answer is HTML."""
    router = APIRouter(prefix="/v1")
    store = gateway.store
    who = Depends(caller)
    run_404: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorBody, "description": "No such eval run"}
    }

    def find_run(run_id: str, param: str) -> str:
        """The full id of a stored run, or a 404 that names the close ids."""
        try:
            found = store.eval_run(run_id)
        except UserError as exc:  # a prefix of several runs
            raise error(400, f"{param}: {exc}", code="ambiguous_run", param=param) from None
        if found is not None:
            return str(found["id"])
        recent = [r["id"] for r in store.eval_runs(limit=1000)]
        prefixes = {rid[: max(len(run_id), 8)]: rid for rid in recent}
        close = difflib.get_close_matches(run_id, list(prefixes), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(c[:8] for c in close)}?" if close else ""
        listed = ", ".join(rid[:8] for rid in recent[:5]) or "none yet (outcrop eval run SUITE)"
        raise error(
            404,
            f"No eval run {run_id!r}.{hint} Recent runs: {listed}.",
            code="run_not_found",
            param=param,
        )

    async def run_of(run_id: str, param: str = "run_id") -> EvalRun:
        full = await asyncio.to_thread(find_run, run_id, param)
        return await asyncio.to_thread(load_run, gateway, full)

    @router.get("/evals/runs", tags=["evals"], response_model=EvalRunList)
    async def runs(
        suite: str | None = Query(None, max_length=200, description="Only runs of this suite."),
        limit: int = Query(20, ge=1, le=200),
        key: Any = who,
    ) -> dict[str, Any]:
        """The latest eval runs, newest first, with each metric's mean over the run."""

        def load() -> list[dict[str, Any]]:
            rows = store.eval_runs(limit=limit, suite=suite or None)
            return [_finite(_run_out(load_run(gateway, r["id"]))) for r in rows]

        return {"object": "list", "data": await asyncio.to_thread(load)}

    @router.get(
        "/evals/runs/{run_id}", tags=["evals"], response_model=EvalRunDetail, responses=run_404
    )
    async def run_detail(
        run_id: str = Path(description="A run id, or its first characters."), key: Any = who
    ) -> dict[str, Any]:
        """A run's matrix: per prompt × model cell, each metric's mean with its 95% interval,
        errors, latency, cost and tokens (what ``outcrop eval report`` prints)."""
        run = await run_of(run_id)
        return await asyncio.to_thread(_run_detail, run)

    @router.get(
        "/evals/runs/{run_id}/results",
        tags=["evals"],
        response_model=ResultList,
        responses=run_404,
    )
    async def results(
        run_id: str = Path(description="A run id, or its first characters."),
        cell: str | None = Query(
            None, max_length=1000, description="'prompt × model', as the matrix names it."
        ),
        status: Literal["ok", "error"] | None = None,
        limit: int = Query(500, ge=1, le=5000),
        offset: int = Query(0, ge=0),
        key: Any = who,
    ) -> dict[str, Any]:
        """A run's answers, case by case: input, output, expected, scores and their reasons,
        and the trace of each call."""
        run = await run_of(run_id)
        rows = run.rows
        if cell:
            cells = list(dict.fromkeys(r.cell for r in rows))
            if cell not in cells:
                close = difflib.get_close_matches(cell, cells, n=1, cutoff=0.6)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise error(
                    400,
                    f"cell: run {run.id[:8]} has no cell {cell!r}.{hint} Its cells: "
                    f"{', '.join(cells) or 'none'}.",
                    param="cell",
                )
            rows = [r for r in rows if r.cell == cell]
        if status:
            rows = [r for r in rows if r.status == status]
        data: list[dict[str, Any]] = []
        unreadable = list(run.corrupt)
        for r in rows[offset : offset + limit]:
            fields = {k: v for k, v in r.__dict__.items() if k != "question"}
            try:
                row = ResultOut.model_validate(
                    _finite({**fields, "cell": r.cell, "input": r.question})
                )
            except ValidationError as exc:
                unreadable.append(
                    f"case {r.case_id} ({r.cell}, repeat {r.repeat}): unreadable "
                    f"({exc.error_count()} field(s) of the wrong type)"
                )
                continue
            data.append(row.model_dump())
        return {
            "object": "list",
            "run": run.id,
            "cell": cell or None,
            "total": len(rows),
            "data": data,
            "unreadable": unreadable,
        }

    @router.get(
        "/evals/runs/{run_id}/report",
        tags=["evals"],
        response_class=HTMLResponse,
        responses={
            **json_errors,
            200: {
                "description": "The HTML report: one self-contained page",
                "content": {"text/html": {"schema": {"type": "string"}}},
            },
            404: {**json_errors[404], "description": "No such eval run"},
        },
    )
    async def report(
        run_id: str = Path(description="A run id, or its first characters."), key: Any = who
    ) -> HTMLResponse:
        """The run's HTML report (what ``outcrop eval report RUN --html`` writes), served with
        a policy that lets it run its own script only."""
        run = await run_of(run_id)
        page = await asyncio.to_thread(render_html, run)
        return HTMLResponse(page, headers=_REPORT_HEADERS)

    @router.get(
        "/evals/compare",
        tags=["evals"],
        response_model=RunComparisonOut,
        responses=run_404,
    )
    async def compare(
        base: str = Query(min_length=1, max_length=200, description="Run A, the reference."),
        head: str = Query(min_length=1, max_length=200, description="Run B, compared with A."),
        base_prompt: str | None = Query(None, max_length=300),
        base_model: str | None = Query(None, max_length=300),
        head_prompt: str | None = Query(None, max_length=300),
        head_model: str | None = Query(None, max_length=300),
        alpha: float = Query(0.05, ge=0.001, le=0.5, description="Significance level."),
        key: Any = who,
    ) -> dict[str, Any]:
        """Is head better than base? Per metric and cell: the mean difference on the cases both
        scored, its paired bootstrap 95% interval, a paired permutation p-value, and the
        verdict (what ``outcrop eval compare`` prints)."""
        a = await run_of(base, "base")
        b = await run_of(head, "head")
        picked = (base_prompt or None, base_model or None)
        wanted = (head_prompt or None, head_model or None)
        if a.id == b.id and picked == wanted:
            raise error(
                400,
                f"base and head are the same run ({a.id[:8]}): pick two runs of one suite, or "
                "two cells of this run with base_prompt/head_prompt or base_model/head_model.",
                code="same_run",
                param="head",
            )
        if a.name != b.name:
            raise error(
                400,
                f"base is a run of suite {a.name!r} and head of suite {b.name!r}: runs of "
                "different suites have different cases. Compare two runs of one suite.",
                code="different_suites",
                param="head",
            )

        def run() -> dict[str, Any]:
            try:
                result = compare_runs(
                    a,
                    b,
                    a_prompt=picked[0],
                    a_model=picked[1],
                    b_prompt=wanted[0],
                    b_model=wanted[1],
                    alpha=alpha,
                )
            except InvalidRequestError as exc:  # the runs' cells cannot be paired
                message = str(exc).replace(
                    "--a-prompt/--a-model and --b-prompt/--b-model",
                    "base_prompt/base_model and head_prompt/head_model",
                )
                raise error(400, message, param=exc.field) from None
            return {
                "base": {
                    "id": a.id,
                    "suite": a.name,
                    "label": result.a,
                    "prompt": picked[0],
                    "model": picked[1],
                },
                "head": {
                    "id": b.id,
                    "suite": b.name,
                    "label": result.b,
                    "prompt": wanted[0],
                    "model": wanted[1],
                },
                "alpha": alpha,
                "unpaired_cases": result.unpaired,
                "comparisons": _finite(result.to_dict()["comparisons"]),
            }

        return await asyncio.to_thread(run)

    # -- stored prompts ---------------------------------------------------------------

    def registry_synced() -> tuple[PromptRegistry, list[str]]:
        """The registry with the project's prompt files recorded; the files it could not read."""
        registry = PromptRegistry(store)
        try:
            registry.sync()
        except ConfigError as exc:
            return registry, [str(exc)]
        return registry, []

    @router.get("/prompts", tags=["prompts"], response_model=PromptList)
    async def prompts(key: Any = who) -> dict[str, Any]:
        """The stored prompts (the project's prompt files are recorded first): versions and
        labels."""

        def load() -> dict[str, Any]:
            registry, problems = registry_synced()
            data = []
            for name in store.prompt_names():
                versions = registry.versions(name)
                data.append(
                    {
                        "name": name,
                        "latest": versions[-1].version if versions else None,
                        "versions": [v.version for v in versions],
                        "labels": registry.labels(name),
                        "description": versions[-1].prompt.description if versions else "",
                    }
                )
            return {"object": "list", "data": data, "problems": problems}

        return await asyncio.to_thread(load)

    @router.get(
        "/prompts/{name}/versions",
        tags=["prompts"],
        response_model=PromptDetail,
        responses={404: {"model": ErrorBody, "description": "No such prompt"}},
    )
    async def prompt_versions(name: str, key: Any = who) -> dict[str, Any]:
        """A prompt's versions, each with its parts, the variables it uses and its labels."""

        def load() -> dict[str, Any]:
            registry = PromptRegistry(store)
            versions = registry.versions(name)
            if not versions:
                registry, _ = registry_synced()
                versions = registry.versions(name)
            if not versions:
                known = store.prompt_names()
                close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
                hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                raise error(
                    404,
                    f"No prompt named {name!r}.{hint} Prompts: {', '.join(known) or 'none yet'} "
                    "(files in prompts/ of the project the server runs in).",
                    code="prompt_not_found",
                    param="name",
                )
            labels = registry.labels(name)
            return {
                "name": name,
                "labels": labels,
                "versions": [_version_out(v, labels) for v in versions],
            }

        return await asyncio.to_thread(load)

    return router
