"""Evaluation: suites, the runner (matrix, repeats, cache, resume), judges, gate, compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from outcrop import Gateway, InvalidRequestError, Settings, Store, UserError
from outcrop.errors import ConfigError, UnknownModelError
from outcrop.evals.judge import Judge, parse_verdict, verdict_schema
from outcrop.evals.runner import Runner, load_run
from outcrop.evals.suite import Suite, load_suite
from outcrop.evals.summary import compare_runs, gate, summarize, summary_table
from outcrop.providers.testing import FunctionModel
from outcrop.types import ChatRequest

CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Peru": "Lima",
    "Chad": "N'Djamena",
}


def _country(request: ChatRequest) -> str:
    text = request.messages[-1].text
    return next((c for c in CAPITALS if c in text), "")


def good(request: ChatRequest) -> str:
    if "grade the answer" in (request.messages[0].text if request.messages else ""):
        return '{"reason": "matches", "score": 5}'
    return f"The capital is {CAPITALS.get(_country(request), 'unknown')}."


def bad(request: ChatRequest) -> str:
    return "I am not sure."


class Counting(FunctionModel):
    def __init__(self, fn, delay: float = 0.0):  # type: ignore[no-untyped-def]
        super().__init__(fn)
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self.delay = delay
        self._lock = threading.Lock()

    def _reply(self, request: ChatRequest):  # type: ignore[no-untyped-def]
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay)
            return super()._reply(request)
        finally:
            with self._lock:
                self.active -= 1


@pytest.fixture
def models() -> dict[str, Counting]:
    return {"good": Counting(good), "bad": Counting(bad)}


@pytest.fixture
def gw(store: Store, models: dict[str, Counting]) -> Gateway:
    return Gateway(
        settings=Settings(default_model="good:m"),
        store=store,
        providers=dict(models),
        sleep=lambda s: None,
    )


def suite(**over: object) -> Suite:
    data: dict[str, object] = {
        "name": "capitals",
        "prompts": [{"name": "capital", "query": "What is the capital of {{ country }}?"}],
        "models": ["good:m"],
        "cases": [{"vars": {"country": c}, "expected": p} for c, p in CAPITALS.items()],
        "metrics": ["contains", {"name": "token_f1", "threshold": 0.2}, "latency_ms"],
    }
    data.update(over)
    return Suite.model_validate(data)


# -- suites ---------------------------------------------------------------------


def test_a_yaml_suite_with_cases_from_jsonl_and_csv(tmp_path: Path) -> None:
    (tmp_path / "cases.jsonl").write_text(
        "\n".join(json.dumps({"q": c, "a": p, "k": i}) for i, (c, p) in enumerate(CAPITALS.items()))
    )
    (tmp_path / "cases.csv").write_text("country,answer,tags\nFrance,Paris,europe|easy\n")
    (tmp_path / "s.yaml").write_text(
        textwrap.dedent(
            """
            prompts:
              - {name: capital, query: "Capital of {{ country }}?"}
            cases: {file: cases.jsonl, vars: {country: q}, expected: a, id: k, limit: 3}
            metrics: [contains]
            """
        )
    )
    s = load_suite(tmp_path / "s.yaml")
    assert s.name == "s"
    cases = s.load_cases()
    assert [c.id for c in cases] == ["0", "1", "2"]
    assert cases[1].vars == {"country": "Japan"} and cases[1].expected == "Tokyo"

    (tmp_path / "t.toml").write_text(
        'metrics = ["exact_match"]\n[cases]\nfile = "cases.csv"\nexpected = "answer"\n'
        'tags = "tags"\n'
    )
    cases = load_suite(tmp_path / "t.toml").load_cases()
    assert cases[0].vars == {"country": "France"} and cases[0].tags == ["europe", "easy"]


def test_suite_mistakes_name_the_file_line_and_fix(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "a.yaml"
    bad_yaml.write_text("cases:\n  - {vars: {x: 1}}\nmetrics: [contains]\nrepeats: 0\n")
    with pytest.raises(ConfigError) as err:
        load_suite(bad_yaml)
    assert "repeats" in str(err.value) and ":4" in str(err.value)

    (tmp_path / "cases.csv").write_text("country,answer\nFrance,Paris\n")
    missing_column = tmp_path / "b.yaml"
    missing_column.write_text("cases: {file: cases.csv, expected: answr}\nmetrics: [contains]\n")
    with pytest.raises(ConfigError, match=r"no column 'answr'; columns: country, answer"):
        load_suite(missing_column).load_cases()

    no_file = tmp_path / "c.yaml"
    no_file.write_text("cases: {file: nope.jsonl}\nmetrics: [contains]\n")
    with pytest.raises(ConfigError, match=r"nope\.jsonl"):
        load_suite(no_file).load_cases()

    broken = tmp_path / "cases.jsonl"
    broken.write_text('{"country": "France"}\n{"country": \n')
    bad_line = tmp_path / "d.yaml"
    bad_line.write_text("cases: {file: cases.jsonl}\nmetrics: [json_valid]\n")
    with pytest.raises(ConfigError) as err:
        load_suite(bad_line).load_cases()
    assert "cases.jsonl:2" in str(err.value)

    with pytest.raises(ConfigError, match="no such suite file"):
        load_suite(tmp_path / "missing.yaml")
    twice = tmp_path / "e.yaml"
    twice.write_text("cases: [{input: hi}]\nmetrics: [contains, contains]\n")
    with pytest.raises(ConfigError, match="listed twice"):
        load_suite(twice)


def test_a_plan_names_a_missing_prompt_model_metric_or_variable(gw: Gateway) -> None:
    with pytest.raises(InvalidRequestError, match=r"Unknown metric 'token_f2'.*'token_f1'"):
        Runner(suite(metrics=["token_f2"]), gateway=gw).plan()
    with pytest.raises(UnknownModelError):
        Runner(suite(models=["nope:m"]), gateway=gw).plan()
    with pytest.raises(InvalidRequestError, match="No prompt named 'capitol'"):
        Runner(suite(prompts=["capitol@1"]), gateway=gw).plan()
    with pytest.raises(InvalidRequestError, match=r"cannot render case 1.*country"):
        Runner(
            suite(cases=[{"vars": {"nation": "France"}, "expected": "Paris"}]), gateway=gw
        ).plan()
    with pytest.raises(InvalidRequestError, match="needs 'expected' in every case; case 2"):
        Runner(
            suite(
                cases=[
                    {"vars": {"country": "Peru"}, "expected": "Lima"},
                    {"vars": {"country": "x"}},
                ]
            ),
            gateway=gw,
        ).plan()
    with pytest.raises(InvalidRequestError, match="needs a rubric"):
        Runner(suite(metrics=[{"name": "judge"}]), gateway=gw).plan()
    with pytest.raises(InvalidRequestError, match="not a valid regular expression"):
        Runner(suite(metrics=[{"name": "regex", "pattern": "(["}]), gateway=gw).plan()


# -- the runner -----------------------------------------------------------------


def test_a_matrix_run_scores_and_stores_every_cell(
    gw: Gateway, models: dict[str, Counting]
) -> None:
    prompts = [
        {"name": "capital", "query": "What is the capital of {{ country }}?"},
        {"name": "terse", "query": "{{ country }}: capital city, one word."},
    ]
    s = suite(prompts=prompts, models=["good:m", "bad:m"], repeats=2)
    run = Runner(s, gateway=gw).run()
    assert run.status == "done" and len(run.rows) == 2 * 2 * 5 * 2 == run.total
    cells = {c.cell: c for c in summarize(run)}
    assert len(cells) == 4
    good_cell = next(c for k, c in cells.items() if "good:m" in k and k.startswith("capital#"))
    bad_cell = next(c for k, c in cells.items() if "bad:m" in k and k.startswith("capital#"))
    assert good_cell.metrics["contains"].mean == 1.0
    assert bad_cell.metrics["contains"].mean == 0.0
    assert good_cell.metrics["token_f1"].passed is True
    assert bad_cell.metrics["token_f1"].passed is False
    # Temperature 0 by default, a seed per repeat: repeat 1 is a different call, not a cache hit.
    assert models["good"].calls == 2 * 5 * 2
    stored = gw.store.eval_runs()
    assert stored[0]["id"] == run.id and stored[0]["done"] == 40
    table = summary_table(run)
    assert "contains" in table and "✗" in table and "✓" in table


def test_identical_calls_come_from_the_cache(gw: Gateway, models: dict[str, Counting]) -> None:
    first = Runner(suite(), gateway=gw).run()
    assert models["good"].calls == 5 and not any(r.cached for r in first.rows)
    second = Runner(suite(), gateway=gw).run()
    assert models["good"].calls == 5 and all(r.cached for r in second.rows)
    assert sorted(r.output for r in second.rows) == sorted(r.output for r in first.rows)
    Runner(suite(), gateway=gw, cache=False).run()
    assert models["good"].calls == 10


def test_remote_models_run_concurrently_up_to_the_limit(store: Store) -> None:
    slow = Counting(good, delay=0.05)
    gateway = Gateway(settings=Settings(), store=store, providers={"r": slow}, sleep=lambda s: 0)
    cases = [{"id": str(i), "vars": {"country": "France"}, "expected": "Paris"} for i in range(12)]
    Runner(suite(models=["r:m"], cases=cases), gateway=gateway, concurrency=3, cache=False).run()
    assert slow.calls == 12 and slow.max_active == 3


def test_provider_errors_are_rows_not_crashes_and_resume_redoes_them(
    store: Store,
) -> None:
    failed: list[str] = []

    def flaky(request: ChatRequest) -> str:
        if "Japan" in request.messages[-1].text and not failed:
            failed.append("Japan")
            from outcrop.errors import ProviderError

            raise ProviderError("bad gateway", status_code=400)
        return good(request)

    model = Counting(flaky)
    gateway = Gateway(settings=Settings(), store=store, providers={"f": model}, sleep=lambda s: 0)
    run = Runner(suite(models=["f:m"]), gateway=gateway).run()
    errors = [r for r in run.rows if r.status == "error"]
    assert len(errors) == 1 and "bad gateway" in (errors[0].error or "")
    assert gate(run) == [
        "capital#" + run.rows[0].prompt.split("#")[1] + " × f:m: 1 case(s) failed to run"
    ]
    calls = model.calls
    resumed = Runner(suite(models=["f:m"]), gateway=gateway).run(resume=run.id[:8])
    assert resumed.id == run.id and model.calls == calls + 1
    assert all(r.status == "ok" for r in resumed.rows) and len(resumed.rows) == 5


def test_ctrl_c_stops_a_run_that_resumes_without_redoing_cases(store: Store) -> None:
    seen: list[str] = []

    def interrupt_on_third(request: ChatRequest) -> str:
        seen.append(_country(request))
        if len(seen) == 3:
            raise KeyboardInterrupt
        return good(request)

    model = Counting(interrupt_on_third)
    gateway = Gateway(settings=Settings(), store=store, providers={"k": model}, sleep=lambda s: 0)
    with pytest.raises(KeyboardInterrupt):
        Runner(suite(models=["k:m"]), gateway=gateway, concurrency=1).run()
    stopped = store.eval_runs()[0]
    assert stopped["status"] == "interrupted" and stopped["done"] == 2
    done = {r.case_id for r in load_run(gateway, stopped["id"]).rows}
    run = Runner(suite(models=["k:m"]), gateway=gateway).run(resume=stopped["id"])
    assert run.status == "done" and len(run.rows) == 5
    # Only the three unfinished cases were asked again.
    assert len(seen) == 3 + 3 and not done & {_country_of(c) for c in seen[3:]}


def _country_of(country: str) -> str:
    return str(list(CAPITALS).index(country) + 1)


def test_a_killed_run_resumes(tmp_path: Path, outcrop_home: Path) -> None:
    """A process killed mid-run (SIGKILL, no clean-up) leaves its finished cases usable."""
    script = tmp_path / "slow_run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import time
            from outcrop import Gateway, Settings, Store
            from outcrop.evals.runner import Runner
            from outcrop.evals.suite import Suite
            from outcrop.providers.testing import FunctionModel

            def answer(request):
                time.sleep(0.3)
                return "Paris"

            store = Store({str(outcrop_home / "outcrop.db")!r})
            gw = Gateway(settings=Settings(), store=store, providers={{"s": FunctionModel(answer)}})
            cases = [{{"id": str(i), "input": f"q{{i}}", "expected": "Paris"}} for i in range(40)]
            suite = Suite.model_validate({{"name": "slow", "models": ["s:m"], "cases": cases,
                                           "metrics": ["exact_match"], "concurrency": 1}})
            Runner(suite, gateway=gw).run()
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], env=dict(os.environ))
    store = Store(outcrop_home / "outcrop.db")
    deadline = time.time() + 60
    while time.time() < deadline:
        runs = store.eval_runs()
        if runs and runs[0]["done"] >= 4:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    killed = store.eval_runs()[0]
    assert killed["status"] == "running" and 4 <= killed["done"] < 40

    calls: list[str] = []

    def answer(request: ChatRequest) -> str:
        calls.append(request.messages[-1].text)
        return "Paris"

    gateway = Gateway(
        settings=Settings(), store=store, providers={"s": FunctionModel(answer)}, sleep=lambda s: 0
    )
    cases = [{"id": str(i), "input": f"q{i}", "expected": "Paris"} for i in range(40)]
    s = Suite.model_validate(
        {"name": "slow", "models": ["s:m"], "cases": cases, "metrics": ["exact_match"]}
    )
    run = Runner(s, gateway=gateway, cache=False).run(resume=killed["id"])
    assert run.status == "done" and len(run.rows) == 40
    assert len(calls) == 40 - killed["done"]
    assert summarize(run)[0].metrics["exact_match"].mean == 1.0
    store.close()


def test_a_corrupt_result_row_does_not_lose_the_rest(gw: Gateway) -> None:
    run = Runner(suite(), gateway=gw).run()
    gw.store._db.execute(
        "UPDATE eval_results SET data = '{\"prompt\": broken' WHERE run_id = ? AND case_id = '2'",
        (run.id,),
    )
    loaded = load_run(gw, run.id)
    assert len(loaded.rows) == 4 and len(loaded.corrupt) == 1
    assert loaded.corrupt[0].startswith("case 2 (")
    assert "1 unreadable result row(s) skipped" in summary_table(loaded)
    # Resuming redoes the unreadable row only.
    fixed = Runner(suite(), gateway=gw, cache=False).run(resume=run.id)
    assert len(fixed.rows) == 5 and not fixed.corrupt


def test_resume_refuses_another_suites_run_and_unknown_ids(gw: Gateway) -> None:
    run = Runner(suite(), gateway=gw).run()
    with pytest.raises(UserError, match="is of suite 'capitals', not 'other'"):
        Runner(suite(name="other"), gateway=gw).run(resume=run.id)
    with pytest.raises(UserError, match="No eval run 'zzzz'"):
        load_run(gw, "zzzz")


# -- judges ----------------------------------------------------------------------


def test_verdicts_parse_from_json_fences_and_prose() -> None:
    assert parse_verdict('{"reason": "ok", "score": 4}') == (4, "ok")
    assert parse_verdict('```json\n{"score": "3", "reason": "meh"}\n```') == (3, "meh")
    assert parse_verdict("I'd give it a Score: 2 because it is vague.") is not None
    assert parse_verdict('{"score": 9, "reason": "x"}') is None  # off the scale
    assert parse_verdict("no idea") is None
    schema = verdict_schema()
    assert schema["required"] == ["reason", "score"]
    assert schema["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]


def test_a_judge_that_rambles_is_asked_again_then_recorded_as_missing(store: Store) -> None:
    replies = iter(["Well, it depends.", "Still thinking…", '{"reason": "fine", "score": 4}'])
    model = FunctionModel(lambda r: next(replies))
    gateway = Gateway(settings=Settings(), store=store, providers={"j": model}, sleep=lambda s: 0)
    judge = Judge(gateway, "j:m")
    missing = judge.grade("Is it right?", "Paris", question="Capital of France?")
    assert not missing.valid and missing.score is None and "no verdict" in missing.reason
    ok = judge.grade("Is it right?", "Paris")
    assert ok.valid and ok.score == 4 and ok.normalized == 0.75


def test_judge_metrics_in_a_run_and_missing_verdicts_are_counted(store: Store) -> None:
    def answer_or_judge(request: ChatRequest) -> str:
        if "grade the answer" in request.messages[0].text:
            chad = any("Chad" in m.text for m in request.messages)
            return "no verdict here" if chad else '{"reason": "r", "score": 5}'
        return good(request)

    gateway = Gateway(
        settings=Settings(), store=store, providers={"g": FunctionModel(answer_or_judge)}
    )
    s = suite(
        models=["g:m"],
        judge_model="g:m",
        metrics=[
            {"name": "judge", "rubric": "Names the capital.", "threshold": 0.9},
            "correctness",
        ],
    )
    run = Runner(s, gateway=gateway).run()
    cell = summarize(run)[0]
    assert cell.judge_invalid == 2  # one case, two judge metrics
    assert cell.metrics["judge"].mean == 1.0 and cell.metrics["judge"].n == 4
    chad = next(r for r in run.rows if r.case_id == "5")
    assert chad.scores["judge"] is None and "no verdict" in chad.reasons["judge"]
    traces = [t for t in store.recent(limit=100) if t.kind == "judge"]
    assert traces and all(t.parent_id for t in traces)


# -- gate and compare ---------------------------------------------------------------


def test_compare_flags_a_real_difference_between_runs(gw: Gateway) -> None:
    cases = [
        {"id": str(i), "vars": {"country": c}, "expected": p}
        for i, (c, p) in enumerate(list(CAPITALS.items()) * 3)
    ]
    a = Runner(suite(models=["bad:m"], cases=cases), gateway=gw).run()
    b = Runner(suite(models=["good:m"], cases=cases), gateway=gw).run()
    result = compare_runs(a, b)
    verdicts = {c.metric: c.verdict for _, c in result.comparisons}
    assert verdicts["contains"] == "improved" and verdicts["token_f1"] == "improved"
    backwards = compare_runs(b, a)
    assert {c.metric: c.verdict for _, c in backwards.comparisons}["contains"] == "regressed"
    same = compare_runs(b, b)
    assert {c.verdict for _, c in same.comparisons} <= {"identical", "no significant change"}
    assert "improved" in result.table()
    failures = gate(a, baseline=b)
    assert any("contains regressed" in f for f in failures)
    assert any("token_f1 mean 0.000 is under its threshold 0.2" in f for f in failures)
    assert gate(b, baseline=b) == []


def test_compare_two_cells_of_one_run_and_name_the_cells_when_ambiguous(gw: Gateway) -> None:
    cases = [
        {"id": str(i), "vars": {"country": c}, "expected": p}
        for i, (c, p) in enumerate(list(CAPITALS.items()) * 2)
    ]
    run = Runner(suite(models=["good:m", "bad:m"], cases=cases), gateway=gw).run()
    result = compare_runs(run, run, a_model="bad:m", b_model="good:m")
    assert {c.metric: c.verdict for _, c in result.comparisons}["contains"] == "improved"
    other = Runner(suite(models=["good:m"]), gateway=gw).run()
    # Two prompts picked in runs of two models: the cells pair by model.
    two = [{"name": "x", "query": "{{ country }}?"}, {"name": "y", "query": "{{ country }}!"}]
    both = Runner(suite(models=["good:m", "bad:m"], prompts=two[:1]), gateway=gw).run()
    paired = compare_runs(run, both)
    assert {label.split(" → ")[0].split(" × ")[1] for label, _ in paired.comparisons} == {
        "good:m",
        "bad:m",
    }
    ambiguous = Runner(suite(models=["good:m"], prompts=two), gateway=gw).run()
    with pytest.raises(InvalidRequestError, match="pick one on each side"):
        compare_runs(run, ambiguous)
    with pytest.raises(InvalidRequestError, match="has no cell for prompt=any model=nope"):
        compare_runs(run, other, a_model="nope")
    failures = gate(other, baseline=ambiguous)
    assert any(f.startswith(f"cannot compare with {ambiguous.id[:8]}") for f in failures)


def test_a_run_scores_the_model_it_names_never_a_fallback(store: Store) -> None:
    from outcrop.errors import ProviderError

    def down(request: ChatRequest) -> str:
        raise ProviderError("model a is down", status_code=400)

    gateway = Gateway(
        settings=Settings(fallbacks=["good:m"]),
        store=store,
        providers={"a": FunctionModel(down), "good": FunctionModel(good)},
        sleep=lambda s: 0,
    )
    run = Runner(suite(models=["a:m"]), gateway=gateway).run()
    assert {r.status for r in run.rows} == {"error"}  # not good:m's answers scored as a:m's
    again = Runner(suite(models=["a:m"]), gateway=gateway).run()
    assert not any(r.cached for r in again.rows)  # and nothing was cached for it


def test_resume_refuses_a_changed_plan_and_the_gate_sees_unreadable_rows(gw: Gateway) -> None:
    run = Runner(suite(), gateway=gw).run()
    with pytest.raises(UserError, match="different plan"):
        Runner(suite(), gateway=gw, limit=2).run(resume=run.id)
    changed = suite(cases=[{"vars": {"country": "France"}, "expected": "Lyon"}])
    with pytest.raises(UserError, match="different plan"):
        Runner(changed, gateway=gw).run(resume=run.id)
    assert gate(load_run(gw, run.id)) == []
    gw.store._db.execute(
        "UPDATE eval_results SET data = json_set(data, '$.scores', json('[1]')) "
        "WHERE run_id = ? AND case_id = '1'",
        (run.id,),
    )
    loaded = load_run(gw, run.id)
    assert len(loaded.corrupt) == 1 and "unreadable" in gate(loaded)[0]
    summary_table(loaded)  # still renders


def test_blank_expected_answers_do_not_count_and_labels_keep_metric_rules(gw: Gateway) -> None:
    with pytest.raises(InvalidRequestError, match="needs 'expected' in every case; case 2"):
        Runner(
            suite(
                cases=[
                    {"vars": {"country": "Peru"}, "expected": "Lima"},
                    {"vars": {"country": "Chad"}, "expected": "  "},
                ]
            ),
            gateway=gw,
        ).plan()
    labelled = suite(metrics=[{"name": "tool_calls", "label": "tools_f1"}], agent={})
    Runner(labelled, gateway=gw).plan()  # no calls expected is a valid expectation
    with pytest.raises(InvalidRequestError, match="bogus"):
        Runner(
            suite(metrics=[{"name": "json_schema", "schema": {"type": "bogus"}}]), gateway=gw
        ).plan()
