"""Text metrics: score a model's output against the expected answer, 0 (worst) to 1 (best).

These are the reference-based scorers an eval runs per example: exact and SQuAD-style
matches and token F1 for short answers, ROUGE-L and BLEU for longer text, regular
expressions and substring checks for loose answers, and JSON/JSON-Schema checks for
structured output. Each is a pure function; ROUGE-L and BLEU need the ``eval`` extra.
"""

from __future__ import annotations

import functools
import json
import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any, TypeGuard

from ..errors import InvalidRequestError, MissingExtraError

__all__ = [
    "bleu",
    "contains",
    "exact_match",
    "extract_json",
    "json_schema_match",
    "json_valid",
    "normalize_squad",
    "regex_match",
    "rouge_l",
    "schema_errors",
    "squad_exact_match",
    "token_f1",
]

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# One fenced block making up the whole output: ```json ... ``` (the language tag optional).
_FENCE = re.compile(r"\A```[ \t]*(?:json\b)?\s*(.*?)\s*```\Z", re.DOTALL | re.IGNORECASE)


def _answers(expected: str | Sequence[str]) -> list[str]:
    answers = [expected] if isinstance(expected, str) else list(expected)
    if not answers:
        raise InvalidRequestError(
            "No expected answer to score against: pass a string or a non-empty list of strings.",
            field="expected",
        )
    return answers


# --- Short answers -------------------------------------------------------------------------


