"""Evaluation on the real embedded model: the judge never breaks; the example suite runs."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from outcrop import Gateway
from outcrop.evals.judge import Judge

from .helpers import run

ROOT = Path(__file__).resolve().parents[1]
SQUAD = ROOT.parent / "shared" / "datasets" / "squad_v1.1" / "dev-v1.1.json"

pytestmark = pytest.mark.slow


def _squad_cases(n: int) -> list[tuple[str, str, str]]:
    """(question, reference, answer to grade): every other answer is another question's."""
    data = json.loads(SQUAD.read_text())["data"]
    qas = [
        (q["question"], q["answers"][0]["text"])
        for article in data
        for p in article["paragraphs"][:2]
        for q in p["qas"][:1]
    ]
    rng = random.Random(0)
    picked = rng.sample(qas, n)
    out = []
    for i, (question, answer) in enumerate(picked):
        wrong = picked[(i + 1) % n][1]
        out.append((question, answer, answer if i % 2 == 0 else wrong))
    return out


@pytest.mark.skipif(not SQUAD.exists(), reason="needs ../shared/datasets/squad_v1.1")
def test_the_judge_gives_a_valid_verdict_on_every_one_of_50_cases() -> None:
    gateway = Gateway()
    judge = Judge(gateway, "local:smollm2-135m")
    verdicts = [
        judge.grade(
            "The answer gives the same fact as the reference answer.",
            answer,
            question=question,
            reference=reference,
        )
        for question, reference, answer in _squad_cases(50)
    ]
    valid = [v for v in verdicts if v.valid]
    assert len(valid) == 50, [v.reason for v in verdicts if not v.valid]
    assert all(v.score in (1, 2, 3, 4, 5) and v.reason for v in valid)
    assert all(0.0 <= (v.normalized or 0.0) <= 1.0 for v in valid)
    # One trace per verdict: no retries were needed (the grammar made the first answer valid).
    judged = [t for t in gateway.store.recent(limit=200) if t.kind == "judge"]
    assert len(judged) == 50


def test_the_example_suite_runs_end_to_end(capsys, monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    suite = ROOT / "examples" / "evals" / "capitals.yaml"
    report = tmp_path / "report.html"
    code, out, err = run(capsys, "eval", "run", str(suite), "--gate", "--html", str(report))
    assert code == 0, out + err
    assert "16 calls (8 cases × 2 prompts × 1 models × 1 repeats)" in err
    assert "capital-plain#" in out and "capital-terse#" in out and "gate: passed" in out
    assert report.exists() and "capitals" in report.read_text()

    code, out, _ = run(capsys, "eval", "list", "--json")
    run_id = json.loads(out)[0]["id"]
    code, out, _ = run(
        capsys,
        "eval",
        "compare",
        run_id,
        run_id,
        "--a-prompt",
        "capital-plain",
        "--b-prompt",
        "capital-terse",
        "--json",
    )
    assert code == 0
    metrics = {c["metric"] for c in json.loads(out)["comparisons"]}
    assert metrics == {"contains", "token_f1", "squad_em", "latency_ms"}
