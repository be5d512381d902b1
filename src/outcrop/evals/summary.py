"""What a run says: per cell (prompt × model) and metric, the mean with its 95% interval;
run-to-run comparison with paired statistics; the CI gate; the terminal table."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidRequestError
from .runner import EvalRun, ResultRow
from .stats import Comparison, compare_scores

__all__ = [
    "CellSummary",
    "MetricSummary",
    "RunComparison",
    "compare_runs",
    "gate",
    "summarize",
    "summary_table",
]


@dataclass
class MetricSummary:
    metric: str
    mean: float | None
    n: int
    std: float | None
    ci_low: float | None
    ci_high: float | None
    higher_is_better: bool
    threshold: float | None = None
    passed: bool | None = None  # mean meets the threshold (None without one)


@dataclass
class CellSummary:
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
    metrics: dict[str, MetricSummary] = field(default_factory=dict)

    @property
    def cell(self) -> str:
        return f"{self.prompt} × {self.model}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cell"] = self.cell
        return data


def _mean_ci(values: list[float], seed: int = 0) -> tuple[float, float]:
    """A bootstrap 95% interval of a mean (percentile method)."""
    arr = np.asarray(values, dtype=float)
    if len(arr) < 2 or float(arr.std()) == 0.0:
        m = float(arr.mean())
        return m, m
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), size=(2000, len(arr)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def _cells(rows: list[ResultRow]) -> dict[tuple[str, str], list[ResultRow]]:
    cells: dict[tuple[str, str], list[ResultRow]] = defaultdict(list)
    for r in rows:
        cells[(r.prompt, r.model)].append(r)
    return cells


def summarize(run: EvalRun) -> list[CellSummary]:
    directions = run.metric_directions()
    thresholds = run.thresholds()
    out: list[CellSummary] = []
    for (prompt, model), rows in _cells(run.rows).items():
        ok = [r for r in rows if r.status == "ok"]
        latencies = sorted(r.latency_ms for r in ok if r.latency_ms is not None)
        cell = CellSummary(
            prompt=prompt,
            model=model,
            rows=len(rows),
            errors=len(rows) - len(ok),
            cached=sum(r.cached for r in rows),
            judge_invalid=sum(r.judge_invalid for r in rows),
            latency_p50_ms=_percentile(latencies, 50),
            latency_p95_ms=_percentile(latencies, 95),
            cost_usd=sum(r.cost_usd or 0.0 for r in ok),
            tokens=sum(r.input_tokens + r.output_tokens for r in ok),
        )
        for metric, higher in directions.items():
            values = [
                float(v) for r in ok if (v := r.scores.get(metric)) is not None and math.isfinite(v)
            ]
            threshold = thresholds.get(metric)
            if not values:
                cell.metrics[metric] = MetricSummary(
                    metric, None, 0, None, None, None, higher, threshold, None
                )
                continue
            mean = float(np.mean(values))
            low, high = _mean_ci(values)
            passed = None
            if threshold is not None:
                passed = mean >= threshold if higher else mean <= threshold
            cell.metrics[metric] = MetricSummary(
                metric,
                mean,
                len(values),
                float(np.std(values)),
                low,
                high,
                higher,
                threshold,
                passed,
            )
        out.append(cell)
    return out


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return float(np.percentile(sorted_values, q))


def per_case(rows: list[ResultRow], metric: str) -> dict[str, float]:
    """case id → the metric's mean over repeats (cases without a score are left out)."""
    by_case: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        v = r.scores.get(metric) if r.status == "ok" else None
        if v is not None and math.isfinite(v):
            by_case[r.case_id].append(float(v))
    return {c: float(np.mean(v)) for c, v in by_case.items()}