def normalize_squad(text: str) -> str:
    """The SQuAD v1.1 normalisation: lowercase, drop punctuation and articles, collapse spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(output: str, expected: str | Sequence[str]) -> float:
    """1.0 if the output equals an expected answer once surrounding whitespace is stripped."""
    out = output.strip()
    return float(any(out == answer.strip() for answer in _answers(expected)))


def squad_exact_match(output: str, expected: str | Sequence[str]) -> float:
    """SQuAD exact match: equality after :func:`normalize_squad`, best over expected answers."""
    out = normalize_squad(output)
    return float(any(out == normalize_squad(answer) for answer in _answers(expected)))


def _f1(output_tokens: list[str], answer_tokens: list[str]) -> float:
    if not output_tokens or not answer_tokens:
        return float(output_tokens == answer_tokens)
    same = sum((Counter(output_tokens) & Counter(answer_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(output_tokens)
    recall = same / len(answer_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(output: str, expected: str | Sequence[str]) -> float:
    """SQuAD token F1 over normalised tokens, best over expected answers.

    Both sides empty after normalisation scores 1.0; one side empty scores 0.0.
    """
    out = normalize_squad(output).split()
    return max(_f1(out, normalize_squad(answer).split()) for answer in _answers(expected))


def contains(output: str, expected: str | Sequence[str], *, case_sensitive: bool = False) -> float:
    """1.0 if any expected string occurs in the output (case-insensitive unless asked)."""
    if case_sensitive:
        return float(any(answer in output for answer in _answers(expected)))
    folded = output.casefold()
    return float(any(answer.casefold() in folded for answer in _answers(expected)))


def regex_match(output: str, pattern: str) -> float:
    """1.0 if ``re.search(pattern, output)`` finds a match anywhere in the output."""
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise InvalidRequestError(
            f"Invalid regular expression {pattern!r}: {err}. Fix the pattern (Python `re` syntax).",
            field="pattern",
        ) from None
    return float(compiled.search(output) is not None)


# --- Longer text: ROUGE-L and BLEU (the ``eval`` extra) ------------------------------------


@functools.cache
def _rouge_scorer() -> Any:
    try:
        from rouge_score import rouge_scorer  # type: ignore[import-untyped]
    except ImportError:
        raise MissingExtraError("ROUGE-L", "eval") from None
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(output: str, expected: str | Sequence[str]) -> float:
    """ROUGE-L F-measure (longest common subsequence, Porter-stemmed), best over answers.

    Computed by Google's ``rouge_score``, which lowercases and keeps only ASCII letters and
    digits as tokens; an output or answer with no such token scores 0.0.
    """
    scorer = _rouge_scorer()
    return max(
        float(scorer.score(answer, output)["rougeL"].fmeasure) for answer in _answers(expected)
    )


def bleu(output: str, expected: str | Sequence[str]) -> float:
    """Sentence BLEU from ``sacrebleu``, with every expected answer as a reference, scaled to 0-1.

    sacrebleu's sentence defaults apply: 13a tokenisation, exponential smoothing and
    effective n-gram order, so outputs shorter than four tokens are scored without warnings.
    An empty output scores 0.0, even against an empty answer.
    """
    try:
        import sacrebleu
    except ImportError:
        raise MissingExtraError("BLEU", "eval") from None
    score = sacrebleu.sentence_bleu(output, _answers(expected)).score
    return min(max(float(score) / 100.0, 0.0), 1.0)


# --- Structured output: JSON and JSON Schema -----------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def extract_json(output: str) -> Any:
    """Parse the output as JSON, first unwrapping a single ```json ... ``` fence around it.

    Raises ``ValueError`` when the text is not JSON (NaN and Infinity are not JSON either).
    """
    text = output.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    return json.loads(text, parse_constant=_reject_constant)


def json_valid(output: str) -> float:
    """1.0 if the output (optionally in a ```json fence) parses as JSON."""
    try:
        extract_json(output)
    except ValueError:
        return 0.0
    return 1.0


def json_schema_match(output: str, schema: dict[str, Any]) -> float:
    """1.0 if the output parses as JSON and validates against ``schema``.

    See :func:`schema_errors` for the keywords checked and for the reasons of a 0.0.
    """
    try:
        value = extract_json(output)
    except ValueError:
        return 0.0
    return float(not schema_errors(value, schema))


def schema_errors(value: Any, schema: dict[str, Any] | bool, path: str = "$") -> list[str]:
    """Why ``value`` fails ``schema``, as messages like ``"$.age: expected integer, got string"``.

    Checks a common subset of JSON Schema: ``type`` (one or a list), ``enum``, ``const``,
    ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``, ``minLength``/
    ``maxLength``, ``pattern``, ``properties``, ``required``, ``additionalProperties`` (a
    boolean or a schema), ``items`` (one schema), ``minItems``/``maxItems``, ``allOf``/
    ``anyOf``/``oneOf`` and local ``$ref`` (``#/$defs/...``), as pydantic emits them. Other
    keywords are ignored. An empty list means the value is valid.
    """
    return _errors(value, schema, path, schema)


_JSON_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_type(value: Any, name: str) -> bool:
    actual = _type_name(value)
    if name == "number":
        return actual in ("integer", "number")
    if name == "integer":
        # JSON Schema counts 1.0 as an integer: it is the same number as 1.
        return actual == "integer" or (actual == "number" and float(value).is_integer())
    return actual == name


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON Schema sees it: 1 == 1.0, but true != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    same_kind = type(a) is type(b) or (_is_number(a) and _is_number(b))
    return same_kind and bool(a == b)


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key)}]"


def _resolve(ref: str, root: dict[str, Any] | bool) -> dict[str, Any] | bool:
    if not ref.startswith("#"):
        raise InvalidRequestError(
            f"Schema $ref {ref!r} is not local: only references into the same schema "
            "(like '#/$defs/Name') are supported; inline the referenced schema.",
            field="schema",
        )
    node: Any = root
    for part in ref[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise InvalidRequestError(
                f"Schema $ref {ref!r} points at nothing in the schema; fix the reference.",
                field="schema",
            )
        node = node[part]
    if not isinstance(node, dict | bool):
        raise InvalidRequestError(f"Schema $ref {ref!r} is not a schema.", field="schema")
    return node


def _errors(
    value: Any, schema: dict[str, Any] | bool, path: str, root: dict[str, Any] | bool
) -> list[str]:
    if schema is True:
        return []
    if schema is False:
        return [f"{path}: no value is allowed here"]
    if "$ref" in schema:
        referenced = _errors(value, _resolve(schema["$ref"], root), path, root)
        if referenced:
            return referenced

    expected_type = schema.get("type")
    if expected_type is not None:
        names = [expected_type] if isinstance(expected_type, str) else list(expected_type)
        for name in names:
            if name not in _JSON_TYPES:
                raise InvalidRequestError(
                    f"Unknown JSON Schema type {name!r} at {path}: use one of "
                    + ", ".join(_JSON_TYPES)
                    + ".",
                    field="schema",
                )
        if not any(_is_type(value, name) for name in names):
            wanted = " or ".join(names)
            return [f"{path}: expected {wanted}, got {_type_name(value)}"]

    errors: list[str] = []
    if "enum" in schema and not any(_json_equal(value, option) for option in schema["enum"]):
        options = ", ".join(_short(option) for option in schema["enum"])
        errors.append(f"{path}: expected one of {options}, got {_short(value)}")
    if "const" in schema and not _json_equal(value, schema["const"]):
        errors.append(f"{path}: expected {_short(schema['const'])}, got {_short(value)}")

    for keyword in ("allOf", "anyOf", "oneOf"):
        if keyword in schema:
            errors += _combinator(keyword, value, schema[keyword], path, root)

    if _is_number(value):
        errors += _number_errors(value, schema, path)
    elif isinstance(value, str):
        errors += _string_errors(value, schema, path)
    elif isinstance(value, list):
        errors += _array_errors(value, schema, path, root)
    elif isinstance(value, dict):
        errors += _object_errors(value, schema, path, root)
    return errors


def _combinator(
    keyword: str, value: Any, schemas: list[Any], path: str, root: dict[str, Any] | bool
) -> list[str]:
    results = [_errors(value, sub, path, root) for sub in schemas]
    passed = sum(not r for r in results)
    if keyword == "allOf":
        return [e for r in results for e in r]
    if keyword == "anyOf" and passed == 0:
        reasons = "; ".join(r[0] for r in results if r)
        return [f"{path}: matches none of the anyOf schemas ({reasons})"]
    if keyword == "oneOf" and passed != 1:
        if passed == 0:
            reasons = "; ".join(r[0] for r in results if r)
            return [f"{path}: matches none of the oneOf schemas ({reasons})"]
        return [f"{path}: matches {passed} of the oneOf schemas, expected exactly one"]
    return []


def _number_errors(value: float, schema: dict[str, Any], path: str) -> list[str]:
    errors: list[str] = []
    if math.isnan(value):
        return [f"{path}: NaN is not a JSON number"]
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: {_short(value)} is less than the minimum {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: {_short(value)} is more than the maximum {schema['maximum']}")
    low = schema.get("exclusiveMinimum")
    if _is_number(low) and value <= low:
        errors.append(f"{path}: {_short(value)} is not more than {low}")
    high = schema.get("exclusiveMaximum")
    if _is_number(high) and value >= high:
        errors.append(f"{path}: {_short(value)} is not less than {high}")
    return errors


def _string_errors(value: str, schema: dict[str, Any], path: str) -> list[str]:
    errors: list[str] = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(
            f"{path}: string of {len(value)} characters is shorter than "
            f"the minLength {schema['minLength']}"
        )
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(
            f"{path}: string of {len(value)} characters is longer than "
            f"the maxLength {schema['maxLength']}"
        )
    if "pattern" in schema:
        pattern = schema["pattern"]
        try:
            matched = re.search(pattern, value) is not None
        except re.error as err:
            raise InvalidRequestError(
                f"Invalid regular expression {pattern!r} in the schema's pattern: {err}. "
                "Fix the pattern (Python `re` syntax).",
                field="schema",
            ) from None
        if not matched:
            errors.append(f"{path}: {_short(value)} does not match the pattern {pattern!r}")
    return errors


def _array_errors(
    value: list[Any], schema: dict[str, Any], path: str, root: dict[str, Any] | bool
) -> list[str]:
    errors: list[str] = []
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(
            f"{path}: array of {len(value)} items is shorter than the minItems {schema['minItems']}"
        )
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(
            f"{path}: array of {len(value)} items is longer than the maxItems {schema['maxItems']}"
        )
    items = schema.get("items")
    if isinstance(items, dict | bool):
        for index, item in enumerate(value):
            errors += _errors(item, items, f"{path}[{index}]", root)
    return errors


def _object_errors(
    value: dict[str, Any], schema: dict[str, Any], path: str, root: dict[str, Any] | bool
) -> list[str]:
    errors: list[str] = []
    for name in schema.get("required", []):
        if name not in value:
            errors.append(f"{_child(path, name)}: missing required property")
    properties: dict[str, Any] = schema.get("properties", {})
    additional = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            errors += _errors(item, properties[key], _child(path, key), root)
        elif additional is False:
            errors.append(f"{_child(path, key)}: additional property not allowed")
        elif isinstance(additional, dict):
            errors += _errors(item, additional, _child(path, key), root)
    return errors
