"""Tests for outcrop.evals.stats: the statistics checked on simulated runs whose truth is known.

The repeated-trial tests (false positives, power, coverage) use a fixed seed, so they are
deterministic; their bounds are three binomial standard errors around the rate the method
promises: wide enough that a sound method passes for almost any seed, narrow enough to catch
a broken one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest

from outcrop.evals import stats
from outcrop.evals.stats import (
    Comparison,
    compare_scores,
    paired_bootstrap_ci,
    paired_permutation_test,
)

Pair = tuple[np.ndarray, np.ndarray]
Generator = Callable[[np.random.Generator, int], Pair]

ALPHA = 0.05
TRIALS = 300  # repeated trials for the false-positive rate
FAST = 2_000  # resamples inside repeated-trial loops (the default is 10,000)


def slack(rate: float, trials: int) -> float:
    """Three binomial standard errors of an observed rate over ``trials`` trials."""
    return 3.0 * math.sqrt(rate * (1.0 - rate) / trials)


# Simulated eval runs. In each, cases differ in difficulty far more than the two runs differ
# on one case — the situation a paired comparison is built for.


def graded(rng: np.random.Generator, n: int, effect: float = 0.0) -> Pair:
    """A graded score (e.g. a 0-1 rubric): case difficulty plus run-to-run noise."""
    difficulty = rng.uniform(0.0, 1.0, n)
    a = difficulty + rng.normal(0.0, 0.1, n)
    b = difficulty + effect + rng.normal(0.0, 0.1, n)
    return a, b


def exact_match_null(rng: np.random.Generator, n: int) -> Pair:
    """0/1 exact match; each case passes with its own probability, the same in both runs."""
    p = rng.uniform(0.0, 1.0, n)
    return (rng.random(n) < p).astype(float), (rng.random(n) < p).astype(float)


def exact_match_fixes(rng: np.random.Generator, n: int, fix: float, brk: float) -> Pair:
    """0/1 exact match; run B fixes a share ``fix`` of A's failures and breaks ``brk`` of passes."""
    a = (rng.random(n) < 0.6).astype(float)
    u = rng.random(n)
    b = np.where(a == 0.0, u < fix, u >= brk).astype(float)
    return a, b


def latency(rng: np.random.Generator, n: int, factor: float = 1.0) -> Pair:
    """Seconds per case: long-tailed across cases, B takes ``factor`` times as long as A."""
    base = rng.lognormal(0.0, 1.0, n)
    return base * rng.lognormal(0.0, 0.3, n), factor * base * rng.lognormal(0.0, 0.3, n)


# 1. A real difference is flagged, in the right direction.


def test_a_clear_improvement_is_flagged_and_its_mirror_is_a_regression() -> None:
    rng = np.random.default_rng(1)
    a = rng.uniform(0.2, 0.8, 60)
    b = a + 0.15 + rng.normal(0.0, 0.02, 60)

    up = compare_scores("accuracy", a, b)
    assert up.verdict == "improved"
    assert up.n == 60
    assert up.diff == pytest.approx(float(np.mean(b - a)))
    assert up.diff == pytest.approx(up.mean_b - up.mean_a)
    assert up.ci_low < 0.15 < up.ci_high
    assert up.ci_high - up.ci_low < 0.02
    # No random sign pattern comes near the observed mean: the p-value is its floor, 1/(R+1).
    assert up.p_value == pytest.approx(1 / 10_001)

    down = compare_scores("accuracy", b, a)
    assert down.verdict == "regressed"
    assert down.diff == pytest.approx(-up.diff)
    assert (down.ci_low, down.ci_high) == pytest.approx((-up.ci_high, -up.ci_low))


def test_lower_is_better_flips_the_verdicts() -> None:
    rng = np.random.default_rng(2)
    a = rng.uniform(0.2, 0.8, 60)
    b = a + 0.15 + rng.normal(0.0, 0.02, 60)
    assert compare_scores("latency_s", a, b, higher_is_better=False).verdict == "regressed"
    assert compare_scores("latency_s", b, a, higher_is_better=False).verdict == "improved"


# 2. Pure noise is flagged no more often than alpha.


@pytest.mark.parametrize(
    ("kind", "generate"),
    [
        ("graded", graded),
        ("exact match", exact_match_null),
        ("latency", latency),
    ],
)
def test_false_positive_rate_on_pure_noise_is_at_most_alpha(kind: str, generate: Generator) -> None:
    rng = np.random.default_rng(20)
    flagged = 0
    for trial in range(TRIALS):
        a, b = generate(rng, 30)
        result = compare_scores(kind, a, b, alpha=ALPHA, resamples=FAST, seed=trial)
        flagged += result.verdict in ("improved", "regressed")
    rate = flagged / TRIALS
    assert rate <= ALPHA + slack(ALPHA, TRIALS), f"{kind}: false-positive rate {rate:.3f}"
    if kind == "graded":
        # Continuous scores: the test spends its alpha, it is not merely timid (exact match is
        # discrete, so there the rate sits below alpha).
        assert rate >= ALPHA - slack(ALPHA, TRIALS), f"{kind}: false-positive rate {rate:.3f}"


