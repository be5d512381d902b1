"""The predictive-ML baseline: loaders, the split, the scores, the prompts, the CLI."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from outcrop import Gateway, Settings, Store
from outcrop.cli._common import Ctx
from outcrop.cli.eval_baseline import baseline
from outcrop.errors import InvalidRequestError, MissingExtraError, UnknownModelError, UserError
from outcrop.evals.baseline import (
    DatasetError,
    LabelledText,
    few_shot_examples,
    label_schema,
    load_labelled,
    run_baseline,
    stratified_split,
)
from outcrop.providers.testing import FunctionModel
from outcrop.types import ChatRequest

from .helpers import run

SMS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sms_spam_collection"
needs_sms = pytest.mark.skipif(
    not SMS.exists(), reason="needs ../shared/datasets/sms_spam_collection"
)


def L(text: str, label: str) -> LabelledText:
    return LabelledText(text, label)


TRAIN = [
    L("win free cash now", "spam"),
    L("free prize claim today", "spam"),
    L("urgent free entry", "spam"),
    L("see you at lunch", "ham"),
    L("are we still on for tonight", "ham"),
    L("call me when you are home", "ham"),
]
# A keyword rule ("free" means spam) gets five of these six right: it calls the fourth spam.
TEST = [
    L("win free cash", "spam"),
    L("free tickets now", "spam"),
    L("see you at lunch", "ham"),
    L("free to talk later?", "ham"),
    L("call me", "ham"),
    L("hello", "ham"),
]


def case_text(request: ChatRequest) -> str:
    return request.messages[-1].text.removeprefix("Text: ")


def answer(label: str) -> str:
    return json.dumps({"label": label})


def keyword_rule(request: ChatRequest) -> str:
    return answer("spam" if "free" in case_text(request) else "ham")


def gateway_with(store: Store, fn: FunctionModel) -> Gateway:
    return Gateway(settings=Settings(default_model="fn"), store=store, providers={"fn": fn})


# --------------------------------------------------------------------------- scores


def test_scores_match_hand_computed_values(store: Store):
    rule = FunctionModel(keyword_rule)
    always_ham = FunctionModel(lambda request: answer("ham"))
    gw = Gateway(store=store, providers={"rule": rule, "ham": always_ham})
    result = run_baseline(gw, TRAIN, TEST, models=["rule", "ham"])

    by_rule = result.row("zero-shot", "rule")
    # spam: precision 2/3, recall 1 → F1 0.8; ham: precision 1, recall 3/4 → F1 6/7.
    assert by_rule.accuracy == pytest.approx(5 / 6)
    assert by_rule.macro_f1 == pytest.approx((0.8 + 6 / 7) / 2)
    assert (by_rule.n, by_rule.invalid, by_rule.sample, by_rule.cost_usd) == (6, 0, False, 0.0)
    by_ham = result.row("zero-shot", "ham")
    # ham: precision 4/6, recall 1 → F1 0.8; spam never predicted → F1 0.
    assert by_ham.accuracy == pytest.approx(4 / 6)
    assert by_ham.macro_f1 == pytest.approx(0.4)
    assert by_rule.latency_ms_p50 is not None and by_rule.latency_ms_per_case > 0

    classic = result.row("tfidf+logreg")
    assert classic.model.startswith("scikit-learn ")
    assert classic.n == 6 and not classic.sample and classic.invalid is None
    assert classic.train_seconds is not None and classic.train_seconds > 0
    assert 0 <= classic.accuracy <= 1 and 0 <= classic.macro_f1 <= 1
    assert [r.method for r in result.rows] == ["tfidf+logreg", "zero-shot", "zero-shot"]
    assert result.notes == []  # the classic model converged


def test_answers_outside_the_labels_are_invalid_misses(store: Store):
    truth = {case.text: case.label for case in TEST}

    def oracle_but(request: ChatRequest) -> str:
        text = case_text(request)
        if text == "hello":
            return answer("eggs")  # not a label
        if text == "call me":
            return "not JSON at all"
        return answer(truth[text])

    gw = gateway_with(store, FunctionModel(oracle_but))
    row = run_baseline(gw, TRAIN, TEST, models=["fn"]).row("zero-shot")
    assert row.invalid == 2
    assert row.accuracy == pytest.approx(4 / 6)
    # spam: F1 1; ham: precision 2/2, recall 2/4 → F1 2/3. "eggs" is no class of its own.
    assert row.macro_f1 == pytest.approx((1 + 2 / 3) / 2)


def test_each_call_is_constrained_greedy_and_seeded(store: Store):
    fn = FunctionModel(keyword_rule)
    run_baseline(gateway_with(store, fn), TRAIN, TEST, models=["fn"], seed=7)
    assert len(fn.requests) == len(TEST)
    for request, case in zip(fn.requests, TEST, strict=True):
        assert request.temperature == 0 and request.seed == 7
        assert request.response_format is not None
        assert request.response_format.json_schema == label_schema(["ham", "spam"])
        assert [m.role for m in request.messages] == ["system", "user"]
        assert request.messages[-1].text == f"Text: {case.text}"
    system = fn.requests[0].messages[0].text
    assert "- ham\n- spam" in system
    assert "Examples" not in system
    assert all(r.messages[0].text == system for r in fn.requests)  # one shared prefix


def test_few_shot_prompt_holds_examples_of_distinct_labels(store: Store):
    fn = FunctionModel(keyword_rule)
    result = run_baseline(gateway_with(store, fn), TRAIN, TEST, models=["fn"], few_shot=2, seed=3)
    assert [(r.method, r.n) for r in result.rows[1:]] == [("zero-shot", 6), ("few-shot", 6)]
    assert result.few_shot == 2
    zero, few = fn.requests[0].messages[0].text, fn.requests[len(TEST)].messages[0].text
    examples = few_shot_examples(TRAIN, 2, seed=3)
    assert {e.label for e in examples} == {"ham", "spam"}
    assert few.startswith(zero)
    for example in examples:
        assert f"Text: {example.text}\nAnswer: {answer(example.label)}" in few
    assert sum(case.text in few for case in TRAIN) == 2
    assert all(r.messages[0].text == few for r in fn.requests[len(TEST) :])
    assert all(r.messages[-1].text.startswith("Text: ") for r in fn.requests)


def test_few_shot_examples_are_seeded_and_cover_labels():
    rows = [L(f"a{i}", "a") for i in range(5)] + [L(f"b{i}", "b") for i in range(2)]
    rows.append(L("c0", "c"))
    three = few_shot_examples(rows, 3, seed=0)
    assert sorted(e.label for e in three) == ["a", "b", "c"]
    six = few_shot_examples(rows, 6, seed=0)
    assert sorted(e.label for e in six) == ["a", "a", "a", "b", "b", "c"]
    assert len(set(six)) == 6
    assert few_shot_examples(rows, 6, seed=0) == six
    assert len(few_shot_examples(rows, 50, seed=0)) == len(rows)
    assert {tuple(few_shot_examples(rows, 2, seed=s)) for s in range(10)} != {tuple(three[:2])}


def test_the_classic_model_is_also_scored_on_the_llm_sample(store: Store):
    # The classic model calls every "alpha" text a and every "beta" text b; so does the
    # fake LLM. On the same cases the two must score the same, whatever the sample.
    train = [L("alpha", "a")] * 3 + [L("beta", "b")] * 3
    test = [L(f"alpha x{i}", "a" if i % 3 else "b") for i in range(10)]
    test += [L(f"beta y{i}", "b" if i % 2 else "a") for i in range(10)]

    def mimic(request: ChatRequest) -> str:
        return answer("a" if case_text(request).startswith("alpha") else "b")

    accuracies = set()
    for seed in range(6):
        fn = FunctionModel(mimic)
        result = run_baseline(
            gateway_with(store, fn), train, test, models=["fn"], limit=7, seed=seed
        )
        full, sample = result.row("tfidf+logreg"), result.row("tfidf+logreg", sample=True)
        llm = result.row("zero-shot")
        assert (full.n, full.sample, sample.n, sample.sample) == (20, False, 7, True)
        assert (llm.n, llm.sample, result.n_sample, result.n_test) == (7, True, 7, 20)
        assert (llm.accuracy, llm.macro_f1) == (sample.accuracy, sample.macro_f1)
        seen = [case_text(r) for r in fn.requests]
        assert len(set(seen)) == 7 and set(seen) <= {c.text for c in test}
        accuracies.add(llm.accuracy)
    assert len(accuracies) > 1  # the samples differ by seed, so the equality means something


def test_limit_at_or_above_the_test_size_scores_everything_once(store: Store):
    fn = FunctionModel(keyword_rule)
    result = run_baseline(gateway_with(store, fn), TRAIN, TEST, models=["fn"], limit=100)
    assert [(r.method, r.n, r.sample) for r in result.rows] == [
        ("tfidf+logreg", 6, False),
        ("zero-shot", 6, False),
    ]


def test_table_and_dict(store: Store):
    result = run_baseline(
        gateway_with(store, FunctionModel(keyword_rule)), TRAIN, TEST, models=["fn"], limit=3
    )
    lines = result.table().splitlines()
    assert lines[0].split() == [
        "method",
        "model",
        "cases",
        "accuracy",
        "macro_f1",
        "ms/case",
        "p50_ms",
        "cost_usd",
        "train_s",
        "invalid",
    ]
    assert lines[1].startswith("tfidf+logreg") and "6 (all)" in lines[1]
    assert "3 (sample)" in lines[2] and lines[3].startswith("zero-shot     fn")
    assert len({len(line) for line in lines[1:]}) <= 2  # aligned (trailing dashes vary)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["n_labels"] == 2 and data["n_sample"] == 3 and len(data["rows"]) == 3
    assert set(data["rows"][2]) >= {
        "method",
        "model",
        "n",
        "accuracy",
        "macro_f1",
        "latency_ms_per_case",
        "cost_usd",
        "train_seconds",
        "invalid",
    }


def test_bad_arguments(store: Store):
    gw = gateway_with(store, FunctionModel(keyword_rule))
    with pytest.raises(UnknownModelError):
        run_baseline(gw, TRAIN, TEST, models=["nope:model"])
    with pytest.raises(InvalidRequestError, match="one label"):
        run_baseline(gw, [L("x", "a"), L("y", "a")], TEST, models=["fn"])
    with pytest.raises(InvalidRequestError, match="test split has no rows"):
        run_baseline(gw, TRAIN, [], models=["fn"])
    with pytest.raises(InvalidRequestError, match="limit"):
        run_baseline(gw, TRAIN, TEST, models=["fn"], limit=0)
    with pytest.raises(InvalidRequestError, match="few_shot"):
        run_baseline(gw, TRAIN, TEST, models=["fn"], few_shot=-1)


def test_without_scikit_learn_the_error_names_the_extra(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    gw = gateway_with(store, FunctionModel(keyword_rule))
    with pytest.raises(MissingExtraError, match=r"pip install 'outcrop\[eval\]'"):
        run_baseline(gw, TRAIN, TEST, models=["fn"])


# --------------------------------------------------------------------------- split


def test_stratified_split_keeps_label_shares():
    rows = [L(f"h{i}", "ham") for i in range(50)] + [L(f"s{i}", "spam") for i in range(10)]
    rows.append(L("lonely", "rare"))
    train, test = stratified_split(rows, test_size=0.2, seed=0)
    assert sorted(r.label for r in test).count("ham") == 10
    assert sorted(r.label for r in test).count("spam") == 2
    assert L("lonely", "rare") in train  # a label with one row stays in train
    assert set(train) | set(test) == set(rows) and not set(train) & set(test)
    assert [r for r in rows if r in test] == test  # file order kept
    assert stratified_split(rows, 0.2, seed=0) == (train, test)
    assert stratified_split(rows, 0.2, seed=1) != (train, test)


@pytest.mark.parametrize("size", [0, 1, 1.5, -0.1])
def test_stratified_split_rejects_bad_sizes(size: float):
    with pytest.raises(InvalidRequestError, match="test_size"):
        stratified_split(TRAIN, test_size=size)


def test_stratified_split_of_too_few_rows():
    with pytest.raises(InvalidRequestError, match="too few to split"):
        stratified_split([L("a", "x"), L("b", "y")], test_size=0.2)


# --------------------------------------------------------------------------- loading


def test_csv_with_header_and_quoted_fields(tmp_path: Path):
    path = tmp_path / "data.csv"
    path.write_text('id,text,label\n1,"Hello, world",greet\n2,"two\nlines ""quoted""",other\n')
    rows = load_labelled(path, text_column="text", label_column="label")
    assert list(rows) == [L("Hello, world", "greet"), L('two\nlines "quoted"', "other")]
    assert rows.skipped == [] and rows.skipped_summary() is None
    assert load_labelled(path, text_column=1, label_column=2, header=True) == rows


