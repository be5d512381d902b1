"""Predictive ML vs generative AI, measured on the same labelled data.

::

    train split ─► TF-IDF (word 1–2 grams) + logistic regression ─► predictions ─┐
                                                                                  ├─► accuracy,
    test split ──► each LLM through Gateway.chat, answer constrained to a label ──┘   macro-F1,
                   (zero-shot; few-shot with k labelled examples from train)          latency, cost

The classic model trains on the whole train split and is scored on the whole
test split. LLM calls are slow, so ``limit`` scores them on a seeded sample of
the test split; the classic model is then scored on that same sample too, so
every figure has a peer measured on the same cases.

Every LLM call goes through :meth:`Gateway.chat` at temperature 0 with a fixed
seed and a JSON schema whose ``label`` is an enum of the real labels; local
llama.cpp models decode under that grammar, so their answers are always a
label. The system prompt (the labels, then the few-shot examples) is the same
for every case and the case's text comes last, so llama.cpp reuses the shared
prompt prefix from one case to the next.

Loading data::

    rows = load_labelled("train.csv", text_column="text", label_column="category")
    spam = load_labelled("SMSSpamCollection", text_column=1, label_column=0)  # headerless TSV
    train, test = stratified_split(spam, test_size=0.2, seed=0)
    result = run_baseline(Gateway(), train, test, models=["local:smollm2-135m"], limit=100)
    print(result.table())
"""

from __future__ import annotations

import csv
import io
import json
import random
import statistics
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import InvalidRequestError, MissingExtraError, UserError
from ..types import Message, ResponseFormat

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = [
    "BaselineResult",
    "BaselineRow",
    "DatasetError",
    "LabelledRows",
    "LabelledText",
    "SkippedRow",
    "few_shot_examples",
    "label_schema",
    "load_labelled",
    "run_baseline",
    "stratified_split",
    "system_prompt",
]

Column = str | int
Method = Literal["tfidf+logreg", "zero-shot", "few-shot"]
Progress = Callable[[str, int, int], None]

CLASSIC: Method = "tfidf+logreg"
_TSV_SUFFIXES = (".tsv", ".tab")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_INVALID = "\x00invalid"  # stands for an answer outside the label set; never a real label

SYSTEM_PROMPT = """\
Classify the text into exactly one of these labels:
{labels}

Answer with JSON: {{"label": "<one of the labels above, written exactly>"}}."""

EXAMPLES_PROMPT = """

Examples:
{examples}"""

USER_PROMPT = "Text: {text}"


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class LabelledText:
    """One case: a text and its true label."""

    text: str
    label: str


@dataclass(frozen=True)
class SkippedRow:
    """A data row left out of a loaded file, and why (``line`` counts from 1)."""

    line: int
    reason: str


class LabelledRows(list[LabelledText]):
    """The rows of a labelled file; a list, plus the rows that were skipped and why."""

    def __init__(
        self, rows: Iterable[LabelledText], *, source: str, skipped: Sequence[SkippedRow] = ()
    ):
        super().__init__(rows)
        self.source = source
        self.skipped = list(skipped)

    def skipped_summary(self) -> str | None:
        """One line about the skipped rows, or None when none were."""
        if not self.skipped:
            return None
        first = self.skipped[0]
        s = "" if len(self.skipped) == 1 else "s"
        return (
            f"{self.source}: skipped {len(self.skipped)} row{s} "
            f"(first: line {first.line}, {first.reason})"
        )


class DatasetError(UserError):
    """A labelled file that cannot be used: missing, empty, malformed, or an unknown column.

    ``path`` is the file and ``line`` the line concerned, where there is one.
    """

    def __init__(self, message: str, *, path: Path, line: int | None = None):
        self.path = path
        self.line = line
        where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