@dataclass
class RunComparison:
    a: str  # run id (and cell)
    b: str
    comparisons: list[tuple[str, Comparison]]  # (cell label, comparison)
    unpaired: int  # cases present in one side only

    def regressions(self) -> list[tuple[str, Comparison]]:
        return [(c, x) for c, x in self.comparisons if x.verdict == "regressed"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "unpaired_cases": self.unpaired,
            "comparisons": [{"cell": c, **x.to_dict()} for c, x in self.comparisons],
        }

    def table(self) -> str:
        lines = [f"A = {self.a}", f"B = {self.b}", ""]
        header = (
            f"{'cell':<34} {'metric':<20} {'n':>4} {'A':>8} {'B':>8} {'B−A':>8}  "
            f"{'95% CI':<19} {'p':>6}  verdict"
        )
        lines.append(header)
        for cell, c in self.comparisons:
            ci = f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}]"
            lines.append(
                f"{cell[:34]:<34} {c.metric[:20]:<20} {c.n:>4} {c.mean_a:>8.3f} {c.mean_b:>8.3f} "
                f"{c.diff:>+8.3f}  {ci:<19} {c.p_value:>6.3f}  {c.verdict}"
            )
        if self.unpaired:
            lines.append(f"\n{self.unpaired} case(s) appear in one run only and are left out.")
        return "\n".join(lines)


def _select(
    run: EvalRun, prompt: str | None, model: str | None
) -> dict[tuple[str, str], list[ResultRow]]:
    cells = _cells(run.rows)
    picked = {
        k: v
        for k, v in cells.items()
        if (prompt is None or prompt in (k[0], k[0].split("@")[0], k[0].split("#")[0]))
        and (model is None or k[1] == model)
    }
    if not picked:
        names = ", ".join(f"{p} × {m}" for p, m in cells) or "none"
        raise InvalidRequestError(
            f"run {run.id[:8]} has no cell for prompt={prompt or 'any'} model={model or 'any'}; "
            f"its cells: {names}",
            field="cell",
        )
    return picked


Cells = dict[tuple[str, str], list[ResultRow]]


def _label(ka: tuple[str, str], kb: tuple[str, str]) -> str:
    return f"{ka[0]} × {ka[1]}" if ka == kb else f"{ka[0]} × {ka[1]} → {kb[0]} × {kb[1]}"


def _pair_cells(
    cells_a: Cells, cells_b: Cells, shared_only: bool
) -> list[tuple[str, list[ResultRow], list[ResultRow]]]:
    """Which cell of A each cell of B is compared with."""
    if set(cells_a) == set(cells_b):
        return [(_label(k, k), cells_a[k], cells_b[k]) for k in cells_a]
    if shared_only and set(cells_a) & set(cells_b):
        return [(_label(k, k), cells_a[k], cells_b[k]) for k in cells_a if k in cells_b]
    if len(cells_a) == 1 and len(cells_b) == 1:
        (ka, ra), (kb, rb) = next(iter(cells_a.items())), next(iter(cells_b.items()))
        return [(_label(ka, kb), ra, rb)]
    # Two prompts picked in runs of several models: pair by model (and the reverse).
    for dim in (1, 0):
        by_a = {k[dim]: k for k in cells_a}
        by_b = {k[dim]: k for k in cells_b}
        if len(by_a) == len(cells_a) and len(by_b) == len(cells_b) and set(by_a) == set(by_b):
            return [(_label(by_a[v], by_b[v]), cells_a[by_a[v]], cells_b[by_b[v]]) for v in by_a]
    raise InvalidRequestError(
        "the runs have different cells (A: "
        + ", ".join(f"{p} × {m}" for p, m in cells_a)
        + "; B: "
        + ", ".join(f"{p} × {m}" for p, m in cells_b)
        + "); pick one on each side with --a-prompt/--a-model and --b-prompt/--b-model",
        field="cell",
    )


def compare_runs(
    a: EvalRun,
    b: EvalRun,
    *,
    a_prompt: str | None = None,
    a_model: str | None = None,
    b_prompt: str | None = None,
    b_model: str | None = None,
    alpha: float = 0.05,
    resamples: int = 10_000,
    seed: int = 0,
    shared_only: bool = False,
) -> RunComparison:
    """Per metric (and cell), B against A on the cases both scored: mean difference, paired
    bootstrap 95% CI, paired permutation p-value, verdict."""
    cells_a = _select(a, a_prompt, a_model)
    cells_b = _select(b, b_prompt, b_model)
    pairs = _pair_cells(cells_a, cells_b, shared_only)
    directions = {**a.metric_directions(), **b.metric_directions()}
    shared = [m for m in a.metric_directions() if m in b.metric_directions()]
    comparisons: list[tuple[str, Comparison]] = []
    unpaired = 0
    for label, rows_a, rows_b in pairs:
        for metric in shared:
            sa, sb = per_case(rows_a, metric), per_case(rows_b, metric)
            common = sorted(set(sa) & set(sb))
            unpaired = max(unpaired, len(set(sa) ^ set(sb)))
            comparisons.append(
                (
                    label,
                    compare_scores(
                        metric,
                        [sa[c] for c in common],
                        [sb[c] for c in common],
                        higher_is_better=directions[metric],
                        alpha=alpha,
                        resamples=resamples,
                        seed=seed,
                    ),
                )
            )
    a_label = a.id[:8] + (
        f" ({a_prompt or ''} {a_model or ''})".rstrip() if a_prompt or a_model else ""
    )
    b_label = b.id[:8] + (
        f" ({b_prompt or ''} {b_model or ''})".rstrip() if b_prompt or b_model else ""
    )
    return RunComparison(
        a_label.replace("( ", "("), b_label.replace("( ", "("), comparisons, unpaired
    )