def test_headerless_tsv_keeps_quotes(tmp_path: Path):
    path = tmp_path / "SMSSpam"  # no suffix: a tab on the first line makes it TSV
    path.write_text('ham\t"Hello" she said, "hi\nspam\tWin a "free" prize\n\nham\tok lar...\n')
    rows = load_labelled(path, text_column=1, label_column=0)
    assert list(rows) == [
        L('"Hello" she said, "hi', "ham"),
        L('Win a "free" prize', "spam"),
        L("ok lar...", "ham"),
    ]


def test_tsv_suffix_and_explicit_delimiter(tmp_path: Path):
    tsv = tmp_path / "data.tsv"
    tsv.write_text("text\tlabel\nfirst\ta\nsecond\tb\n")
    assert load_labelled(tsv, text_column="text", label_column="label")[1] == L("second", "b")
    semi = tmp_path / "data.txt"
    semi.write_text("label;text\na;one, two\n")
    rows = load_labelled(semi, text_column="text", label_column="label", delimiter=";")
    assert list(rows) == [L("one, two", "a")]


def test_jsonl_fields(tmp_path: Path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "good film", "label": 1}\n\n{"text": "bad film", "label": 0}\n')
    rows = load_labelled(path, text_column="text", label_column="label")
    assert list(rows) == [L("good film", "1"), L("bad film", "0")]


