"""Evaluation suites: cases, the prompt × model matrix, metrics, in a YAML or TOML file.

A suite is what you run again after every change to a prompt or a model::

    name: capitals
    prompts: [capital@1, capital@2]        # prompt versions, files, or inline prompts
    models: [local:smollm2-135m, local:qwen2.5-coder-0.5b]
    repeats: 1
    cases:
      - {vars: {country: France}, expected: Paris}
    metrics: [contains, {name: token_f1, threshold: 0.5}]

Cases may instead come from a JSONL or CSV file (``cases: {file: cases.jsonl,
expected: answer}``). Every mistake — a missing prompt, model, metric or column —
is found before the first model call, with the file and line.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import toml_line
from ..errors import ConfigError
from ..prompts.files import parse_mapping, yaml_line
from ..prompts.prompt import Prompt
from ..types import ChatOptions

__all__ = [
    "AgentTarget",
    "Case",
    "CasesFile",
    "MetricSpec",
    "RagTarget",
    "Suite",
    "load_suite",
]

SUITE_SUFFIXES = (".yaml", ".yml", ".toml")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ExpectedToolCall(_Model):
    """A tool call an agent case should make; ``arguments`` need only hold the keys to check."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Case(_Model):
    """One input and what a good answer looks like."""

    id: str | None = None
    input: str | None = Field(default=None, description="The text, when the suite has no prompt.")
    vars: dict[str, Any] = Field(default_factory=dict, description="The prompt's variables.")
    expected: str | list[str] | None = Field(default=None, description="Correct answer(s).")
    tags: list[str] = Field(default_factory=list)
    contexts: list[str] = Field(
        default_factory=list,
        description="Gold context for RAG metrics: passages, or sources (file names) to find.",
    )
    tools: list[ExpectedToolCall] = Field(
        default_factory=list, description="The tool calls an agent should make, in order."
    )

    def variables(self) -> dict[str, Any]:
        values = dict(self.vars)
        if self.input is not None:
            values.setdefault("input", self.input)
        return values

    def expected_list(self) -> list[str]:
        """The expected answers; blank ones do not count (an empty CSV cell is no answer)."""
        if self.expected is None:
            return []
        items = [self.expected] if isinstance(self.expected, str) else list(self.expected)
        return [e for e in items if e.strip()]


class CasesFile(_Model):
    """Cases read from a JSONL or CSV file; each option names a field (column) of it."""

    file: str
    vars: list[str] | dict[str, str] | None = Field(
        default=None,
        description="Fields used as variables (a list, or variable → field); default: all others.",
    )
    expected: str | None = None
    id: str | None = None
    tags: str | None = None
    contexts: str | None = None
    limit: int | None = Field(default=None, ge=1)


class MetricSpec(_Model):
    """A metric and its settings; ``threshold`` is the mean a gate requires."""

    name: str
    label: str | None = Field(
        default=None, description="What results call it (to use one metric twice, e.g. judges)."
    )
    threshold: float | None = None
    pattern: str | None = Field(default=None, description="regex: the pattern to find.")
    schema_: dict[str, Any] | None = Field(
        default=None, alias="schema", description="json_schema: the schema to match."
    )
    rubric: str | None = Field(default=None, description="judge: what a good answer does.")
    model: str | None = Field(default=None, description="judge or embedding model.")
    case_sensitive: bool = False

    @property
    def key(self) -> str:
        return self.label or self.name


class RagTarget(_Model):
    """Answer each case from a knowledge base; the retrieved passages fill ``{{ context }}``."""

    kb: str
    k: int = Field(default=4, ge=1, le=50)
    mode: str = "hybrid"
    query: str = Field(default="question", description="The variable holding the question.")


class AgentTarget(_Model):
    """Run each case through an agent with these built-in tools (or a knowledge base's search)."""

    tools: list[str] = Field(default_factory=lambda: ["calculator"])
    instructions: str | None = None
    max_steps: int = Field(default=6, ge=1, le=50)
    kb: str | None = None