def load_labelled(
    path: str | Path,
    *,
    text_column: Column,
    label_column: Column,
    delimiter: str | None = None,
    header: bool | None = None,
) -> LabelledRows:
    """Read (text, label) rows from a CSV, TSV or JSONL file.

    The format comes from ``delimiter`` when given, else from the suffix
    (``.csv``; ``.tsv``/``.tab``; ``.jsonl``/``.ndjson``), else from the content:
    JSONL when the first line is an object, TSV when it holds a tab, CSV otherwise.
    Tab-separated files are read without quote handling (quotes are text, as in
    the SMS Spam Collection); CSV files with the usual double-quote rules.

    Columns are header names or 0-based positions. ``header`` says whether the
    first row names the columns; by default it does when a column is given by name,
    and not when both are given by position. JSONL records are read by field name.

    Rows whose label or text is empty or missing are skipped and listed in
    ``.skipped``; :class:`DatasetError` (naming the file, the line and the fix) is
    raised for a missing or empty file, an unknown column, malformed content, or a
    file with no usable row.
    """
    path = Path(path)
    if text_column == label_column:
        raise InvalidRequestError(
            f"text_column and label_column are both {text_column!r}; name two different columns",
            field="label_column",
        )
    for name, column in (("text_column", text_column), ("label_column", label_column)):
        if isinstance(column, int) and column < 0:
            raise InvalidRequestError(
                f"{name} is {column}; positions count from 0 (the first column)", field=name
            )
    text = _read_text(path)
    if delimiter is not None and len(delimiter) != 1:
        raise InvalidRequestError(
            f"delimiter is {delimiter!r}; give one character, e.g. ',' or a tab",
            field="delimiter",
        )
    kind = _kind(path, text, delimiter)
    if kind == "jsonl":
        if header is not None:
            raise InvalidRequestError(
                "header applies to CSV and TSV files; JSONL records name their fields",
                field="header",
            )
        return _load_jsonl(path, text, text_column, label_column)
    return _load_delimited(path, text, kind, text_column, label_column, header)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DatasetError("the file does not exist; check the path", path=path)
    if path.is_dir():
        raise DatasetError("is a folder; give the labelled file inside it", path=path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(
            "not valid UTF-8 text (a binary file, or another encoding?); convert the file to UTF-8",
            path=path,
            line=line,
        ) from None
    if not text.strip():
        raise DatasetError(
            "the file is empty; give a file with one labelled text per row", path=path
        )
    return text


def _kind(path: Path, text: str, delimiter: str | None) -> str:
    """'jsonl', or the delimiter of a delimited file."""
    if delimiter is not None:
        return delimiter
    suffix = path.suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    if suffix in _TSV_SUFFIXES:
        return "\t"
    if suffix == ".csv":
        return ","
    first = next(line for line in text.splitlines() if line.strip())
    if first.lstrip().startswith("{"):
        return "jsonl"
    return "\t" if "\t" in first else ","


def _load_delimited(
    path: Path,
    text: str,
    delimiter: str,
    text_column: Column,
    label_column: Column,
    header: bool | None,
) -> LabelledRows:
    named = [c for c in (text_column, label_column) if isinstance(c, str)]
    if header is None:
        header = bool(named)
    if named and not header:
        raise DatasetError(
            f"column {named[0]!r} is a name, but the file is read without a header row; "
            "give 0-based column positions instead (e.g. 0 and 1), or read the header",
            path=path,
        )
    source = io.StringIO(text, newline="")
    if delimiter == "\t":  # TSV has no quoting: a quote is part of the text
        reader = csv.reader(source, delimiter=delimiter, quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(source, delimiter=delimiter)
    rows: list[LabelledText] = []
    skipped: list[SkippedRow] = []
    positions: tuple[int, int] | None = None
    kind = "TSV" if delimiter == "\t" else "CSV"
    try:
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if positions is None:
                positions = _positions(path, line, record, text_column, label_column, header)
                if header:
                    continue
            ti, li = positions
            label = record[li].strip() if li < len(record) else ""
            value = record[ti].strip() if ti < len(record) else ""
            if not label:
                skipped.append(SkippedRow(line, "no label"))
            elif not value:
                skipped.append(SkippedRow(line, "no text"))
            else:
                rows.append(LabelledText(value, label))
    except csv.Error as exc:
        raise DatasetError(
            f"not valid {kind}: {exc}; fix that line or choose the delimiter",
            path=path,
            line=reader.line_num,
        ) from None
    return _finish(path, rows, skipped, header_only=header and positions is not None)


def _positions(
    path: Path,
    line: int,
    first: list[str],
    text_column: Column,
    label_column: Column,
    header: bool,
) -> tuple[int, int]:
    """The 0-based positions of the text and label columns, checked against the first row."""
    names = [cell.strip() for cell in first]
    out: list[int] = []
    for column in (text_column, label_column):
        if isinstance(column, str):
            if column not in names:
                shown = ", ".join(repr(n) for n in names)
                raise DatasetError(
                    f"no column {column!r} in the header row; its columns are {shown}",
                    path=path,
                    line=line,
                )
            out.append(names.index(column))
        elif column >= len(first):
            row = "header row" if header else "first row"
            shown = f"; the header names {', '.join(repr(n) for n in names)}" if header else ""
            raise DatasetError(
                f"no column at position {column}: the {row} has {len(first)} column(s), "
                f"positions 0 to {len(first) - 1}{shown} (check the delimiter if that is "
                "too few)",
                path=path,
                line=line,
            )
        else:
            out.append(column)
    return out[0], out[1]


def _load_jsonl(path: Path, text: str, text_column: Column, label_column: Column) -> LabelledRows:
    for column in (text_column, label_column):
        if not isinstance(column, str):
            raise DatasetError(
                f"JSONL records are read by field name, not position ({column}); name the field",
                path=path,
            )
    rows: list[LabelledText] = []
    skipped: list[SkippedRow] = []
    checked = False
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"not valid JSON: {exc.msg} (column {exc.colno}); fix or remove that line",
                path=path,
                line=line,
            ) from None
        if not isinstance(record, dict):
            raise DatasetError(
                f"a JSON {type(record).__name__}, not an object; JSONL needs one object a line",
                path=path,
                line=line,
            )
        if not checked:
            for column in (text_column, label_column):
                if column not in record:
                    shown = ", ".join(repr(k) for k in record) or "none"
                    raise DatasetError(
                        f"no field {column!r} in the first record; its fields are {shown}",
                        path=path,
                        line=line,
                    )
            checked = True
        label = _scalar(record.get(label_column))
        value = _scalar(record.get(text_column))
        if not label:
            skipped.append(SkippedRow(line, "no label"))
        elif not value:
            skipped.append(SkippedRow(line, "no text"))
        else:
            rows.append(LabelledText(value, label))
    return _finish(path, rows, skipped, header_only=False)


def _scalar(value: object) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value).strip()