def test_rows_without_a_label_or_text_are_skipped_and_counted(tmp_path: Path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\nfine,a\nno label here,\n,b\nshort\nalso fine,b\n")
    rows = load_labelled(path, text_column="text", label_column="label")
    assert list(rows) == [L("fine", "a"), L("also fine", "b")]
    assert [(s.line, s.reason) for s in rows.skipped] == [
        (3, "no label"),
        (4, "no text"),
        (5, "no label"),
    ]
    assert rows.skipped_summary() == f"{path}: skipped 3 rows (first: line 3, no label)"
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text('{"t": "x", "l": "a"}\n{"t": "y"}\n{"t": "z", "l": null}\n')
    rows = load_labelled(jsonl, text_column="t", label_column="l")
    assert [(s.line, s.reason) for s in rows.skipped] == [(2, "no label"), (3, "no label")]


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "columns", "message", "line"),
    [
        ("gone.csv", None, ("text", "label"), "does not exist; check the path", None),
        ("empty.csv", "\n  \n", ("text", "label"), "the file is empty", None),
        (
            "cols.csv",
            "body,category\nx,a\n",
            ("text", "category"),
            "no column 'text' in the header row; its columns are 'body', 'category'",
            1,
        ),
        ("head.csv", "text,label\n", ("text", "label"), "a header row but no data rows", None),
        (
            "wide.tsv",
            "ham\thello\n",
            (2, 0),
            "no column at position 2: the first row has 2 column(s), positions 0 to 1",
            1,
        ),
        (
            "nolabels.csv",
            "text,label\nx,\ny,\n",
            ("text", "label"),
            "no usable rows: all 2 lack a label or a text (first: line 2, no label)",
            None,
        ),
        (
            "bad.jsonl",
            '{"text": "x", "label": "a"}\n{"text": oops}\n',
            ("text", "label"),
            "not valid JSON: Expecting value (column 10); fix or remove that line",
            2,
        ),
        (
            "fields.jsonl",
            '{"body": "x", "label": "a"}\n',
            ("text", "label"),
            "no field 'text' in the first record; its fields are 'body', 'label'",
            1,
        ),
        (
            "list.jsonl",
            '["x", "a"]\n',
            ("text", "label"),
            "a JSON list, not an object",
            1,
        ),
        ("pos.jsonl", '{"t": "x", "l": "a"}\n', (0, 1), "read by field name, not position", None),
        ("latin1.csv", b"text,label\ncaf\xe9,a\n", ("text", "label"), "not valid UTF-8", 2),
    ],
)
def test_bad_files_name_the_file_line_and_fix(
    tmp_path: Path,
    name: str,
    content: str | bytes | None,
    columns: tuple[str | int, str | int],
    message: str,
    line: int | None,
):
    path = tmp_path / name if content is None else write(tmp_path, name, content)
    with pytest.raises(DatasetError) as info:
        load_labelled(path, text_column=columns[0], label_column=columns[1])
    error = info.value
    assert isinstance(error, UserError)
    assert message in str(error)
    assert str(error).startswith(f"{path}:{line}: " if line else f"{path}: ")
    assert (error.path, error.line) == (path, line)


