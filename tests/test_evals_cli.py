"""``outcrop eval`` end to end over HTTP (an OpenAI-compatible server), and its bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from .fake_openai import FakeOpenAI
from .helpers import run


@pytest.fixture(autouse=True)
def no_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))


@pytest.fixture
def fake(outcrop_home: Path):  # type: ignore[no-untyped-def]
    server = FakeOpenAI().start()
    Path("outcrop.toml").write_text(
        f'[endpoints.fake]\nbase_url = "{server.base_url}"\nkey_required = false\n'
    )
    yield server
    server.stop()


def write_suite(expected: str = "fake server", threshold: float = 0.5) -> Path:
    Path("greet.yaml").write_text(
        f"""
name: greet
prompts:
  - {{name: hello, query: "Say hello to {{{{ who }}}}"}}
models: [fake:gpt-test]
cases:
  - {{id: a, vars: {{who: Ada}}, expected: "{expected}"}}
  - {{id: b, vars: {{who: Bob}}, expected: "{expected}"}}
  - {{id: c, vars: {{who: Cy}}, expected: "{expected}"}}
metrics:
  - {{name: contains, threshold: {threshold}}}
  - token_f1
  - tokens
"""
    )
    return Path("greet.yaml")


def test_run_report_list_and_compare_over_http(capsys, fake: FakeOpenAI) -> None:  # type: ignore[no-untyped-def]
    write_suite()
    code, out, err = run(capsys, "eval", "run", "greet.yaml", "--gate", "--html", "r.html")
    assert code == 0, err
    assert "3 calls (3 cases × 1 prompts × 1 models × 1 repeats)" in err
    assert "hello#" in out and "gate: passed" in out
    assert len(fake.requests) == 3
    assert "Say hello to Ada" in json.dumps([r["body"]["messages"] for r in fake.requests])
    html = Path("r.html").read_text()
    assert "greet" in html and "Hello from the fake server." in html

    code, out, _ = run(capsys, "eval", "list", "--json")
    runs = json.loads(out)
    assert code == 0 and runs[0]["suite"] == "greet" and runs[0]["done"] == 3
    first = runs[0]["id"]

    # The same suite again is answered from the cache: no new requests.
    code, out, _ = run(capsys, "eval", "run", "greet.yaml", "--json")
    assert code == 0 and len(fake.requests) == 3
    second = json.loads(out)
    assert second["cells"][0]["cached"] == 3
    assert second["cells"][0]["metrics"]["contains"]["mean"] == 1.0

    code, out, err = run(capsys, "eval", "compare", first[:8], second["run"][:8], "--json")
    assert code == 0, err
    verdicts = {c["metric"]: c["verdict"] for c in json.loads(out)["comparisons"]}
    assert verdicts == {
        "contains": "too few cases",
        "token_f1": "too few cases",
        "tokens": "too few cases",
    }

    code, out, _ = run(capsys, "eval", "report", first[:8], "--json")
    data = json.loads(out)
    assert code == 0 and len(data["rows"]) == 3 and data["unreadable"] == []
    assert data["rows"][0]["output"] == "Hello from the fake server."


def test_the_gate_fails_a_metric_under_its_threshold(capsys, fake: FakeOpenAI) -> None:  # type: ignore[no-untyped-def]
    write_suite(expected="goodbye")
    code, out, _ = run(capsys, "eval", "run", "greet.yaml", "--gate")
    assert code == 1
    assert "gate: FAILED" in out and "contains mean 0.000 is under its threshold 0.5" in out


def test_server_errors_become_error_rows_and_the_gate_fails(capsys, fake: FakeOpenAI) -> None:  # type: ignore[no-untyped-def]
    write_suite()
    fake.script.extend(["401"])
    code, out, _ = run(capsys, "eval", "run", "greet.yaml", "--gate", "--concurrency", "1")
    assert code == 1 and "1 case(s) failed to run" in out


def test_bad_input_names_the_problem(capsys, fake: FakeOpenAI) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, "eval", "run", "nope.yaml")
    assert code == 1 and "nope.yaml" in err and "no such suite file" in err

    write_suite()
    code, _, err = run(capsys, "eval", "run", "greet.yaml", "-m", "fake")
    assert code == 1 and "fake" in err

    code, _, err = run(capsys, "eval", "run", "greet.yaml", "-m", "lokal:smollm2-135m")
    assert code == 1 and "lokal:smollm2-135m" in err

    Path("m.yaml").write_text("cases: [{input: hi, expected: x}]\nmetrics: [rouge]\n")
    code, _, err = run(capsys, "eval", "run", "m.yaml")
    assert code == 1 and "Unknown metric 'rouge'" in err and "rouge_l" in err

    Path("p.yaml").write_text(
        "prompts: [greeting@2]\ncases: [{input: hi}]\nmetrics: [json_valid]\n"
    )
    code, _, err = run(capsys, "eval", "run", "p.yaml")
    assert code == 1 and "No prompt named 'greeting'" in err

    code, _, err = run(capsys, "eval", "compare", "aaaa", "bbbb")
    assert code == 1 and "No eval run 'aaaa'" in err

    code, _, err = run(capsys, "eval", "run", "greet.yaml", "--baseline", "x")
    assert code == 1 and "--baseline goes with --gate" in err

    code, out, _ = run(capsys, "eval", "metrics")
    assert code == 0 and "faithfulness" in out and "tool_calls" in out
