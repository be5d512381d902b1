"""LLM-as-judge: a model grades an answer against a rubric, with a score and a reason.

Judges break in the field when a model returns prose or half a JSON object.
outcrop's judge does not: on local models its answer is constrained by a grammar
built from the verdict's JSON schema (``reason`` of bounded length, then ``score``
from the scale), and ``max_tokens`` leaves room for the longest verdict the
grammar allows, so every answer parses. Remote models get the same schema as
``response_format``; an answer that still does not parse is asked for once more
with the parse error, then read leniently (a "score: 4" in prose counts); only
then is the verdict recorded as missing — never as a crash of the run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..types import Message, ResponseFormat

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["Judge", "Verdict", "parse_verdict", "verdict_schema"]

REASON_CHARS = 240


@dataclass(frozen=True)
class Verdict:
    score: int | None  # on the judge's scale; None when the judge gave none
    reason: str
    normalized: float | None  # 0..1
    valid: bool
    trace_id: str | None = None


def verdict_schema(low: int = 1, high: int = 5, reason_chars: int = REASON_CHARS) -> dict[str, Any]:
    """The JSON schema a verdict matches: a bounded reason first (it conditions the score)."""
    return {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "minLength": 1, "maxLength": reason_chars},
            "score": {"type": "integer", "enum": list(range(low, high + 1))},
        },
        "required": ["reason", "score"],
        "additionalProperties": False,
    }


_SCORE_IN_PROSE = re.compile(r"score\W{0,4}(\d+)", re.IGNORECASE)


def parse_verdict(text: str, low: int = 1, high: int = 5) -> tuple[int, str] | None:
    """Read (score, reason) from a judge's answer: JSON (fenced or not), else 'score: N' prose."""
    body = text.strip()
    fenced = re.match(r"^```(?:json)?\s*(.*?)\s*```$", body, re.DOTALL)
    if fenced:
        body = fenced.group(1)
    start, end = body.find("{"), body.rfind("}")
    if start != -1 and end > start:
        try:
            data = json.loads(body[start : end + 1])
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and "score" in data:
            raw = data["score"]
            score: int | None = None
            if isinstance(raw, bool):
                score = None
            elif isinstance(raw, int | float) and float(raw).is_integer():
                score = int(raw)
            elif isinstance(raw, str) and raw.strip().isdigit():
                score = int(raw.strip())
            if score is not None and low <= score <= high:
                return score, str(data.get("reason", "")).strip()
    match = _SCORE_IN_PROSE.search(text)
    if match and low <= int(match.group(1)) <= high:
        return int(match.group(1)), text.strip()[:REASON_CHARS]
    return None


class Judge:
    """Grade answers with ``model`` against a rubric on a ``low``..``high`` scale."""

    def __init__(
        self,
        gateway: Gateway,
        model: str | None = None,
        *,
        low: int = 1,
        high: int = 5,
        seed: int = 0,
        parent_id: str | None = None,
    ):
        self.gateway = gateway
        self.model = model
        self.low, self.high = low, high
        self.seed = seed
        self.parent_id = parent_id

    def messages(
        self,
        rubric: str,
        answer: str,
        *,
        question: str | None = None,
        reference: str | None = None,
        context: str | None = None,
    ) -> list[Message]:
        system = (
            "You are a strict, fair grader. Read the rubric, then grade the answer from "
            f"{self.low} (fails the rubric) to {self.high} (meets it fully). Give a one-sentence "
            "reason first, then the score, as JSON."
        )
        parts = [f"Rubric: {rubric.strip()}"]
        if context:
            parts.append(f"Context:\n{context.strip()}")
        if question:
            parts.append(f"Question: {question.strip()}")
        if reference:
            parts.append(f"Reference answer: {reference.strip()}")
        parts.append(f"Answer to grade: {answer.strip() or '(empty)'}")
        return [Message.system(system), Message.user("\n\n".join(parts))]

    def grade(
        self,
        rubric: str,
        answer: str,
        *,
        question: str | None = None,
        reference: str | None = None,
        context: str | None = None,
    ) -> Verdict:
        from ..gateway import TraceInfo

        messages = self.messages(
            rubric, answer, question=question, reference=reference, context=context
        )
        schema = verdict_schema(self.low, self.high)
        options: dict[str, Any] = {
            "temperature": 0.0,
            "seed": self.seed,
            # The longest verdict the grammar allows, in tokens, plus the JSON around it.
            "max_tokens": REASON_CHARS + 48,
            "response_format": ResponseFormat(type="json_schema", json_schema=schema),
        }
        trace = TraceInfo(parent_id=self.parent_id, kind="judge")
        response = self.gateway.chat(
            messages, model=self.model, trace=trace, fallbacks=False, **options
        )
        parsed = parse_verdict(response.text, self.low, self.high)
        if parsed is None:
            retry = [
                *messages,
                Message.assistant(response.text),
                Message.user(
                    "That was not a verdict. Answer with only this JSON: "
                    f'{{"reason": "<one sentence>", "score": <{self.low}-{self.high}>}}'
                ),
            ]
            response = self.gateway.chat(
                retry, model=self.model, trace=trace, fallbacks=False, **options
            )
            parsed = parse_verdict(response.text, self.low, self.high)
        if parsed is None:
            return Verdict(
                score=None,
                reason=f"the judge gave no verdict: {response.text[:200]!r}",
                normalized=None,
                valid=False,
                trace_id=response.id,
            )
        score, reason = parsed
        return Verdict(
            score=score,
            reason=reason,
            normalized=(score - self.low) / (self.high - self.low),
            valid=True,
            trace_id=response.id,
        )