def test_column_names_need_a_header(tmp_path: Path):
    path = write(tmp_path, "data.csv", "text,label\nx,a\n")
    with pytest.raises(DatasetError, match="give 0-based column positions"):
        load_labelled(path, text_column="text", label_column="label", header=False)


def test_bad_column_arguments(tmp_path: Path):
    path = write(tmp_path, "data.csv", "text,label\nx,a\n")
    with pytest.raises(InvalidRequestError, match="two different columns"):
        load_labelled(path, text_column="text", label_column="text")
    with pytest.raises(InvalidRequestError, match="count from 0"):
        load_labelled(path, text_column=-1, label_column=0)
    with pytest.raises(InvalidRequestError, match="give one character"):
        load_labelled(path, text_column=0, label_column=1, delimiter="::")
    jsonl = write(tmp_path, "data.jsonl", '{"t": "x", "l": "a"}\n')
    with pytest.raises(InvalidRequestError, match="header applies to CSV and TSV"):
        load_labelled(jsonl, text_column="t", label_column="l", header=True)


@needs_sms
def test_the_real_sms_file_loads_whole():
    rows = load_labelled(SMS / "SMSSpamCollection", text_column=1, label_column=0)
    assert len(rows) == 5574 and not rows.skipped
    assert sum(r.label == "spam" for r in rows) == 747
    assert any(r.text.startswith('"') for r in rows)  # quotes kept as text


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
@needs_sms
def test_real_local_model_answers_only_labels():
    rows = load_labelled(SMS / "SMSSpamCollection", text_column=1, label_column=0)
    train, test = stratified_split(rows, test_size=0.2, seed=0)
    result = run_baseline(
        Gateway(), train, test, models=["local:smollm2-135m"], limit=20, few_shot=2
    )
    for method in ("zero-shot", "few-shot"):
        row = result.row(method)
        assert row.n == 20 and row.invalid == 0
        assert 0 <= row.accuracy <= 1 and 0 <= row.macro_f1 <= 1
    assert result.row("tfidf+logreg", sample=True).n == 20


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_model(monkeypatch: pytest.MonkeyPatch, store: Store) -> FunctionModel:
    fn = FunctionModel(keyword_rule)
    gw = gateway_with(store, fn)
    monkeypatch.setattr(Ctx, "gateway", property(lambda self: gw))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    return fn