class Suite(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    prompts: list[str | Prompt] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    cases: list[Case] | CasesFile
    metrics: list[str | MetricSpec] = Field(min_length=1)
    repeats: int = Field(default=1, ge=1, le=100)
    seed: int = Field(default=0, ge=0)
    options: ChatOptions = Field(default_factory=lambda: ChatOptions(temperature=0.0))
    concurrency: int = Field(default=4, ge=1, le=64, description="Calls at once (remote models).")
    judge_model: str | None = None
    rag: RagTarget | None = None
    agent: AgentTarget | None = None

    # Where the suite file sits: relative case files are read from there.
    folder: Path | None = Field(default=None, exclude=True)

    @field_validator("metrics")
    @classmethod
    def _unique_metrics(cls, value: list[str | MetricSpec]) -> list[str | MetricSpec]:
        names = [m if isinstance(m, str) else m.key for m in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(
                f"metric {twice[0]!r} is listed twice; give each a label to use one metric twice"
            )
        return value

    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec(name=m) if isinstance(m, str) else m for m in self.metrics]

    def load_cases(self) -> list[Case]:
        """The cases, from the file if the suite names one, each with a unique id."""
        cases = self.cases if isinstance(self.cases, list) else _read_cases(self.cases, self.folder)
        if not cases:
            raise ConfigError(f"suite {self.name!r} has no cases")
        seen: set[str] = set()
        out: list[Case] = []
        for i, case in enumerate(cases, start=1):
            cid = case.id if case.id is not None else str(i)
            if cid in seen:
                raise ConfigError(f"suite {self.name!r}: two cases have the id {cid!r}")
            seen.add(cid)
            out.append(case.model_copy(update={"id": cid}))
        return out

    def content_hash(self) -> str:
        text = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_cases(spec: CasesFile, folder: Path | None) -> list[Case]:
    path = Path(spec.file)
    if not path.is_absolute() and folder is not None:
        path = folder / path
    if not path.exists():
        raise ConfigError(f"the cases file {spec.file!r} does not exist", path=path)
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        if path.suffix in (".jsonl", ".ndjson"):
            with path.open(encoding="utf-8") as f:
                for n, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ConfigError(
                            f"not valid JSON ({exc.msg}); each line holds one case object",
                            path=path,
                            line=n,
                        ) from None
                    if not isinstance(row, dict):
                        raise ConfigError("each line holds one JSON object", path=path, line=n)
                    rows.append((n, row))
        elif path.suffix in (".csv", ".tsv"):
            with path.open(encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
                for n, row in enumerate(reader, start=2):
                    rows.append((n, dict(row)))
        else:
            raise ConfigError("a cases file is .jsonl, .csv or .tsv", path=path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it ({exc.__class__.__name__}: {exc})", path=path) from None
    if not rows:
        raise ConfigError("the cases file holds no cases", path=path)

    columns: list[str] = []
    for _, row in rows:
        columns.extend(k for k in row if k not in columns)
    named = [c for c in (spec.expected, spec.id, spec.tags, spec.contexts) if c]
    if isinstance(spec.vars, dict):
        var_map = dict(spec.vars)
    elif isinstance(spec.vars, list):
        var_map = {c: c for c in spec.vars}
    else:
        var_map = {c: c for c in columns if c not in named}
    for column in [*named, *var_map.values()]:
        if column not in columns:
            raise ConfigError(
                f"the cases file has no column {column!r}; columns: {', '.join(columns)}",
                path=path,
            )
    cases: list[Case] = []
    for n, row in rows[: spec.limit]:
        try:
            cases.append(
                Case(
                    id=str(row[spec.id]) if spec.id and row.get(spec.id) is not None else None,
                    vars={var: row.get(col) for var, col in var_map.items()},
                    expected=_as_expected(row.get(spec.expected)) if spec.expected else None,
                    tags=_as_list(row.get(spec.tags)) if spec.tags else [],
                    contexts=_as_list(row.get(spec.contexts)) if spec.contexts else [],
                )
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigError(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}", path=path, line=n
            ) from None
    return cases


def _as_expected(value: Any) -> str | list[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    return str(value)


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value)
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return [str(v) for v in parsed]
    return [t.strip() for t in text.split("|") if t.strip()]


def load_suite(path: Path | str) -> Suite:
    """Read and validate a suite file (YAML or TOML); errors name the file and line."""
    path = Path(path)
    if path.suffix not in SUITE_SUFFIXES:
        raise ConfigError(f"a suite file ends in {', '.join(SUITE_SUFFIXES)}", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such suite file", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it ({exc.__class__.__name__}: {exc})", path=path) from None
    data = parse_mapping(path, text, what="a suite file")
    data.setdefault("name", path.stem)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        # A union (list of cases | cases file) reports its branch names; drop them.
        loc = [
            p for p in loc if p not in ("list[Case]", "CasesFile", "str", "Prompt", "MetricSpec")
        ]
        line = (toml_line if path.suffix == ".toml" else yaml_line)(text, loc) if loc else None
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        raise ConfigError(f"{'.'.join(loc) or '(file)'}: {message}", path=path, line=line) from None
    suite.folder = path.parent
    return suite