# 3. A true effect is detected most of the time — and pairing is what makes that possible.


def test_power_on_a_small_effect_amid_large_case_to_case_spread() -> None:
    trials, n, effect = 100, 40, 0.08
    rng = np.random.default_rng(30)
    paired_hits = unpaired_hits = 0
    for trial in range(trials):
        a, b = graded(rng, n, effect)
        paired_hits += compare_scores("rubric", a, b, resamples=FAST, seed=trial).verdict == (
            "improved"
        )
        # The same data treated as two independent samples (Welch z-test): the spread of case
        # difficulty (sd 0.29) swamps the 0.08 effect.
        se = math.sqrt(a.var(ddof=1) / n + b.var(ddof=1) / n)
        unpaired_hits += abs(b.mean() - a.mean()) / se > 1.96
    assert paired_hits / trials > 0.8
    assert unpaired_hits / trials < 0.2


def test_power_on_exact_match_and_on_latency() -> None:
    trials = 100
    rng = np.random.default_rng(31)
    fixes = sum(
        compare_scores(
            "exact_match", *exact_match_fixes(rng, 150, fix=0.3, brk=0.03), resamples=FAST, seed=t
        ).verdict
        == "improved"
        for t in range(trials)
    )
    faster = sum(
        compare_scores(
            "latency_s",
            *latency(rng, 60, factor=0.7),
            higher_is_better=False,
            resamples=FAST,
            seed=t,
        ).verdict
        == "improved"
        for t in range(trials)
    )
    assert fixes / trials > 0.8
    assert faster / trials > 0.8


# 4. The bootstrap interval covers the true difference about 95% of the time.


def test_bootstrap_interval_covers_the_true_difference_at_its_confidence() -> None:
    trials, n, effect = 400, 100, 0.05
    rng = np.random.default_rng(40)
    covered = 0
    for trial in range(trials):
        a, b = graded(rng, n, effect)
        low, high = paired_bootstrap_ci(a, b, confidence=0.95, resamples=FAST, seed=trial)
        covered += low <= effect <= high
    coverage = covered / trials
    assert abs(coverage - 0.95) <= slack(0.95, trials), f"coverage {coverage:.3f}"


def test_bootstrap_interval_basics() -> None:
    rng = np.random.default_rng(41)
    a, b = graded(rng, 50, 0.1)
    wide = paired_bootstrap_ci(a, b, confidence=0.99)
    mid = paired_bootstrap_ci(a, b, confidence=0.95)
    narrow = paired_bootstrap_ci(a, b, confidence=0.80)
    assert wide[0] < mid[0] < narrow[0] < float(np.mean(b - a)) < narrow[1] < mid[1] < wide[1]
    # Every case moved by the same amount: every resample has that mean.
    assert paired_bootstrap_ci([1.0, 2.0, 3.0], [1.5, 2.5, 3.5]) == (0.5, 0.5)


def test_bootstrap_chunking_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(42)
    a, b = graded(rng, 37, 0.0)
    whole = paired_bootstrap_ci(a, b, resamples=1_001, seed=5)
    monkeypatch.setattr(stats, "_CHUNK_CELLS", 37 * 10 + 3)  # chunks of 10 rows, and a last of 1
    assert paired_bootstrap_ci(a, b, resamples=1_001, seed=5) == whole


def test_results_are_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(43)
    a, b = graded(rng, 40, 0.03)
    assert compare_scores("m", a, b, seed=7) == compare_scores("m", a, b, seed=7)
    assert paired_bootstrap_ci(a, b, seed=7) != paired_bootstrap_ci(a, b, seed=8)


# 5. The permutation test: exact on small examples, Monte Carlo beyond 16 differing cases.


@pytest.mark.parametrize(
    ("diffs", "expected"),
    [
        ([1, 1, 1, 1, 1], 2 / 32),  # only all-plus and all-minus reach |sum| = 5
        ([-1, -1, -1, -1, -1], 2 / 32),
        ([0, 0, 1, 1, 1, 1, 1], 2 / 32),  # zero differences carry no sign
        ([1, 1, 1, -1], 10 / 16),  # |sum| >= 2 unless two signs of each: 16 - C(4, 2)
        ([1, 2, 3], 2 / 8),
        ([3, -1, -1], 1.0),  # every pattern has |sum| >= 1
        # Flipping 0.1, 0.2, -0.3 ties the observed sum, but only up to rounding (in floats
        # 0.1 + 0.2 - 0.3 != 0); such ties must still count, as they do for [1, 2, -3, 5].
        ([0.1, 0.2, -0.3, 0.5], 10 / 16),
        ([1, 2, -3, 5], 10 / 16),
        ([0, 0, 0], 1.0),
    ],
)
def test_exact_permutation_p_value(diffs: list[float], expected: float) -> None:
    a = [0.0] * len(diffs)
    assert paired_permutation_test(a, diffs) == pytest.approx(expected)
    # Exact: the seed and resample count play no part.
    assert paired_permutation_test(a, diffs, seed=99, resamples=3) == pytest.approx(expected)


