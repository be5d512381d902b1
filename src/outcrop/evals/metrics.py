"""The metrics a suite can name, each scoring one answer.

Quality metrics score from 0 to 1, higher is better. ``latency_ms``, ``tokens``
and ``cost`` are measurements (lower is better) so that a comparison of two
runs can flag a slower or dearer change just as it flags a worse one.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequestError
from . import textmetrics as tm
from .judge import Judge
from .suite import Case, MetricSpec

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["METRICS", "Metric", "MetricContext", "Sample", "Score", "build_metric"]

DEFAULT_EMBEDDING_MODEL = "local:all-minilm-l6-v2"


@dataclass
class Score:
    value: float | None
    reason: str | None = None
    judge_valid: bool | None = None  # for judge metrics: did the judge give a verdict


@dataclass
class Sample:
    """One answer to one case, and everything a metric may look at."""

    case: Case
    output: str
    question: str = ""
    latency_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    contexts: list[dict[str, Any]] = field(default_factory=list)  # retrieved: source, text
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # made: name, arguments


@dataclass
class MetricContext:
    gateway: Gateway
    judge_model: str | None = None
    seed: int = 0
    parent_id: str | None = None


@dataclass
class Metric:
    name: str
    higher_is_better: bool
    needs: str | None  # what each case must have: "expected", "contexts", "tools"
    fn: Callable[[Sample, MetricContext], Score]
    threshold: float | None = None
    is_judge: bool = False
    kind: str = ""  # the metric's own name (``name`` may be the suite's label for it)

    def score(self, sample: Sample, ctx: MetricContext) -> Score:
        return self.fn(sample, ctx)


def _text(fn: Callable[[str, list[str]], float]) -> Callable[[Sample, MetricContext], Score]:
    return lambda s, _: Score(fn(s.output, s.case.expected_list()))


def _regex(spec: MetricSpec) -> Callable[[Sample, MetricContext], Score]:
    pattern = spec.pattern
    if not pattern:
        raise InvalidRequestError("metric regex needs a pattern: {name: regex, pattern: '…'}")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise InvalidRequestError(
            f"metric regex: the pattern {pattern!r} is not a valid regular expression ({exc})",
            field="pattern",
        ) from None
    return lambda s, _: Score(tm.regex_match(s.output, pattern))


def _json_schema(spec: MetricSpec) -> Callable[[Sample, MetricContext], Score]:
    schema = spec.schema_
    if not schema:
        raise InvalidRequestError(
            "metric json_schema needs a schema: {name: json_schema, schema: …}"
        )
    tm.schema_errors({}, schema)  # a schema outcrop cannot apply fails now, not on every row

    def fn(s: Sample, _: MetricContext) -> Score:
        try:
            value = tm.extract_json(s.output)
        except ValueError as exc:
            return Score(0.0, f"not JSON: {exc}")
        errors = tm.schema_errors(value, schema)
        return Score(0.0 if errors else 1.0, "; ".join(errors[:3]) or None)

    return fn


def _embedding_similarity(spec: MetricSpec) -> Callable[[Sample, MetricContext], Score]:
    model = spec.model or DEFAULT_EMBEDDING_MODEL

    def fn(s: Sample, ctx: MetricContext) -> Score:
        expected = s.case.expected_list()
        vectors = ctx.gateway.embed([s.output or " ", *expected], model=model).vectors
        best = max(_cosine(vectors[0], v) for v in vectors[1:])
        return Score(max(0.0, min(1.0, best)))

    return fn


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def _judge(
    rubric: str, *, reference: bool = False, context: bool = False, model: str | None = None
) -> Callable[[Sample, MetricContext], Score]:
    def fn(s: Sample, ctx: MetricContext) -> Score:
        judge = Judge(ctx.gateway, model or ctx.judge_model, seed=ctx.seed, parent_id=ctx.parent_id)
        passages = "\n\n".join(f"[{i}] {c.get('text', '')}" for i, c in enumerate(s.contexts, 1))
        verdict = judge.grade(
            rubric,
            s.output,
            question=s.question or None,
            reference=" | ".join(s.case.expected_list()) if reference else None,
            context=passages if context else None,
        )
        return Score(verdict.normalized, verdict.reason, judge_valid=verdict.valid)

    return fn


def _gold_matches(gold: str, item: dict[str, Any]) -> bool:
    """A gold context matches a retrieved passage by its source, or by sharing its words."""
    source = str(item.get("source", ""))
    if gold == source or (source and (source.endswith("/" + gold) or gold.endswith(source))):
        return True
    return tm.token_f1(str(item.get("text", "")), gold) >= 0.5 or (
        len(gold) > 20 and tm.normalize_squad(gold) in tm.normalize_squad(str(item.get("text", "")))
    )


def _context_recall(s: Sample, _: MetricContext) -> Score:
    gold = s.case.contexts
    found = [g for g in gold if any(_gold_matches(g, c) for c in s.contexts)]
    missing = [g for g in gold if g not in found]
    reason = f"missed: {', '.join(m[:60] for m in missing[:3])}" if missing else None
    return Score(len(found) / len(gold), reason)


def _context_precision(s: Sample, _: MetricContext) -> Score:
    """Rank-aware precision (average precision over the retrieved list, as in RAG evaluations)."""
    if not s.contexts:
        return Score(0.0, "nothing was retrieved")
    hits, total = 0, 0.0
    for rank, c in enumerate(s.contexts, start=1):
        if any(_gold_matches(g, c) for g in s.case.contexts):
            hits += 1
            total += hits / rank
    return Score(total / hits if hits else 0.0, f"{hits} of {len(s.contexts)} relevant")


def _args_match(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    for key, want in expected.items():
        if key not in actual:
            return False
        got = actual[key]
        if isinstance(want, int | float) and not isinstance(want, bool):
            try:
                if not math.isclose(float(want), float(got), rel_tol=1e-6, abs_tol=1e-9):
                    return False
            except (TypeError, ValueError):
                return False
        elif isinstance(want, str):
            if str(got).strip().lower().replace(" ", "") != want.strip().lower().replace(" ", ""):
                return False
        elif want != got:
            return False
    return True


def _tool_calls(s: Sample, _: MetricContext) -> Score:
    """F1 of the expected calls found in order (a subsequence) among the calls made."""
    expected = s.case.tools
    made = s.tool_calls
    matched, j = 0, 0
    for call in made:
        if (
            j < len(expected)
            and call.get("name") == expected[j].name
            and _args_match(expected[j].arguments, call.get("arguments") or {})
        ):
            matched += 1
            j += 1
    if not expected and not made:
        return Score(1.0)
    precision = matched / len(made) if made else 0.0
    recall = matched / len(expected) if expected else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    names = ", ".join(str(c.get("name")) for c in made) or "none"
    return Score(f1, f"made: {names}; matched {matched} of {len(expected)} expected")


def _measure(fn: Callable[[Sample], float | None]) -> Callable[[Sample, MetricContext], Score]:
    return lambda s, _: Score(fn(s))


Factory = Callable[[MetricSpec], Metric]

_DESCRIPTIONS: dict[str, str] = {
    "exact_match": "the answer equals an expected answer (whitespace stripped)",
    "squad_em": "exact match after SQuAD normalisation (case, punctuation, articles)",
    "token_f1": "SQuAD token F1 against the best expected answer",
    "contains": "an expected answer occurs in the answer",
    "regex": "the answer matches a pattern (setting: pattern)",
    "rouge_l": "ROUGE-L F-measure against the expected answer(s)",
    "bleu": "sentence BLEU against the expected answer(s), 0..1",
    "embedding_similarity": "cosine similarity of answer and expected answer embeddings",
    "json_valid": "the answer parses as JSON",
    "json_schema": "the answer is JSON matching a schema (setting: schema)",
    "judge": "an LLM grades the answer against a rubric (settings: rubric, model)",
    "correctness": "an LLM judges the answer against the expected answer",
    "faithfulness": "an LLM judges whether the answer is supported by the retrieved context",
    "answer_relevance": "an LLM judges whether the answer addresses the question",
    "context_recall": "share of gold contexts found among the retrieved passages",
    "context_precision": "rank-aware precision of the retrieved passages against gold",
    "tool_calls": "F1 of the expected tool calls (names, arguments) the agent made in order",
    "latency_ms": "time to the whole answer, ms (lower is better)",
    "tokens": "input + output tokens (lower is better)",
    "cost": "cost in USD (lower is better)",
}


def _factories() -> dict[str, Factory]:
    def quality(
        name: str,
        fn: Callable[[Sample, MetricContext], Score],
        needs: str | None = "expected",
        judge: bool = False,
    ) -> Factory:
        return lambda spec: Metric(name, True, needs, fn, spec.threshold, judge)

    def measure(name: str, fn: Callable[[Sample], float | None]) -> Factory:
        return lambda spec: Metric(name, False, None, _measure(fn), spec.threshold)

    return {
        "exact_match": quality("exact_match", _text(tm.exact_match)),
        "squad_em": quality("squad_em", _text(tm.squad_exact_match)),
        "token_f1": quality("token_f1", _text(tm.token_f1)),
        "contains": lambda spec: Metric(
            "contains",
            True,
            "expected",
            lambda s, _: Score(
                tm.contains(s.output, s.case.expected_list(), case_sensitive=spec.case_sensitive)
            ),
            spec.threshold,
        ),
        "regex": lambda spec: Metric("regex", True, None, _regex(spec), spec.threshold),
        "rouge_l": quality("rouge_l", _text(tm.rouge_l)),
        "bleu": quality("bleu", _text(tm.bleu)),
        "embedding_similarity": lambda spec: Metric(
            "embedding_similarity", True, "expected", _embedding_similarity(spec), spec.threshold
        ),
        "json_valid": quality("json_valid", lambda s, _: Score(tm.json_valid(s.output)), None),
        "json_schema": lambda spec: Metric(
            "json_schema", True, None, _json_schema(spec), spec.threshold
        ),
        "judge": lambda spec: Metric(
            "judge",
            True,
            None,
            _judge(_rubric(spec), reference=False, model=spec.model),
            spec.threshold,
            True,
        ),
        "correctness": lambda spec: Metric(
            "correctness",
            True,
            "expected",
            _judge(
                spec.rubric
                or "The answer gives the same facts as the reference answer; wording may differ.",
                reference=True,
                model=spec.model,
            ),
            spec.threshold,
            True,
        ),
        "faithfulness": lambda spec: Metric(
            "faithfulness",
            True,
            None,
            _judge(
                spec.rubric
                or "Every claim in the answer is supported by the context; nothing is made up.",
                context=True,
                model=spec.model,
            ),
            spec.threshold,
            True,
        ),
        "answer_relevance": lambda spec: Metric(
            "answer_relevance",
            True,
            None,
            _judge(
                spec.rubric or "The answer addresses the question directly and stays on it.",
                model=spec.model,
            ),
            spec.threshold,
            True,
        ),
        "context_recall": quality("context_recall", _context_recall, "contexts"),
        "context_precision": quality("context_precision", _context_precision, "contexts"),
        "tool_calls": quality("tool_calls", _tool_calls, "tools"),
        "latency_ms": measure("latency_ms", lambda s: s.latency_ms),
        "tokens": measure("tokens", lambda s: float(s.input_tokens + s.output_tokens)),
        "cost": measure("cost", lambda s: s.cost_usd),
    }


def _rubric(spec: MetricSpec) -> str:
    if not spec.rubric:
        raise InvalidRequestError(
            "metric judge needs a rubric: {name: judge, rubric: 'What a good answer does'}",
            field="rubric",
        )
    return spec.rubric


METRICS: dict[str, str] = dict(_DESCRIPTIONS)
_FACTORIES = _factories()


def build_metric(spec: MetricSpec) -> Metric:
    """The metric a suite names, with its settings checked."""
    factory = _FACTORIES.get(spec.name)
    if factory is None:
        close = difflib.get_close_matches(spec.name, list(_FACTORIES), n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InvalidRequestError(
            f"Unknown metric {spec.name!r}.{hint} Metrics: {', '.join(_FACTORIES)}.",
            field="metrics",
        )
    metric = factory(spec)
    metric.kind = spec.name
    metric.name = spec.key
    return metric