def _finish(
    path: Path, rows: list[LabelledText], skipped: list[SkippedRow], *, header_only: bool
) -> LabelledRows:
    if not rows:
        if skipped:
            first = skipped[0]
            raise DatasetError(
                f"no usable rows: all {len(skipped)} lack a label or a text "
                f"(first: line {first.line}, {first.reason}); check text_column and label_column",
                path=path,
            )
        raise DatasetError(
            "a header row but no data rows under it" if header_only else "no data rows",
            path=path,
        )
    return LabelledRows(rows, source=str(path), skipped=skipped)


def stratified_split(
    rows: Sequence[LabelledText], test_size: float = 0.2, seed: int = 0
) -> tuple[list[LabelledText], list[LabelledText]]:
    """Split into (train, test) keeping each label's share, for data with no test split.

    Each label gives ``round(n * test_size)`` of its rows to the test split (at
    most n - 1, so every label stays in train); both splits keep file order.
    """
    if not 0 < test_size < 1:
        raise InvalidRequestError(
            f"test_size is {test_size}; give the test share as a fraction, e.g. 0.2",
            field="test_size",
        )
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_label[row.label].append(i)
    rng = random.Random(seed)
    test_ids: set[int] = set()
    for label in sorted(by_label):
        ids = list(by_label[label])
        rng.shuffle(ids)
        test_ids.update(ids[: min(round(len(ids) * test_size), len(ids) - 1)])
    if not test_ids:
        raise InvalidRequestError(
            f"{len(rows)} rows are too few to split at test_size={test_size}; "
            "give a separate test file or more rows",
            field="test_size",
        )
    train = [row for i, row in enumerate(rows) if i not in test_ids]
    test = [row for i, row in enumerate(rows) if i in test_ids]
    return train, test