def test_monte_carlo_p_value_agrees_with_full_enumeration() -> None:
    rng = np.random.default_rng(50)
    d = rng.normal(0.5, 1.0, 17)  # 17 non-zero differences: just past the exact limit
    signs = 1 - 2 * ((np.arange(2**17)[:, None] >> np.arange(17)) & 1)
    exact = float(np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-9))
    assert 0.05 < exact < 0.5  # a p-value worth estimating
    resamples = 20_000
    estimate = paired_permutation_test(np.zeros(17), d, resamples=resamples, seed=1)
    assert abs(estimate - exact) <= 4 * math.sqrt(exact * (1 - exact) / resamples)


def test_monte_carlo_p_value_is_never_zero() -> None:
    d = np.full(40, 1.0)
    assert paired_permutation_test(np.zeros(40), d, resamples=500) == 1 / 501


# 6. Edge cases and input handling.


def test_identical_runs() -> None:
    scores = [0.1, 0.5, 0.9, 1.0, 0.0, 0.3]
    result = compare_scores("bleu", scores, list(scores))
    assert result == Comparison(
        metric="bleu",
        n=6,
        mean_a=pytest.approx(0.4666666),
        mean_b=pytest.approx(0.4666666),
        diff=0.0,
        ci_low=0.0,
        ci_high=0.0,
        p_value=1.0,
        verdict="identical",
        higher_is_better=True,
    )


def test_too_few_cases() -> None:
    result = compare_scores("accuracy", [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0])
    assert result.verdict == "too few cases"
    assert result.n == 4
    assert result.diff == 1.0
    assert result.p_value == 1.0
    assert math.isnan(result.ci_low) and math.isnan(result.ci_high)
    assert result.to_dict() == {
        "metric": "accuracy",
        "n": 4,
        "mean_a": 0.0,
        "mean_b": 1.0,
        "diff": 1.0,
        "ci_low": None,
        "ci_high": None,
        "p_value": 1.0,
        "verdict": "too few cases",
        "higher_is_better": True,
    }
    assert compare_scores("accuracy", [0.0] * 4, [1.0] * 4, min_n=3).verdict != "too few cases"


def test_no_complete_pairs() -> None:
    result = compare_scores("accuracy", [None, 1.0], [0.5, None])
    assert result.verdict == "too few cases"
    assert result.n == 0
    assert math.isnan(result.mean_a) and math.isnan(result.diff)
    json.dumps(result.to_dict(), allow_nan=False)  # JSON-ready: NaN became None
    with pytest.raises(ValueError, match="no pairs"):
        paired_bootstrap_ci([None], [1.0])
    assert paired_permutation_test([None], [1.0]) == 1.0


def test_pairs_with_a_missing_score_are_dropped() -> None:
    rng = np.random.default_rng(60)
    a, b = graded(rng, 30, 0.1)
    holes_a: list[float | None] = [*a, None, 0.5, math.nan, 0.7]
    holes_b: list[float | None] = [*b, 0.4, None, 0.2, math.nan]
    with_holes = compare_scores("m", holes_a, holes_b)
    assert with_holes.n == 30
    assert with_holes == compare_scores("m", a, b)


def test_unequal_lengths_raise() -> None:
    with pytest.raises(ValueError, match="run A has 3 scores and run B has 2"):
        compare_scores("m", [1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="paired by case"):
        paired_bootstrap_ci([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="paired by case"):
        paired_permutation_test([1.0], [1.0, 2.0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: compare_scores("m", [1.0], [float("inf")]), "infinite"),
        (lambda: compare_scores("m", [[1.0]], [[2.0]]), "1-D"),
        (lambda: compare_scores("m", ["x"], [1.0]), "numbers or None"),
        (lambda: compare_scores("m", [1.0], [1.0], alpha=1.5), "alpha"),
        (lambda: compare_scores("m", [1.0], [1.0], min_n=0), "min_n"),
        (lambda: paired_bootstrap_ci([1.0], [1.0], confidence=95), "confidence"),
        (lambda: paired_permutation_test([1.0], [1.0], resamples=0), "resamples"),
    ],
)
def test_bad_input_raises_value_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_public_api() -> None:
    assert stats.__all__ == [
        "Comparison",
        "Verdict",
        "compare_scores",
        "paired_bootstrap_ci",
        "paired_permutation_test",
    ]
