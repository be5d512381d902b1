"""Prompts: the anatomy, variables, files, versions and labels, chains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from outcrop import ConfigError, Gateway, InvalidRequestError, Settings, Store
from outcrop.gateway import TraceInfo
from outcrop.prompts import Chain, Prompt, PromptRegistry, load_file
from outcrop.providers.testing import FunctionModel, TestModel

SUPPORT = """\
persona = "a support agent for Acme Books"
objective = "answer the customer's question in one reply"
instructions = "Use only the policy in the context."
constraints = ["At most 60 words."]
tone = "warm"
context = "{{ policy }}"
query = "{{ question }}"

[[examples]]
input = "Can I return a book?"
output = "Yes, within 30 days."

[variables]
policy = { default = "Returns within 30 days." }
"""


def test_anatomy_renders_in_order():
    prompt = Prompt.model_validate(
        {
            "system": "Follow company rules.",
            "persona": "a librarian",
            "objective": "help a reader",
            "instructions": "Recommend one book.",
            "constraints": ["One title only.", "No spoilers."],
            "tone": "friendly",
            "examples": [{"input": "I like space.", "output": "The Martian."}],
            "context": "Stock: Dune, Emma.",
            "query": "I like deserts.",
            "output": {"description": "the title alone"},
        }
    )
    messages = prompt.messages()
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0].text == (
        "Follow company rules.\n\nYou are a librarian.\n\nObjective: help a reader\n\n"
        "Instructions:\nRecommend one book.\n\nConstraints:\n- One title only.\n- No spoilers."
        "\n\nTone: friendly.\n\nOutput format: the title alone"
    )
    assert messages[3].text == "Context:\nStock: Dune, Emma.\n\nQuestion: I like deserts."
    assert prompt.parts() == {
        "query": True,
        "instructions": True,
        "objective": True,
        "persona": True,
        "constraints": True,
        "examples": True,
        "context": True,
        "tone": True,
    }


def test_json_output_and_reasoning_shape_the_request():
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
    }
    prompt = Prompt(query="2+2?", output={"format": "json", "schema": schema}, reasoning=True)
    request = prompt.request()
    sent = request.response_format.json_schema
    assert list(sent["properties"]) == ["reasoning", "answer"]
    assert sent["required"] == ["reasoning", "answer"]
    assert "'reasoning' field" in request.messages[0].text
    text = Prompt(query="2+2?", reasoning=True).messages()[0].text
    assert "step by step" in text and "Answer:" in text


def test_options_travel_with_the_prompt():
    prompt = Prompt(query="hi", options={"temperature": 0.1, "max_tokens": 9}, model="test")
    request = prompt.request(max_tokens=20)
    assert (request.temperature, request.max_tokens, request.model) == (0.1, 20, "test")


def test_variables_missing_unused_and_typos():
    prompt = Prompt(
        query="{{ question }} about {{ topic }}", variables={"topic": {"default": "RAG"}}
    )
    assert prompt.messages({"question": "Why"})[-1].text == "Why about RAG"
    with pytest.raises(InvalidRequestError, match=r"Missing variable 'question'"):
        prompt.messages({})
    with pytest.raises(
        InvalidRequestError,
        match=r"Unknown variable 'questoin'.*Did you mean 'question' for 'questoin'\?",
    ):
        prompt.messages({"questoin": "x"})
    with pytest.raises(InvalidRequestError, match="does not use it"):
        prompt.messages({"question": "x", "extra": "y"})


def test_templates_are_sandboxed_and_errors_name_the_field():
    with pytest.raises(InvalidRequestError, match="query"):
        Prompt(query="{{ ''.__class__.__mro__[1].__subclasses__() }}").messages()
    with pytest.raises(InvalidRequestError, match=r"instructions: template error"):
        Prompt(query="q", instructions="{% if %}").messages()
    with pytest.raises(
        InvalidRequestError, match=r"query: template error.*No filter named 'shout'"
    ):
        Prompt(query="{{ question | shout }}").messages({"question": "x"})


# -- files -----------------------------------------------------------------


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_toml_and_yaml_files(tmp_path: Path):
    toml = load_file(_write(tmp_path, "support.toml", SUPPORT))
    yaml_file = load_file(
        _write(
            tmp_path,
            "summary.yaml",
            "description: Summarise\nquery: 'Summarise: {{ text }}'\nconstraints:\n  - One line.\n",
        )
    )
    assert toml.name == "support" and toml.prompt.examples[0].output == "Yes, within 30 days."
    assert yaml_file.name == "summary" and yaml_file.prompt.constraints == ["One line."]


@pytest.mark.parametrize(
    ("name", "text", "line", "words"),
    [
        ("a.toml", 'query = "x"\nconstraints = [\n', 2, "not valid TOML"),
        ("b.toml", 'query = "x"\npersona = "p"\nperson = "typo"\n', 3, "person: unknown field"),
        ("c.toml", 'persona = "p"\n', None, "query: missing; every prompt needs a query"),
        (
            "d.toml",
            'query = "q"\n\n[[examples]]\ninput = "a"\noutput = "b"\n\n[[examples]]\ninput = "c"\n',
            7,
            "examples.1.output: missing",
        ),
        ("e.toml", 'query = "q"\nreasoning = "maybe"\n', 2, "reasoning"),
        ("f.yaml", "query: q\nconstraints: [a, b\n", 3, "not valid YAML"),
        ("g.yaml", "query: q\ntone:\n  - a list\n", 3, "tone"),
        ("h.yaml", "query: q\n[output]\n", None, "not valid YAML"),
    ],
)
def test_malformed_files_name_file_line_and_field(tmp_path: Path, name, text, line, words):
    path = _write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert info.value.path == path
    if line is not None:
        assert info.value.line == line, str(info.value)
    assert words in str(info.value)


# -- versions and labels ---------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    (root / "prompts").mkdir(parents=True)
    (root / "outcrop.toml").write_text('default_model = "test"\n')
    (root / "prompts" / "support.toml").write_text(SUPPORT)
    monkeypatch.chdir(root)
    return root


def test_every_edit_is_a_new_immutable_version(project: Path, store: Store):
    registry = PromptRegistry(store)
    assert [v.ref for v in registry.sync()] == ["support@1"]
    first = registry.get("support@1")
    before = json.dumps([m.model_dump() for m in first.prompt.messages({"question": "q"})])
    assert registry.sync() == []  # nothing changed, nothing new
    path = project / "prompts" / "support.toml"
    path.write_text(SUPPORT.replace("At most 60 words.", "At most 30 words."))
    assert [v.ref for v in registry.sync()] == ["support@2"]
    again = registry.get("support@1")
    after = json.dumps([m.model_dump() for m in again.prompt.messages({"question": "q"})])
    assert after == before  # byte-identical
    assert "30 words" in registry.get("support").prompt.constraints[0]
    assert again.hash == first.hash and again.source == SUPPORT


def test_labels_move_and_roll_back(project: Path, store: Store):
    registry = PromptRegistry(store)
    registry.sync()
    (project / "prompts" / "support.toml").write_text(SUPPORT.replace("warm", "formal"))
    registry.sync()
    assert registry.promote("support", 1, "production") is None
    assert registry.get("support@production").version == 1
    assert registry.promote("support", 2, "production") == 1
    assert registry.get("support@production").version == 2
    assert registry.rollback("support", "production") == 1
    assert registry.get("support@production").version == 1


def test_unknown_references_say_what_exists(project: Path, store: Store):
    registry = PromptRegistry(store)
    registry.sync()
    registry.promote("support", 1, "production")
    with pytest.raises(InvalidRequestError, match=r"no label 'prod'\. Did you mean 'production'\?"):
        registry.get("support@prod")
    with pytest.raises(InvalidRequestError, match=r"Labels: production → 1; versions: 1"):
        registry.get("support@staging")
    with pytest.raises(InvalidRequestError, match=r"no version 7; versions: 1"):
        registry.get("support@7")
    with pytest.raises(InvalidRequestError, match=r"Did you mean 'support'"):
        registry.get("suport")
    with pytest.raises(InvalidRequestError, match="nothing to roll back"):
        registry.rollback("support", "production")


def test_traces_carry_the_prompt_and_version(project: Path, store: Store):
    registry = PromptRegistry(store)
    registry.sync()
    version = registry.get("support")
    gw = Gateway(
        settings=Settings(default_model="test"), store=store, providers={"test": TestModel()}
    )
    response = gw.chat(
        version.prompt.request({"question": "hi"}),
        trace=TraceInfo(prompt_name=version.name, prompt_version=version.version),
    )
    row = store.get(response.id)
    assert (row.prompt_name, row.prompt_version) == ("support", 1)


# -- chains ----------------------------------------------------------------


def test_a_chain_feeds_each_output_to_the_next_step(project: Path, store: Store):
    (project / "prompts" / "facts.toml").write_text(
        'query = "List facts in: {{ text }}"\n[output]\nformat = "json"\n'
        'schema = { type = "object", properties = { facts = { type = "array" } } }\n'
    )
    (project / "prompts" / "title.toml").write_text('query = "Write a title for {{ facts }}"\n')
    (project / "prompts" / "pipeline.toml").write_text(
        'description = "facts, then a title"\n'
        '[[steps]]\nprompt = "facts"\noutput = "facts"\n'
        '[[steps]]\nprompt = "title"\noutput = "title"\n'
    )

    def answer(request):
        text = request.messages[-1].text
        return '{"facts": ["tides follow the moon"]}' if text.startswith("List") else "Moon Tides"

    gw = Gateway(
        settings=Settings(default_model="fn"), store=store, providers={"fn": FunctionModel(answer)}
    )
    registry = PromptRegistry(store)
    registry.sync()
    chain = registry.files()["pipeline"].chain
    assert isinstance(chain, Chain)
    result = chain.run(gw, registry, {"text": "The sea rises twice a day."})
    assert result.outputs == {"facts": {"facts": ["tides follow the moon"]}, "title": "Moon Tides"}
    assert result.final == "Moon Tides"
    steps = store.children(result.trace_id)
    assert [(s.prompt_name, s.prompt_version) for s in steps] == [("facts", 1), ("title", 1)]
    assert json.loads(
        steps[1].request["messages"][0]["content"][0]["text"].split("for ", 1)[1]
    ) == {"facts": ["tides follow the moon"]}
    row = store.get(result.trace_id)
    assert (row.kind, row.status) == ("chain", "ok")
    assert row.output_tokens == sum(s.output_tokens for s in steps)


def test_a_failing_chain_step_is_recorded(project: Path, store: Store):
    (project / "prompts" / "ask.toml").write_text('query = "{{ q }}"\n[output]\nformat = "json"\n')
    (project / "prompts" / "one.toml").write_text('[[steps]]\nprompt = "ask"\noutput = "a"\n')
    gw = Gateway(
        settings=Settings(default_model="test"),
        store=store,
        providers={"test": TestModel(["not json"])},
    )
    registry = PromptRegistry(store)
    with pytest.raises(InvalidRequestError, match="should answer JSON"):
        registry.files()["one"].chain.run(gw, registry, {"q": "x"})
    (chain_row,) = [r for r in store.recent(5) if r.kind == "chain"]
    assert chain_row.status == "error" and "should answer JSON" in chain_row.error
    (step,) = store.children(chain_row.id)
    assert step.status == "ok" and step.prompt_name == "ask"


def test_newest_follows_the_file_back_to_an_old_version(project: Path, store: Store):
    registry = PromptRegistry(store)
    path = project / "prompts" / "support.toml"
    registry.sync()
    path.write_text(SUPPORT.replace("warm", "formal"))
    registry.sync()
    path.write_text(SUPPORT)  # back to the first content
    assert registry.sync() == []
    assert registry.get("support").version == 1
    assert registry.get("support").prompt.tone == "warm"


def test_rolling_back_twice_walks_back_twice(project: Path, store: Store):
    registry = PromptRegistry(store)
    path = project / "prompts" / "support.toml"
    for tone in ("warm", "formal", "plain"):
        path.write_text(SUPPORT.replace("warm", tone))
        registry.sync()
    for version in (1, 2, 3):
        registry.promote("support", version)
    assert registry.rollback("support") == 2
    assert registry.rollback("support") == 1


def test_a_file_name_that_is_not_a_prompt_name(tmp_path: Path):
    path = _write(tmp_path, "b@v2.toml", 'query = "q"\n')
    with pytest.raises(ConfigError, match="not a valid prompt name"):
        load_file(path)


def test_template_runtime_errors_are_clear():
    with pytest.raises(InvalidRequestError, match=r"query: the template failed \(TypeError"):
        Prompt(query="{{ n + 1 }}").messages({"n": "3"})
    with pytest.raises(InvalidRequestError, match="power too large"):
        Prompt(query="{{ 9 ** 999999 }}").messages()


def test_a_chain_refuses_variables_no_step_uses(project: Path, store: Store):
    (project / "prompts" / "ask.toml").write_text('query = "{{ q }}"\n')
    (project / "prompts" / "one.toml").write_text('[[steps]]\nprompt = "ask"\noutput = "a"\n')
    gw = Gateway(
        settings=Settings(default_model="test"), store=store, providers={"test": TestModel()}
    )
    registry = PromptRegistry(store)
    with pytest.raises(InvalidRequestError, match="Unknown variable 'qq'"):
        registry.files()["one"].chain.run(gw, registry, {"q": "x", "qq": "typo"})
