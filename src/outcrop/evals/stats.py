"""Is run B really different from run A, or is it noise? Paired statistics for eval runs.

``outcrop eval compare RUN_A RUN_B`` scores the same cases in two runs and asks, per metric,
whether the change in the mean score is real. Three ideas do the work.

**Why paired.** Cases differ far more from each other than two runs differ on one case: a hard
question scores low in both runs, an easy one high in both. Comparing the two runs' averages as
if they were independent samples lets that case-to-case spread drown a real change. Looking
instead at each case's difference ``b - a`` cancels the case's difficulty, and the question
becomes simply: is the mean of these differences away from zero?

**Why a bootstrap for the interval.** Scores are rarely bell-shaped: exact match is 0 or 1,
latency has a long tail. The bootstrap makes no such assumption. It redraws the cases with
replacement many times (each draw is a run of equally many cases that *could* have been
sampled), takes the mean difference of each redraw, and reports the middle 95% of those means as
the confidence interval (the "percentile method"). The interval says how large the change
plausibly is, which a p-value alone does not.

**Why a permutation test for the p-value.** If the two runs were really the same system, then
for each case it would be a coin toss which of its two scores is labelled "A" and which "B";
swapping them flips the sign of that case's difference. The sign-flip test tries those coin
tosses: the p-value is the share of sign patterns whose mean difference is at least as far from
zero as the one observed. With at most 16 non-zero differences it tries all ``2**k`` patterns
and the p-value is exact; beyond that it draws ``resamples`` random patterns and reports
``(count + 1) / (resamples + 1)``, which counts the observed pattern too and so never claims a
p-value of zero. Cases whose difference is zero carry no sign and do not matter. The test
needs no assumption about the shape of the scores, and its false-positive rate is at most
``alpha``.

The verdict follows the p-value alone; the interval is reported beside it. The two are
different methods and can, near the boundary, disagree (``p`` just under ``alpha`` while the
interval just touches zero, or the reverse).

Conventions:

- A pair with ``None`` or NaN on either side (a case that failed to score) is dropped first;
  ``n`` counts the pairs kept. Infinite scores are an error.
- Fewer than ``min_n`` pairs: the verdict is ``"too few cases"``, no test is run, ``p_value`` is
  1.0 (no evidence, so it never reads as significant) and the interval is NaN (``None`` in
  :meth:`Comparison.to_dict`). Note that with 5 or fewer non-zero differences the smallest
  possible exact p-value is ``2 / 32 = 0.0625``, so at ``alpha = 0.05`` at least 6 differing
  cases are needed before any change can be called significant.
- Every difference exactly zero: ``"identical"``, ``p_value`` 1.0, interval ``[0, 0]``.
- Results are deterministic for a given ``seed``; :func:`compare_scores` passes its seed to
  both :func:`paired_bootstrap_ci` and :func:`paired_permutation_test`, so its figures can be
  reproduced with those functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "Comparison",
    "Verdict",
    "compare_scores",
    "paired_bootstrap_ci",
    "paired_permutation_test",
]

Verdict = Literal["improved", "regressed", "no significant change", "identical", "too few cases"]

Scores = Sequence[float | None] | npt.NDArray[Any]
"""One score per case, in case order; ``None`` or NaN where the case has no score."""

_FloatArray = npt.NDArray[np.float64]

# Up to this many non-zero differences the permutation test enumerates every sign pattern
# (2**16 = 65,536 of them); above it, it samples patterns at random.
_EXACT_MAX_NONZERO = 16

# Resampling works in chunks of at most this many matrix cells (8 MiB of int64 or float64),
# so memory stays bounded however many cases and resamples are asked for.
_CHUNK_CELLS = 1 << 20


@dataclass(frozen=True)
class Comparison:
    """How run B compares with run A on one metric, over the cases scored in both runs."""

    metric: str
    n: int
    """Number of paired cases kept (pairs with a missing score dropped)."""
    mean_a: float
    mean_b: float
    diff: float
    """Mean of ``b - a`` over the kept pairs (``mean_b - mean_a``, up to rounding)."""
    ci_low: float
    """Lower end of the paired bootstrap confidence interval of ``diff`` (``1 - alpha``)."""
    ci_high: float
    p_value: float
    """Two-sided paired sign-flip permutation test of ``diff == 0``."""
    verdict: Verdict
    higher_is_better: bool

    def to_dict(self) -> dict[str, object]:
        """The fields as a JSON-ready dict: a float that is NaN (not computed) becomes ``None``."""
        return {
            "metric": self.metric,
            "n": self.n,
            "mean_a": _finite_or_none(self.mean_a),
            "mean_b": _finite_or_none(self.mean_b),
            "diff": _finite_or_none(self.diff),
            "ci_low": _finite_or_none(self.ci_low),
            "ci_high": _finite_or_none(self.ci_high),
            "p_value": self.p_value,
            "verdict": self.verdict,
            "higher_is_better": self.higher_is_better,
        }


def paired_bootstrap_ci(
    a: Scores,
    b: Scores,
    *,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``mean(b - a)`` over paired cases.

    Cases are resampled with replacement, each case keeping its pair together. Pairs with
    ``None`` or NaN on either side are dropped first. Raises ``ValueError`` when no pair is
    left, when ``a`` and ``b`` differ in length, or when an option is out of range.
    """
    _check_confidence(confidence)
    _check_resamples(resamples)
    _, _, d = _paired(a, b)
    if d.size == 0:
        raise ValueError(
            "Cannot bootstrap a confidence interval from no pairs: every pair had a missing "
            "(None or NaN) score. Score at least one case in both runs."
        )
    rng = np.random.default_rng(seed)
    means = _bootstrap_means(d, resamples, rng)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_permutation_test(
    a: Scores,
    b: Scores,
    *,
    resamples: int = 10_000,
    seed: int = 0,
) -> float:
    """Two-sided sign-flip permutation p-value for ``mean(b - a) == 0`` over paired cases.

    Exact (all ``2**k`` sign patterns of the ``k`` non-zero differences) when ``k <= 16``;
    otherwise Monte Carlo over ``resamples`` random patterns, with the ``(count + 1) /
    (resamples + 1)`` correction. Pairs with ``None`` or NaN on either side are dropped first;
    with no non-zero difference left the p-value is 1.0.
    """
    _check_resamples(resamples)
    _, _, d = _paired(a, b)
    nonzero = d[d != 0.0]
    k = nonzero.size
    if k == 0:
        return 1.0
    observed = abs(float(nonzero.sum()))
    # Sums of the same numbers in another order can differ in the last bits; a pattern that
    # ties the observed sum must count as "at least as extreme".
    threshold = observed - 1e-12 * float(np.abs(nonzero).sum())
    if k <= _EXACT_MAX_NONZERO:
        # Every sign pattern's sum: each difference doubles the list, once added, once taken.
        sums = np.zeros(1)
        for x in nonzero:
            sums = np.concatenate((sums + x, sums - x))
        return int(np.count_nonzero(np.abs(sums) >= threshold)) / sums.size
    rng = np.random.default_rng(seed)
    count = 0
    for rows in _chunks(resamples, k):
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(rows, k), dtype=np.int8)
        count += int(np.count_nonzero(np.abs(signs @ nonzero) >= threshold))
    return (count + 1) / (resamples + 1)