def csv_files(tmp_path: Path) -> tuple[Path, Path]:
    def body(rows: list[LabelledText]) -> str:
        return "text,label\n" + "".join(f"{r.text},{r.label}\n" for r in rows)

    return write(tmp_path, "train.csv", body(TRAIN)), write(tmp_path, "test.csv", body(TEST))


def test_cli_eval_baseline(cli_model: FunctionModel, capsys, tmp_path: Path):
    train, test = csv_files(tmp_path)
    args = ["eval", "baseline", str(train), "--test", str(test)]
    args += ["--text-column", "text", "--label-column", "label", "--few-shot", "2", "--json"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    data = json.loads(out)
    assert [(r["method"], r["model"]) for r in data["rows"][1:]] == [
        ("zero-shot", "fn"),
        ("few-shot", "fn"),
    ]
    assert data["rows"][1]["accuracy"] == pytest.approx(5 / 6)
    code, out, err = run(
        capsys,
        "eval",
        "baseline",
        str(tmp_path / "gone.csv"),
        "--text-column",
        "text",
        "--label-column",
        "label",
    )
    assert code == 1 and "does not exist; check the path" in err


def test_cli_command_object(cli_model: FunctionModel, tmp_path: Path):
    train, test = csv_files(tmp_path)
    runner = CliRunner()
    common = ["--text-column", "text", "--label-column", "label"]
    result = runner.invoke(baseline, [str(train), "--test", str(test), *common, "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert "3 (sample)" in result.output and "zero-shot" in result.output
    assert len(cli_model.requests) == 3

    tsv = write(tmp_path, "sms", "".join(f"{r.label}\t{r.text}\n" for r in TRAIN + TEST))
    result = runner.invoke(
        baseline, [str(tsv), "--text-column", "1", "--label-column", "0", "--test-size", "0.5"]
    )
    assert result.exit_code == 0, result.output
    assert "6 (all)" in result.output  # 12 rows, half of each label held out

    result = runner.invoke(
        baseline, [str(train), "--test", str(test), "--test-size", "0.3", *common]
    )
    assert isinstance(result.exception, InvalidRequestError)
    assert "not both" in str(result.exception)