def few_shot_examples(train: Sequence[LabelledText], k: int, seed: int = 0) -> list[LabelledText]:
    """``k`` seeded examples from ``train``, covering as many distinct labels as possible.

    Labels are taken in a seeded order, one example each, and round again when
    ``k`` exceeds the number of labels.
    """
    by_label: dict[str, list[LabelledText]] = defaultdict(list)
    for row in train:
        by_label[row.label].append(row)
    rng = random.Random(seed)
    order = sorted(by_label)
    rng.shuffle(order)
    for label in order:
        rng.shuffle(by_label[label])
    picked: list[LabelledText] = []
    depth = 0
    while len(picked) < min(k, len(train)):
        for label in order:
            if depth < len(by_label[label]) and len(picked) < k:
                picked.append(by_label[label][depth])
        depth += 1
    return picked


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class BaselineRow:
    """One method's figures on ``n`` cases (``sample``: the seeded sample, not all of test).

    ``latency_ms_per_case`` is the time of all predictions over ``n`` (for the
    classic model, one batch prediction); ``latency_ms_p50`` the median single call
    (LLMs only). ``invalid`` counts LLM answers outside the label set.
    """

    method: Method
    model: str
    n: int
    sample: bool
    accuracy: float
    macro_f1: float
    latency_ms_per_case: float
    cost_usd: float | None
    train_seconds: float | None = None
    invalid: int | None = None
    latency_ms_p50: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BaselineResult:
    """The table: one row per method and model, plus what the figures rest on."""

    rows: list[BaselineRow]
    labels: list[str]
    n_train: int
    n_test: int
    n_sample: int
    seed: int
    few_shot: int
    notes: list[str] = field(default_factory=list)

    def row(self, method: Method, model: str | None = None, *, sample: bool = False) -> BaselineRow:
        """The row of ``method`` (and ``model``); for the classic model, pick the sample row
        with ``sample=True``."""
        for row in self.rows:
            if (
                row.method == method
                and (model is None or row.model == model)
                and (method != CLASSIC or row.sample == sample)
            ):
                return row
        raise KeyError(f"no {method} row for {model or 'any model'}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_sample": self.n_sample,
            "n_labels": len(self.labels),
            "seed": self.seed,
            "few_shot": self.few_shot,
            "rows": [row.to_dict() for row in self.rows],
            "notes": list(self.notes),
        }

    def table(self) -> str:
        """A plain, aligned text table."""
        head = [
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
        lines = [head]
        for r in self.rows:
            lines.append(
                [
                    r.method,
                    r.model,
                    f"{r.n} ({'sample' if r.sample else 'all'})",
                    f"{r.accuracy:.3f}",
                    f"{r.macro_f1:.3f}",
                    f"{r.latency_ms_per_case:.2f}",
                    "-" if r.latency_ms_p50 is None else f"{r.latency_ms_p50:.1f}",
                    "?" if r.cost_usd is None else f"{r.cost_usd:.4f}",
                    "-" if r.train_seconds is None else f"{r.train_seconds:.2f}",
                    "-" if r.invalid is None else str(r.invalid),
                ]
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        left = {0, 1}
        out = []
        for line in lines:
            cells = [
                cell.ljust(w) if i in left else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            ]
            out.append("  ".join(cells).rstrip())
        return "\n".join(out + [f"note: {note}" for note in self.notes])


# --------------------------------------------------------------------------- running


def _sklearn() -> Any:
    try:
        import sklearn  # type: ignore[import-untyped]
        from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
        from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
        from sklearn.metrics import f1_score  # type: ignore[import-untyped]
    except ImportError:
        raise MissingExtraError("The predictive-ML baseline", "eval") from None
    return sklearn, ConvergenceWarning, TfidfVectorizer, LogisticRegression, f1_score


def _scores(f1_score: Any, truth: Sequence[str], predicted: Sequence[str]) -> tuple[float, float]:
    """Accuracy and macro-F1. Macro-F1 averages over the labels that occur in the truth or
    among the valid predictions; an invalid answer is a miss for its true label."""
    correct = sum(t == p for t, p in zip(truth, predicted, strict=True))
    labels = sorted(set(truth) | (set(predicted) - {_INVALID}))
    macro = f1_score(list(truth), list(predicted), labels=labels, average="macro", zero_division=0)
    return correct / len(truth), float(macro)


def run_baseline(
    gateway: Gateway,
    train: Sequence[LabelledText],
    test: Sequence[LabelledText],
    *,
    models: Sequence[str],
    few_shot: int = 0,
    limit: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> BaselineResult:
    """Score TF-IDF + logistic regression and each of ``models`` on the same test cases.

    ``few_shot`` is the number of labelled examples (from ``train``) in each few-shot
    prompt: 0 runs zero-shot only, more runs zero-shot and few-shot. ``limit``
    scores the LLMs on a seeded sample of that many test cases; the classic model
    is then scored on all of test and on the same sample. ``progress(stage, done,
    total)`` is called after each case of each LLM run.
    """
    if not train or not test:
        empty = "train" if not train else "test"
        raise InvalidRequestError(f"the {empty} split has no rows", field=empty)
    if few_shot < 0:
        raise InvalidRequestError(f"few_shot is {few_shot}; give 0 or more", field="few_shot")
    if limit is not None and limit < 1:
        raise InvalidRequestError(f"limit is {limit}; give 1 or more", field="limit")
    train_labels = {row.label for row in train}
    if len(train_labels) < 2:
        raise InvalidRequestError(
            f"the train split has one label ({next(iter(train_labels))!r}); "
            "a classifier needs at least two",
            field="train",
        )
    for model in models:
        gateway.resolve(model)  # an unknown model fails now, not after training
    sklearn, convergence_warning, tfidf, logreg, f1_score = _sklearn()

    labels = sorted(train_labels | {row.label for row in test})
    notes: list[str] = []
    unseen = sorted(set(labels) - train_labels)
    if unseen:
        notes.append(
            f"{len(unseen)} test label(s) never occur in train (e.g. {unseen[0]!r}); "
            "the classic model cannot predict them"
        )
    sample: Sequence[LabelledText] = test
    if limit is not None and limit < len(test):
        picked = sorted(random.Random(seed).sample(range(len(test)), limit))
        sample = [test[i] for i in picked]
    sampled = sample is not test

    # The classic side: fitted once on train, timed.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", convergence_warning)
        t0 = time.perf_counter()
        vectorizer = tfidf(ngram_range=(1, 2), sublinear_tf=True)
        features = vectorizer.fit_transform([row.text for row in train])
        classifier = logreg(max_iter=5000)
        classifier.fit(features, [row.label for row in train])
        train_seconds = time.perf_counter() - t0
    if any(issubclass(w.category, convergence_warning) for w in caught):
        notes.append("logistic regression did not converge in 5,000 iterations")
    for w in caught:
        if not issubclass(w.category, convergence_warning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def classic(cases: Sequence[LabelledText], is_sample: bool) -> BaselineRow:
        t0 = time.perf_counter()
        predicted = [
            str(p) for p in classifier.predict(vectorizer.transform([c.text for c in cases]))
        ]
        elapsed = time.perf_counter() - t0
        accuracy, macro = _scores(f1_score, [c.label for c in cases], predicted)
        return BaselineRow(
            method=CLASSIC,
            model=f"scikit-learn {sklearn.__version__}",
            n=len(cases),
            sample=is_sample,
            accuracy=accuracy,
            macro_f1=macro,
            latency_ms_per_case=elapsed * 1000 / len(cases),
            cost_usd=0.0,
            train_seconds=train_seconds,
        )

    rows = [classic(test, False)]
    if sampled:
        rows.append(classic(sample, True))

    # The LLM side: one constrained call per case.
    examples = few_shot_examples(train, few_shot, seed) if few_shot else []
    prompts: list[tuple[Method, str]] = [("zero-shot", system_prompt(labels))]
    if examples:
        prompts.append(("few-shot", system_prompt(labels, examples)))
    for model in models:
        for method, system in prompts:
            rows.append(
                _llm_row(
                    gateway,
                    model,
                    method,
                    system,
                    labels,
                    sample,
                    sampled,
                    seed,
                    f1_score,
                    progress,
                )
            )
    return BaselineResult(
        rows=rows,
        labels=labels,
        n_train=len(train),
        n_test=len(test),
        n_sample=len(sample),
        seed=seed,
        few_shot=len(examples),
        notes=notes,
    )


def system_prompt(labels: Sequence[str], examples: Sequence[LabelledText] = ()) -> str:
    """The system prompt: the labels, then the labelled examples (the same for every case)."""
    text = SYSTEM_PROMPT.format(labels="\n".join(f"- {label}" for label in labels))
    if examples:
        shown = "\n\n".join(
            f"Text: {' '.join(e.text.split())}\nAnswer: {json.dumps({'label': e.label})}"
            for e in examples
        )
        text += EXAMPLES_PROMPT.format(examples=shown)
    return text


def label_schema(labels: Sequence[str]) -> dict[str, Any]:
    """The JSON schema of an answer: an object whose ``label`` is one of ``labels``."""
    return {
        "type": "object",
        "properties": {"label": {"enum": list(labels)}},
        "required": ["label"],
        "additionalProperties": False,
    }


def _llm_row(
    gateway: Gateway,
    model: str,
    method: Method,
    system: str,
    labels: list[str],
    cases: Sequence[LabelledText],
    sampled: bool,
    seed: int,
    f1_score: Any,
    progress: Progress | None,
) -> BaselineRow:
    response_format = ResponseFormat(type="json_schema", json_schema=label_schema(labels))
    allowed = set(labels)
    # Room for the longest label written out as JSON, with slack for whitespace.
    max_tokens = 32 + max(len(label) for label in labels)
    predicted: list[str] = []
    invalid = 0
    cost: float | None = 0.0
    stage = f"{method} {model}"
    took: list[float] = []
    for done, case in enumerate(cases, start=1):
        t0 = time.perf_counter()
        response = gateway.chat(
            [Message.system(system), Message.user(USER_PROMPT.format(text=case.text))],
            model=model,
            temperature=0,
            seed=seed,
            max_tokens=max_tokens,
            response_format=response_format,
        )
        took.append(time.perf_counter() - t0)
        answer = _answer(response.text)
        if answer not in allowed:
            invalid += 1
            answer = _INVALID
        predicted.append(answer)
        if cost is not None:
            cost = None if response.cost_usd is None else cost + response.cost_usd
        if progress is not None:
            progress(stage, done, len(cases))
    accuracy, macro = _scores(f1_score, [c.label for c in cases], predicted)
    return BaselineRow(
        method=method,
        model=model,
        n=len(cases),
        sample=sampled,
        accuracy=accuracy,
        macro_f1=macro,
        latency_ms_per_case=sum(took) * 1000 / len(cases),
        cost_usd=cost,
        invalid=invalid,
        latency_ms_p50=statistics.median(took) * 1000,
    )


def _answer(text: str) -> str:
    """The label of a JSON answer, or the invalid marker."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return _INVALID
    label = data.get("label") if isinstance(data, dict) else None
    return label if isinstance(label, str) else _INVALID
