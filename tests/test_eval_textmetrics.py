import sys
from collections.abc import Iterator

import pytest

from outcrop.errors import InvalidRequestError, MissingExtraError
from outcrop.evals import textmetrics
from outcrop.evals.textmetrics import (
    bleu,
    contains,
    exact_match,
    extract_json,
    json_schema_match,
    json_valid,
    normalize_squad,
    regex_match,
    rouge_l,
    schema_errors,
    squad_exact_match,
    token_f1,
)

# --- Short answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("The Cat!", "cat"),
        ("  An   apple, a day ", "apple day"),
        ("Theatre", "theatre"),  # "the" only as a whole word
        ("Denver Broncos.", "denver broncos"),
        ("U.S.A.", "usa"),
        ("", ""),
    ],
)
def test_normalize_squad(text: str, normalised: str) -> None:
    assert normalize_squad(text) == normalised


def test_exact_match_strips_but_keeps_case() -> None:
    assert exact_match("  Paris\n", "Paris") == 1.0
    assert exact_match("paris", "Paris") == 0.0
    assert exact_match("Lyon", ["Paris", " Lyon "]) == 1.0
    assert exact_match("Nice", ["Paris", "Lyon"]) == 0.0


def test_squad_exact_match() -> None:
    assert squad_exact_match("the Denver Broncos!", "Denver Broncos") == 1.0
    assert squad_exact_match("Broncos", "Denver Broncos") == 0.0
    assert squad_exact_match("broncos", ["Denver Broncos", "The Broncos"]) == 1.0


def test_token_f1_hand_computed() -> None:
    # "cat sat" vs "cat sat down": 2 shared tokens, precision 2/2, recall 2/3 -> F1 0.8.
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # Counter overlap clips repeats: "cat cat" vs "cat": precision 1/2, recall 1 -> 2/3.
    assert token_f1("cat cat", "cat") == pytest.approx(2 / 3)
    assert token_f1("dog", "cat") == 0.0


def test_token_f1_takes_the_best_answer() -> None:
    answers = ["a cat sat down", "the cat sat", "dog"]
    assert token_f1("the cat sat", answers) == 1.0
    assert token_f1("cat sat", ["dog", "a cat sat down"]) == pytest.approx(0.8)


def test_token_f1_empty_sides() -> None:
    assert token_f1("", "") == 1.0
    assert token_f1("the", "a!") == 1.0  # both normalise to nothing
    assert token_f1("", "cat") == 0.0
    assert token_f1("cat", "") == 0.0


def test_no_expected_answer_is_a_user_error() -> None:
    with pytest.raises(InvalidRequestError) as info:
        token_f1("cat", [])
    assert info.value.field == "expected"


def test_contains() -> None:
    assert contains("The answer is PARIS.", "paris") == 1.0
    assert contains("The answer is PARIS.", "paris", case_sensitive=True) == 0.0
    assert contains("The answer is Lyon.", ["Paris", "Lyon"]) == 1.0
    assert contains("No idea.", ["Paris", "Lyon"]) == 0.0


def test_regex_match() -> None:
    assert regex_match("Total: 42 apples", r"\b\d+\b") == 1.0
    assert regex_match("Total: none", r"\b\d+\b") == 0.0
    assert regex_match("x Yes", r"^Yes") == 0.0  # search, but anchors still anchor


def test_invalid_regex_names_the_pattern() -> None:
    with pytest.raises(InvalidRequestError) as info:
        regex_match("anything", "(unclosed")
    assert info.value.field == "pattern"
    assert "'(unclosed'" in str(info.value)
    assert "missing )" in str(info.value)  # the re.error text


# --- ROUGE-L and BLEU ----------------------------------------------------------------------


