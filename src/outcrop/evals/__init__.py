"""Evaluate performance: suites of cases, metrics, judges, runs, comparisons and reports.

``Suite`` (a YAML or TOML file) → ``Runner`` (every case × prompt × model ×
repeat, scored and stored, resumable) → ``summarize`` / ``compare_runs`` /
``gate`` / ``write_html``. ``run_baseline`` measures a classic TF-IDF +
logistic-regression classifier against zero- and few-shot prompting.
"""

from .judge import Judge, Verdict
from .metrics import METRICS, Metric, Sample, Score
from .runner import EvalRun, ResultRow, Runner, load_run
from .stats import Comparison, compare_scores, paired_bootstrap_ci, paired_permutation_test
from .suite import Case, MetricSpec, Suite, load_suite
from .summary import CellSummary, RunComparison, compare_runs, gate, summarize, summary_table

__all__ = [
    "METRICS",
    "Case",
    "CellSummary",
    "Comparison",
    "EvalRun",
    "Judge",
    "Metric",
    "MetricSpec",
    "ResultRow",
    "RunComparison",
    "Runner",
    "Sample",
    "Score",
    "Suite",
    "Verdict",
    "compare_runs",
    "compare_scores",
    "gate",
    "load_run",
    "load_suite",
    "paired_bootstrap_ci",
    "paired_permutation_test",
    "summarize",
    "summary_table",
]