def gate(run: EvalRun, baseline: EvalRun | None = None, *, alpha: float = 0.05) -> list[str]:
    """Why a run fails its gate: metrics under their thresholds, significant regressions
    against ``baseline``, errors and missing judge verdicts. Empty when it passes."""
    failures: list[str] = []
    if run.status != "done":
        failures.append(f"the run is {run.status}, not done")
    if run.corrupt:
        failures.append(f"{len(run.corrupt)} result row(s) are unreadable: {run.corrupt[0]}")
    if len(run.rows) + len(run.corrupt) < run.total:
        failures.append(f"{run.total - len(run.rows) - len(run.corrupt)} result(s) are missing")
    for cell in summarize(run):
        for m in cell.metrics.values():
            if m.passed is False:
                word = "under" if m.higher_is_better else "over"
                failures.append(
                    f"{cell.cell}: {m.metric} mean {m.mean:.3f} is {word} its threshold "
                    f"{m.threshold}"
                )
            elif m.threshold is not None and m.mean is None:
                failures.append(f"{cell.cell}: {m.metric} has no scores")
        if cell.errors:
            failures.append(f"{cell.cell}: {cell.errors} case(s) failed to run")
    if baseline is not None:
        try:
            comparison = compare_runs(baseline, run, alpha=alpha, shared_only=True)
        except InvalidRequestError as exc:
            failures.append(f"cannot compare with {baseline.id[:8]}: {exc}")
            return failures
        for label, c in comparison.regressions():
            failures.append(
                f"{label}: {c.metric} regressed against {baseline.id[:8]} "
                f"({c.mean_a:.3f} → {c.mean_b:.3f}, p = {c.p_value:.3f})"
            )
    return failures


def summary_table(run: EvalRun) -> str:
    """The run as a terminal table: a row per cell, a column per metric."""
    cells = summarize(run)
    metrics = list(run.metric_directions())
    head = [
        f"run {run.id[:8]}  suite {run.name}  {run.status}  {len(run.rows)}/{run.total} results"
    ]
    if run.corrupt:
        head.append(f"{len(run.corrupt)} unreadable result row(s) skipped: {run.corrupt[0]}")
    width = max([len(c.cell) for c in cells] + [4])
    width = min(width, 48)
    cols = [f"{m[:16]:>16}" for m in metrics]
    lines = [
        *head,
        "",
        f"{'cell':<{width}} " + " ".join(cols) + f" {'p50 ms':>8} {'errors':>6}",
    ]
    for c in cells:
        values = []
        for m in metrics:
            s = c.metrics[m]
            if s.mean is None:
                values.append(f"{'—':>16}")
                continue
            mark = "" if s.passed is None else (" ✓" if s.passed else " ✗")
            digits = 3 if s.higher_is_better else (6 if m == "cost" else 0)
            text = f"{s.mean:.{digits}f}"
            if s.ci_low is not None and s.ci_high is not None and s.ci_high > s.ci_low:
                text += f"±{(s.ci_high - s.ci_low) / 2:.{min(digits, 2)}f}"
            values.append(f"{text + mark:>16}")
        p50 = f"{c.latency_p50_ms:.0f}" if c.latency_p50_ms is not None else "—"
        lines.append(f"{c.cell[:width]:<{width}} " + " ".join(values) + f" {p50:>8} {c.errors:>6}")
    invalid = sum(c.judge_invalid for c in cells)
    if invalid:
        lines.append(f"\n{invalid} judge verdict(s) missing (recorded as no score).")
    return "\n".join(lines)