def test_rouge_l_hand_computed() -> None:
    # LCS of "the brown fox" in "the quick brown fox jumps" is 3 tokens:
    # precision 3/3, recall 3/5 -> F = 2 * 1 * 0.6 / 1.6 = 0.75.
    assert rouge_l("the brown fox", "the quick brown fox jumps") == pytest.approx(0.75)
    # "the cat sat on the mat" vs "the cat lay on the mat": LCS 5 of 6 on each side.
    assert rouge_l("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)


def test_rouge_l_stems_and_takes_the_best_answer() -> None:
    assert rouge_l("Cats jumping", "cat jumps") == 1.0  # Porter stems, lowercased
    assert rouge_l("the brown fox", ["dogs", "the quick brown fox jumps"]) == pytest.approx(0.75)
    assert rouge_l("completely different", "the brown fox") == 0.0


def test_bleu_identical_disjoint_and_partial() -> None:
    assert bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert bleu("hello world", "hello world") == pytest.approx(1.0)  # shorter than 4-grams
    assert bleu("dogs bark loudly", "the cat sat on the mat") == 0.0
    # Clipped n-gram precisions 5/6, 3/5, 2/4, 1/3, equal lengths (no brevity penalty):
    # BLEU = (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = (1/12) ** 0.25.
    partial = bleu("the cat sat on the mat", "the cat sat on a mat")
    assert partial == pytest.approx((1 / 12) ** 0.25, abs=1e-4)


def test_bleu_uses_every_answer_as_a_reference() -> None:
    refs = ["the cat sat on a mat", "the cat sat on the mat"]
    assert bleu("the cat sat on the mat", refs) == pytest.approx(1.0)


@pytest.fixture
def no_rouge(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    textmetrics._rouge_scorer.cache_clear()
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    yield
    textmetrics._rouge_scorer.cache_clear()


@pytest.mark.usefixtures("no_rouge")
def test_rouge_l_without_the_extra() -> None:
    with pytest.raises(MissingExtraError, match=r"pip install 'outcrop\[eval\]'") as info:
        rouge_l("a", "b")
    assert info.value.extra == "eval"
    assert "ROUGE-L" in str(info.value)


def test_bleu_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sacrebleu", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'outcrop\[eval\]'") as info:
        bleu("a", "b")
    assert "BLEU" in str(info.value)


# --- JSON and JSON Schema ------------------------------------------------------------------


@pytest.mark.parametrize(
    "output",
    [
        '{"a": 1}',
        '  {"a": 1}\n',
        '```json\n{"a": 1}\n```',
        '```JSON\n{"a": 1}\n```\n',
        '```\n{"a": 1}\n```',
        '```json {"a": 1}```',
    ],
)
def test_extract_json_unwraps_one_fence(output: str) -> None:
    assert extract_json(output) == {"a": 1}
    assert json_valid(output) == 1.0


@pytest.mark.parametrize(
    "output",
    [
        "",
        "{'a': 1}",
        'Here you go: {"a": 1}',
        '```json\n{"a": 1}\n```\n```json\n{"b": 2}\n```',
        "```json\n{a: 1}\n```",
        "NaN",
        '{"x": Infinity}',
    ],
)
def test_not_json(output: str) -> None:
    assert json_valid(output) == 0.0
    with pytest.raises(ValueError):
        extract_json(output)


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "email": {"type": ["string", "null"], "pattern": "^[^@]+@[^@]+$"},
        "role": {"enum": ["admin", "user"]},
        "tags": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
            "maxItems": 3,
        },
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_json_schema_match() -> None:
    good = '```json\n{"name": "Ada", "age": 36, "email": null, "tags": ["math"]}\n```'
    assert json_schema_match(good, PERSON) == 1.0
    assert json_schema_match('{"name": "Ada", "age": "36"}', PERSON) == 0.0
    assert json_schema_match("not json", PERSON) == 0.0


def test_schema_errors_with_paths() -> None:
    value = {
        "age": "36",
        "email": "nobody",
        "role": "root",
        "tags": ["ok", 7, "x", "y"],
        "first name": "Ada",
    }
    assert schema_errors(value, PERSON) == [
        "$.name: missing required property",
        "$.age: expected integer, got string",
        "$.email: \"nobody\" does not match the pattern '^[^@]+@[^@]+$'",
        '$.role: expected one of "admin", "user", got "root"',
        "$.tags: array of 4 items is longer than the maxItems 3",
        "$.tags[1]: expected string, got integer",
        '$["first name"]: additional property not allowed',
    ]


def test_schema_errors_on_bounds_and_lengths() -> None:
    assert schema_errors({"name": "", "age": -1}, PERSON) == [
        "$.name: string of 0 characters is shorter than the minLength 1",
        "$.age: -1 is less than the minimum 0",
    ]
    assert schema_errors({"name": "Ada", "age": 200, "tags": []}, PERSON) == [
        "$.age: 200 is more than the maximum 150",
        "$.tags: array of 0 items is shorter than the minItems 1",
    ]


def test_schema_types_follow_json_not_python() -> None:
    assert schema_errors(True, {"type": "integer"}) == ["$: expected integer, got boolean"]
    assert schema_errors(True, {"type": "number"}) == ["$: expected number, got boolean"]
    assert schema_errors(2.0, {"type": "integer"}) == []
    assert schema_errors(2.5, {"type": "integer"}) == ["$: expected integer, got number"]
    assert schema_errors(3, {"type": "number"}) == []
    assert schema_errors(None, {"type": ["integer", "null"]}) == []
    assert schema_errors("x", {"type": ["integer", "null"]}) == [
        "$: expected integer or null, got string"
    ]
    assert schema_errors(1, {"const": True}) == ["$: expected true, got 1"]
    assert schema_errors(1.0, {"enum": [1, 2]}) == []


def test_schema_extras_pydantic_emits() -> None:
    schema = {
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}}},
        "type": "object",
        "properties": {
            "at": {"$ref": "#/$defs/Point"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "size": {"type": "number", "exclusiveMinimum": 0},
        },
    }
    assert schema_errors({"at": {"x": 1.5}, "note": None, "size": 1}, schema) == []
    assert schema_errors({"at": {"x": "1"}, "note": 3, "size": 0}, schema) == [
        "$.at.x: expected number, got string",
        "$.note: matches none of the anyOf schemas "
        "($.note: expected string, got integer; $.note: expected null, got integer)",
        "$.size: 0 is not more than 0",
    ]


def test_schema_ignores_unknown_keywords_and_allows_extra_properties() -> None:
    schema = {"type": "object", "format": "whatever", "x-ui": {"hidden": True}}
    assert schema_errors({"anything": [1, 2]}, schema) == []
    assert schema_errors("x", {}) == []


def test_schema_mistakes_are_user_errors() -> None:
    with pytest.raises(InvalidRequestError, match="'int'") as info:
        schema_errors(1, {"type": "int"})
    assert info.value.field == "schema"
    with pytest.raises(InvalidRequestError, match=r"'\['"):
        schema_errors("x", {"type": "string", "pattern": "["})
    with pytest.raises(InvalidRequestError, match="points at nothing"):
        schema_errors(1, {"$ref": "#/$defs/Missing"})
