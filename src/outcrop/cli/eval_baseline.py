"""``outcrop eval baseline``: a classic classifier and LLMs, scored on the same labelled data."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..errors import InvalidRequestError
from ._common import Ctx, echo_json, pass_ctx

_DELIMITERS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def _column(value: str) -> str | int:
    """A column name, or a 0-based position when the value is a number."""
    return int(value) if value.isdigit() else value


class _Bars:
    """One progress bar on stderr per stage (method and model)."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.bar: Any = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            make: Any = click.progressbar
            self.bar = make(length=total, label=stage, file=sys.stderr)
            self.bar.__enter__()
            self.stage = stage
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@click.command(
    "baseline",
    epilog="""\b
Examples:
  outcrop eval baseline train.csv --test test.csv --text-column text --label-column category
  outcrop eval baseline SMSSpamCollection --no-header --text-column 1 --label-column 0 \\
      --few-shot 4 --limit 200 -m local:smollm2-135m -m local:qwen2.5-coder-0.5b
""",
)
@click.argument("train", type=click.Path(path_type=Path))
@click.option(
    "--test",
    "test_path",
    type=click.Path(path_type=Path),
    help="Test file in the same format; without it, TRAIN is split (see --test-size).",
)
@click.option(
    "--test-size",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Share of TRAIN held out for testing, per label, when there is no --test. [default: 0.2]",
)
@click.option(
    "--text-column", required=True, help="Column (header name or 0-based position) of the text."
)
@click.option(
    "--label-column", required=True, help="Column (header name or 0-based position) of the label."
)
@click.option(
    "--header/--no-header",
    default=None,
    help="Whether the first row names the columns [default: yes when a column is a name].",
)
@click.option(
    "--delimiter",
    help="Field separator (',', 'tab', ';' …) [default: from the file suffix or content].",
)
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    help="LLM to score, repeatable (default: your default model).",
)
@click.option(
    "--few-shot",
    default=0,
    show_default=True,
    type=click.IntRange(0, 1000),
    metavar="K",
    help="Also run few-shot with K labelled examples from the train split in each prompt.",
)
@click.option(
    "--limit",
    type=click.IntRange(1),
    metavar="N",
    help="Score the LLMs on a seeded sample of N test cases (the classic model on all and on "
    "the sample).",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(0, 2**32 - 1),
    help="Seed of the split, the sample, the few-shot examples and the models' sampling.",
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def baseline(
    obj: Ctx,
    train: Path,
    test_path: Path | None,
    test_size: float | None,
    text_column: str,
    label_column: str,
    header: bool | None,
    delimiter: str | None,
    models: tuple[str, ...],
    few_shot: int,
    limit: int | None,
    seed: int,
    as_json: bool,
) -> None:
    """Compare TF-IDF + logistic regression with LLMs (zero-shot, few-shot) on labelled
    text: accuracy, macro-F1, latency and cost, each on the same test cases.

    TRAIN is a CSV, TSV or JSONL file with a text and a label per row.
    """
    from ..evals.baseline import load_labelled, run_baseline, stratified_split

    if test_path is not None and test_size is not None:
        raise InvalidRequestError(
            "Give --test or --test-size, not both: --test-size splits TRAIN when there is no "
            "test file",
            field="test_size",
        )
    if delimiter is not None:
        delimiter = _DELIMITERS.get(delimiter, delimiter)
    columns: dict[str, Any] = {
        "text_column": _column(text_column),
        "label_column": _column(label_column),
        "delimiter": delimiter,
        "header": header,
    }
    loaded = [load_labelled(train, **columns)]
    if test_path is not None:
        loaded.append(load_labelled(test_path, **columns))
        train_rows, test_rows = list(loaded[0]), list(loaded[1])
    else:
        train_rows, test_rows = stratified_split(
            loaded[0], test_size=0.2 if test_size is None else test_size, seed=seed
        )
    for rows in loaded:
        summary = rows.skipped_summary()
        if summary:
            click.secho(summary, fg="yellow", err=True)
    gateway = obj.gateway
    chosen = list(models) or [gateway.settings.default_model]
    bars = None if as_json else _Bars()
    try:
        result = run_baseline(
            gateway,
            train_rows,
            test_rows,
            models=chosen,
            few_shot=few_shot,
            limit=limit,
            seed=seed,
            progress=bars,
        )
    finally:
        if bars is not None:
            bars.close()
    if as_json:
        data = result.to_dict()
        data["skipped_rows"] = {rows.source: len(rows.skipped) for rows in loaded}
        echo_json(data)
        return
    click.echo(result.table())
