"""The course's prompt-engineering practices as checks, each with a reason and a fix.

``lint(prompt)`` returns a scored checklist. Every check is a plain function of
the prompt (and, for the token budget, of its rendered size on a model), so a
check's verdict can be explained and tested.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .prompt import Prompt

__all__ = ["CHECKS", "Check", "LintReport", "lint"]


@dataclass
class Check:
    id: str
    title: str
    passed: bool
    reason: str
    suggestion: str = ""


@dataclass
class LintReport:
    prompt: str
    checks: list[Check] = field(default_factory=list)
    tokens: int | None = None
    context_window: int | None = None

    @property
    def score(self) -> int:
        """Share of checks passed, 0–100."""
        if not self.checks:
            return 100
        return round(100 * sum(c.passed for c in self.checks) / len(self.checks))

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "score": self.score,
            "tokens": self.tokens,
            "context_window": self.context_window,
            "checks": [asdict(c) for c in self.checks],
        }


_VAGUE = re.compile(
    r"\b(something|stuff|things|etc\.?|and so on|whatever|somehow|do your best|make it good)\b",
    re.I,
)
_FACTUAL = re.compile(
    r"^\s*(who|when|where|which|what (is|are|was|were|did|does)|how (many|much|old|long|far))\b"
    r"|\baccording to\b|\bwhat does the\b",
    re.I,
)
_FORMAT_WORDS = re.compile(
    r"\b(bullet|bullets|list|json|table|sentence|sentences|paragraph|paragraphs|"
    r"markdown|csv|yaml|one word|numbered)\b",
    re.I,
)
_CONTRADICTIONS: list[tuple[str, re.Pattern[str], re.Pattern[str]]] = [
    (
        "brief and detailed",
        re.compile(r"\b(brief|briefly|concise|concisely|short|succinct)\b", re.I),
        re.compile(
            r"\b(detailed|in[- ]depth|comprehensive|exhaustive|elaborate|at length)\b", re.I
        ),
    ),
    (
        "formal and casual",
        re.compile(r"\bformal\b", re.I),
        re.compile(r"\b(casual|informal|slang|chatty)\b", re.I),
    ),
    (
        "no lists and bullet points",
        re.compile(
            r"\b(no|without|never use|do not use|don't use) (bullet|bullets|lists?)\b", re.I
        ),
        re.compile(r"\b(use|in|as) (bullet points|bullets|a list|a numbered list)\b", re.I),
    ),
]
_ALWAYS_NEVER = re.compile(r"\b(always|never|do not|don't)\s+(\w+(?:\s+\w+)?)", re.I)
_NO_EXPLANATION = re.compile(
    r"\b(no explanation|without explanation|only the answer|just the answer|do not explain)\b",
    re.I,
)


def _instruction_text(p: Prompt) -> str:
    parts = [p.system, p.persona, p.objective, p.instructions, p.tone, *p.constraints]
    return "\n".join(x for x in parts if x)


def _clear_instructions(p: Prompt, _: dict[str, Any]) -> Check:
    text = " ".join(x for x in (p.objective, p.instructions) if x)
    title = "Clear, specific instructions"
    if len(text.split()) < 6:
        return Check(
            "clear-instructions",
            title,
            False,
            "The prompt says too little about what to do (fewer than 6 words of objective "
            "and instructions).",
            "Add an objective and instructions: what to produce, for whom, and how.",
        )
    vague = sorted({m.group(0).lower() for m in _VAGUE.finditer(text)})
    if vague:
        return Check(
            "clear-instructions",
            title,
            False,
            f"Vague words leave the model guessing: {', '.join(vague)}.",
            "Replace them with the exact thing you want.",
        )
    return Check("clear-instructions", title, True, "Objective and instructions are specific.")


def _structure(p: Prompt, _: dict[str, Any]) -> Check:
    used = [k for k, v in p.parts().items() if v and k != "query"]
    title = "Structured into the parts of a prompt"
    if len(used) >= 3:
        return Check("structure", title, True, f"Uses {', '.join(used)}.")
    return Check(
        "structure",
        title,
        False,
        f"Only {len(used)} part(s) besides the query ({', '.join(used) or 'none'}).",
        "Separate persona, objective, instructions, constraints, context and tone into their "
        "own fields instead of one block of text.",
    )


def _examples_for_format(p: Prompt, _: dict[str, Any]) -> Check:
    title = "Examples when a format is required"
    needs = p.output.format == "json" or bool(p.output.description)
    if not needs:
        return Check("examples-for-format", title, True, "No fixed output format to show.")
    if p.examples:
        return Check(
            "examples-for-format", title, True, f"{len(p.examples)} example(s) show the format."
        )
    return Check(
        "examples-for-format",
        title,
        False,
        "The answer must follow a format, but no example shows it.",
        "Add one or two [[examples]] with an input and the exact output you expect.",
    )


def _context_for_facts(p: Prompt, _: dict[str, Any]) -> Check:
    title = "Context for factual tasks"
    factual = p.task == "factual" or (p.task is None and bool(_FACTUAL.search(p.query)))
    if not factual:
        return Check("context-for-facts", title, True, "Not a factual question.")
    if p.context:
        return Check("context-for-facts", title, True, "Facts are given as context.")
    return Check(
        "context-for-facts",
        title,
        False,
        "A factual question without context invites the model to make facts up.",
        "Give the facts in context (or retrieve them from a knowledge base), and tell the "
        "model to answer only from them.",
    )


def _constraints(p: Prompt, _: dict[str, Any]) -> Check:
    title = "Constraints on the answer"
    if p.constraints:
        return Check("constraints", title, True, f"{len(p.constraints)} constraint(s).")
    return Check(
        "constraints",
        title,
        False,
        "Nothing limits length, scope or what to avoid.",
        "Add constraints, e.g. 'at most 80 words', 'only use the context', 'no medical advice'.",
    )


def _output_format(p: Prompt, _: dict[str, Any]) -> Check:
    title = "An explicit output format"
    if p.output.format == "json":
        return Check(
            "output-format",
            title,
            True,
            "JSON output" + (" with a schema." if p.output.schema_ else " (no schema)."),
        )
    if p.output.description:
        return Check("output-format", title, True, f"Format: {p.output.description}.")
    if _FORMAT_WORDS.search(_instruction_text(p)):
        return Check("output-format", title, True, "The instructions name a format.")
    return Check(
        "output-format",
        title,
        False,
        "Nothing says what shape the answer takes.",
        "Set [output] description (e.g. 'three bullet points') or format = 'json' with a schema.",
    )


def _no_contradictions(p: Prompt, _: dict[str, Any]) -> Check:
    title = "No contradictory instructions"
    text = _instruction_text(p)
    found = [name for name, a, b in _CONTRADICTIONS if a.search(text) and b.search(text)]
    words: dict[str, set[str]] = {}
    for m in _ALWAYS_NEVER.finditer(text):
        polarity = "always" if m.group(1).lower() == "always" else "never"
        words.setdefault(m.group(2).lower(), set()).add(polarity)
    found += [f"always and never '{w}'" for w, seen in sorted(words.items()) if len(seen) == 2]
    if p.reasoning and _NO_EXPLANATION.search(text):
        found.append("explain your reasoning and give no explanation")
    if p.output.format == "json" and re.search(r"\b(in prose|plain text)\b", text, re.I):
        found.append("JSON output and prose")
    if found:
        return Check(
            "no-contradictions",
            title,
            False,
            f"Instructions pull both ways: {'; '.join(found)}.",
            "Keep one of each pair.",
        )
    return Check("no-contradictions", title, True, "No conflicting pairs found.")


def _token_budget(p: Prompt, info: dict[str, Any]) -> Check:
    title = "Fits the model's context window"
    tokens, window = info.get("tokens"), info.get("context_window")
    if tokens is None or window is None:
        return Check(
            "token-budget",
            title,
            False,
            "The prompt could not be rendered on a model to count its tokens.",
            "Give every variable a value (--var NAME=VALUE) or a default, then lint again.",
        )
    answer = p.options.max_tokens or 256
    share = tokens / window
    if tokens + answer > window:
        return Check(
            "token-budget",
            title,
            False,
            f"{tokens} prompt tokens + {answer} for the answer exceed the {window}-token window.",
            "Shorten the context or examples, or pick a model with a larger window.",
        )
    if share > 0.75:
        return Check(
            "token-budget",
            title,
            False,
            f"The prompt takes {share:.0%} of the {window}-token window, leaving little room.",
            "Trim the context or examples.",
        )
    return Check(
        "token-budget",
        title,
        True,
        f"{tokens} tokens, {share:.0%} of the {window}-token window, "
        f"with {answer} left for the answer.",
    )


CHECKS: list[Callable[[Prompt, dict[str, Any]], Check]] = [
    _clear_instructions,
    _structure,
    _examples_for_format,
    _context_for_facts,
    _constraints,
    _output_format,
    _no_contradictions,
    _token_budget,
]


def lint(
    prompt: Prompt,
    *,
    tokens: int | None = None,
    context_window: int | None = None,
) -> LintReport:
    """Run every check. ``tokens``: the rendered prompt's size on the target model."""
    info = {"tokens": tokens, "context_window": context_window}
    report = LintReport(
        prompt=prompt.name or "(unnamed)", tokens=tokens, context_window=context_window
    )
    report.checks = [check(prompt, info) for check in CHECKS]
    return report