def compare_scores(
    metric: str,
    a: Scores,
    b: Scores,
    *,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    resamples: int = 10_000,
    seed: int = 0,
    min_n: int = 5,
) -> Comparison:
    """Compare run B with run A on one metric, case by case.

    ``a[i]`` and ``b[i]`` are the scores of the same case in the two runs. The change is
    significant when the permutation p-value is below ``alpha``; it is then ``"improved"`` or
    ``"regressed"`` by the sign of ``diff`` and ``higher_is_better`` (pass ``False`` for
    latency or cost). The interval is the paired bootstrap interval at ``1 - alpha``.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1 (exclusive), got {alpha!r}.")
    _check_resamples(resamples)
    if min_n < 1:
        raise ValueError(f"min_n must be at least 1, got {min_n!r}.")
    xa, xb, d = _paired(a, b)
    n = int(d.size)
    nan = math.nan
    mean_a = float(xa.mean()) if n else nan
    mean_b = float(xb.mean()) if n else nan
    diff = float(d.mean()) if n else nan

    def result(low: float, high: float, p_value: float, verdict: Verdict) -> Comparison:
        return Comparison(
            metric=metric,
            n=n,
            mean_a=mean_a,
            mean_b=mean_b,
            diff=diff,
            ci_low=low,
            ci_high=high,
            p_value=p_value,
            verdict=verdict,
            higher_is_better=higher_is_better,
        )

    if n < min_n:
        return result(nan, nan, 1.0, "too few cases")
    if not np.any(d):
        return result(0.0, 0.0, 1.0, "identical")
    low, high = paired_bootstrap_ci(xa, xb, confidence=1.0 - alpha, resamples=resamples, seed=seed)
    p_value = paired_permutation_test(xa, xb, resamples=resamples, seed=seed)
    verdict: Verdict
    if p_value >= alpha:
        verdict = "no significant change"
    elif (diff > 0.0) == higher_is_better:
        verdict = "improved"
    else:
        verdict = "regressed"
    return result(low, high, p_value, verdict)


def _paired(a: Scores, b: Scores) -> tuple[_FloatArray, _FloatArray, _FloatArray]:
    """The two score arrays with incomplete pairs dropped, and their differences ``b - a``."""
    xa = _as_scores(a, "a")
    xb = _as_scores(b, "b")
    if xa.size != xb.size:
        raise ValueError(
            f"Scores must be paired by case, but run A has {xa.size} scores and run B has "
            f"{xb.size}. Pass one score per case for both runs, in the same case order "
            "(None where a case has no score)."
        )
    keep = ~(np.isnan(xa) | np.isnan(xb))
    xa, xb = xa[keep], xb[keep]
    return xa, xb, xb - xa


def _as_scores(values: Scores, name: str) -> _FloatArray:
    try:
        x = np.asarray(values, dtype=np.float64)  # None becomes NaN
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Scores {name} must be numbers or None: {exc}") from exc
    if x.ndim != 1:
        raise ValueError(f"Scores {name} must be one score per case (1-D), got shape {x.shape}.")
    if np.isinf(x).any():
        raise ValueError(
            f"Scores {name} contain an infinite value; use None (or NaN) for a case that has "
            "no score."
        )
    return x


def _bootstrap_means(d: _FloatArray, resamples: int, rng: np.random.Generator) -> _FloatArray:
    """Means of ``resamples`` resamples (with replacement) of ``d``, drawn in bounded chunks."""
    n = d.size
    means = np.empty(resamples, dtype=np.float64)
    start = 0
    for rows in _chunks(resamples, n):
        idx = rng.integers(0, n, size=(rows, n))
        means[start : start + rows] = d[idx].mean(axis=1)
        start += rows
    return means


def _chunks(total_rows: int, row_length: int) -> list[int]:
    """Row counts of successive chunks of a ``total_rows`` x ``row_length`` matrix."""
    step = max(1, _CHUNK_CELLS // max(1, row_length))
    return [min(step, total_rows - start) for start in range(0, total_rows, step)]


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}.")


def _check_resamples(resamples: int) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples!r}.")


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value
