"""Each lint check, with a prompt that fails it and one that passes it."""

from __future__ import annotations

import pytest

from outcrop.prompts import Prompt
from outcrop.prompts.lint import lint

GOOD = dict(
    persona="a support agent for Acme Books",
    objective="answer the customer's question about orders in one reply",
    instructions="Read the policy in the context and answer from it alone.",
    constraints=["At most 60 words."],
    tone="warm",
    context="Returns within 30 days.",
    query="Can I return a book I bought last week?",
    output={"description": "two sentences"},
    examples=[{"input": "Do you ship abroad?", "output": "Yes, to the EU. It takes a week."}],
)


def _check(prompt: Prompt, check_id: str, **kw):
    report = lint(prompt, tokens=kw.get("tokens", 200), context_window=kw.get("window", 4096))
    return next(c for c in report.checks if c.id == check_id)


def test_the_good_prompt_passes_everything():
    report = lint(Prompt(**GOOD), tokens=200, context_window=4096)
    assert report.failed == []
    assert report.score == 100
    assert len(report.checks) == 8


@pytest.mark.parametrize(
    ("check_id", "bad", "reason"),
    [
        ("clear-instructions", {"objective": None, "instructions": "Answer."}, "too little"),
        (
            "clear-instructions",
            {"instructions": "Write something nice about stuff in the policy, etc."},
            "Vague words",
        ),
        (
            "structure",
            {
                "persona": None,
                "objective": None,
                "constraints": [],
                "tone": None,
                "examples": [],
                "context": None,
                "output": {},
            },
            "part(s) besides the query",
        ),
        ("examples-for-format", {"examples": []}, "no example shows it"),
        (
            "context-for-facts",
            {"context": None, "query": "When was Acme Books founded?"},
            "make facts up",
        ),
        ("constraints", {"constraints": []}, "Nothing limits"),
        ("output-format", {"output": {}, "examples": []}, "what shape"),
        (
            "no-contradictions",
            {"constraints": ["Be brief.", "Give a detailed answer."]},
            "brief and detailed",
        ),
        (
            "no-contradictions",
            {"tone": "formal", "constraints": ["Keep it casual."]},
            "formal and casual",
        ),
        (
            "no-contradictions",
            {"constraints": ["Always cite the policy.", "Never cite the policy."]},
            "always and never 'cite the'",
        ),
        (
            "no-contradictions",
            {"constraints": ["Do not use bullet points.", "Answer in bullet points."]},
            "no lists and bullet points",
        ),
    ],
)
def test_each_check_fails_on_a_bad_prompt(check_id, bad, reason):
    assert _check(Prompt(**GOOD), check_id).passed
    failed = _check(Prompt(**{**GOOD, **bad}), check_id)
    assert not failed.passed
    assert reason in failed.reason
    assert failed.suggestion


def test_reasoning_against_no_explanation_is_a_contradiction():
    prompt = Prompt(**{**GOOD, "reasoning": True, "constraints": ["Give only the answer."]})
    assert "no explanation" in _check(prompt, "no-contradictions").reason


def test_output_format_named_in_the_instructions_counts():
    prompt = Prompt(
        **{
            **GOOD,
            "output": {},
            "examples": [],
            "instructions": "Answer in three bullet points from the policy.",
        }
    )
    assert _check(prompt, "output-format").passed
    assert _check(prompt, "examples-for-format").passed  # no fixed format field, no examples needed


def test_json_output_passes_the_format_check_and_needs_examples():
    prompt = Prompt(**{**GOOD, "output": {"format": "json"}, "examples": []})
    assert _check(prompt, "output-format").passed
    assert not _check(prompt, "examples-for-format").passed


def test_token_budget():
    prompt = Prompt(**{**GOOD, "options": {"max_tokens": 500}})
    assert _check(prompt, "token-budget", tokens=1000, window=4096).passed
    over = _check(prompt, "token-budget", tokens=3700, window=4096)
    assert not over.passed and "exceed the 4096-token window" in over.reason
    crowded = _check(Prompt(**GOOD), "token-budget", tokens=3200, window=4096)
    assert not crowded.passed and "78%" in crowded.reason
    unknown = lint(Prompt(**GOOD)).checks[-1]
    assert not unknown.passed and "could not be rendered" in unknown.reason


def test_an_explicit_task_overrides_the_guess():
    prompt = Prompt(**{**GOOD, "context": None, "query": "Write a poem", "task": "factual"})
    assert not _check(prompt, "context-for-facts").passed
    creative = Prompt(
        **{**GOOD, "context": None, "query": "Who would win, a cat or a dog?", "task": "creative"}
    )
    assert _check(creative, "context-for-facts").passed


def test_always_and_never_about_different_things_is_fine():
    prompt = Prompt(**{**GOOD, "constraints": ["Always use bullet points.", "Don't use tables."]})
    assert _check(prompt, "no-contradictions").passed
