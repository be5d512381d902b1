"""``outcrop prompts`` and ``outcrop tokens`` as a person runs them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from outcrop import Gateway, Settings, Store
from outcrop.cli._common import Ctx
from outcrop.prompts import Prompt
from outcrop.providers.local import LocalProvider
from outcrop.providers.testing import TestModel

from .helpers import run
from .test_prompt_lint import GOOD
from .test_prompts import SUPPORT


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    (root / "prompts").mkdir(parents=True)
    (root / "outcrop.toml").write_text("")
    (root / "prompts" / "support.toml").write_text(SUPPORT)
    monkeypatch.chdir(root)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    return root


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch, store: Store, project: Path) -> TestModel:
    test_model = TestModel(default="We refund within 30 days.")
    gw = Gateway(
        settings=Settings(default_model="test"), store=store, providers={"test": test_model}
    )
    monkeypatch.setattr(Ctx, "gateway", property(lambda self: gw))
    return test_model


def test_list_show_promote_rollback(model: TestModel, project: Path, capsys):
    code, out, _ = run(capsys, "prompts")
    assert code == 0 and out.startswith("support@1")
    (project / "prompts" / "support.toml").write_text(SUPPORT.replace("warm", "formal"))
    code, out, _ = run(capsys, "prompts", "promote", "support", "2")
    assert out.strip() == "support@production → version 2"
    code, out, _ = run(capsys, "prompts", "promote", "support", "1")
    assert out.strip() == "support@production → version 1 (was 2)"
    code, out, _ = run(capsys, "prompts", "rollback", "support")
    assert out.strip() == "support@production → version 2"
    code, out, _ = run(capsys, "prompts", "show", "support@production", "--json")
    data = json.loads(out)
    assert (data["version"], data["labels"]) == (2, {"production": 2})
    assert [v["version"] for v in data["versions"]] == [1, 2]
    code, _, err = run(capsys, "prompts", "show", "support@staging")
    assert code == 1 and "Labels: production → 2" in err


def test_run_records_name_and_version(model: TestModel, store: Store, capsys):
    code, out, _ = run(capsys, "prompts", "run", "support", "--var", "question=Refunds?")
    assert code == 0 and out.strip() == "We refund within 30 days."
    row = store.recent(1)[0]
    assert (row.prompt_name, row.prompt_version) == ("support", 1)
    assert model.requests[0].messages[-1].text.endswith("Question: Refunds?")
    code, out, _ = run(capsys, "logs", "show", row.id)
    assert "prompt:    support@1" in out


def test_run_with_a_typo_in_a_variable(model: TestModel, capsys):
    code, _, err = run(capsys, "prompts", "run", "support", "--var", "qestion=x")
    assert code == 1
    assert "Did you mean 'question' for 'qestion'?" in err


def test_bad_var_syntax(model: TestModel, capsys):
    code, _, err = run(capsys, "prompts", "run", "support", "--var", "question")
    assert code == 1 and "--var takes NAME=VALUE" in err


def test_compare_two_versions(model: TestModel, project: Path, capsys):
    run(capsys, "prompts")
    (project / "prompts" / "support.toml").write_text(SUPPORT.replace("warm", "formal"))
    model.replies.extend(["first answer", "second answer"])
    code, out, err = run(
        capsys, "prompts", "compare", "support@1", "support@2", "--var", "question=q", "--json"
    )
    assert code == 0, err
    (row,) = json.loads(out)
    assert [(r["prompt"], r["text"]) for r in row["results"]] == [
        ("support@1", "first answer"),
        ("support@2", "second answer"),
    ]
    code, out, _ = run(
        capsys, "prompts", "compare", "support@1", "support@2", "--var", "question=q"
    )
    assert "support@1 on test" in out and "support@2 on test" in out


def test_compare_inputs_file_and_errors(model: TestModel, project: Path, capsys):
    inputs = project / "inputs.jsonl"
    inputs.write_text('{"question": "a"}\n{"question": "b"}\n')
    code, out, _ = run(
        capsys,
        "prompts",
        "compare",
        "support",
        "-m",
        "test",
        "-m",
        "test:other",
        "--inputs",
        str(inputs),
        "--json",
    )
    assert code == 0
    assert [r["variables"]["question"] for r in json.loads(out)] == ["a", "b"]
    inputs.write_text('{"question": "a"}\nnot json\n')
    code, _, err = run(
        capsys,
        "prompts",
        "compare",
        "support",
        "-m",
        "test",
        "-m",
        "test:x",
        "--inputs",
        str(inputs),
    )
    assert code == 1 and "inputs.jsonl:2: not JSON" in err
    code, _, err = run(capsys, "prompts", "compare", "support", "--var", "question=q")
    assert code == 1 and "two or more columns" in err


def test_a_malformed_file_names_file_line_and_field(model: TestModel, project: Path, capsys):
    (project / "prompts" / "broken.toml").write_text('query = "q"\ntone = 3\n')
    code, _, err = run(capsys, "prompts")
    assert code == 1
    assert "broken.toml:2: tone: Input should be a valid string" in err


# -- on the real local model ---------------------------------------------


@pytest.mark.slow
def test_render_is_what_llama_cpp_receives(project: Path, store: Store):
    """Our rendering equals llama.cpp's own chat-template application and token count."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    gw = Gateway(settings=Settings(), store=store)
    prompt = Prompt(**GOOD)
    request = prompt.request(model="local:smollm2-135m")
    rendered = gw.render(request)
    llama = LocalProvider().llama("smollm2-135m")
    model = llama._model
    formatter = Jinja2ChatFormatter(
        template=llama.metadata["tokenizer.chat_template"],
        eos_token=model.token_get_text(llama.token_eos()),
        bos_token=model.token_get_text(llama.token_bos()),
    )
    messages = [{"role": m.role, "content": m.text} for m in request.messages]
    assert rendered.text == formatter(messages=messages).prompt
    raw = llama.create_chat_completion(messages, max_tokens=1, temperature=0)
    assert rendered.tokens == raw["usage"]["prompt_tokens"]
    assert not rendered.estimated and rendered.context_window == 4096


@pytest.mark.slow
def test_render_and_lint_commands_on_the_local_model(project: Path, capsys):
    code, out, err = run(
        capsys, "prompts", "render", "support", "--var", "question=Refunds?", "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["model"] == "local:smollm2-135m" and not data["estimated"]
    assert data["text"].startswith("<|im_start|>system\nYou are a support agent")
    assert sum(data["message_tokens"]) < data["tokens"]  # the template adds its own tokens
    code, out, _ = run(capsys, "prompts", "lint", "support", "--json")
    report = json.loads(out)
    assert code == 1  # SUPPORT names no output format
    failed = {c["id"] for c in report["checks"] if not c["passed"]}
    assert failed == {"output-format"}
    assert report["tokens"] > 50 and report["context_window"] == 4096
    (project / "prompts" / "good.toml").write_text(
        "\n".join(
            f"{k} = {json.dumps(v)}"
            for k, v in GOOD.items()
            if isinstance(v, str | list) and k != "examples"
        )
        + '\n[output]\ndescription = "two sentences"\n[[examples]]\ninput = "a"\noutput = "b"\n'
    )
    code, out, err = run(capsys, "prompts", "lint", "good")
    assert code == 0, out + err
    assert out.startswith("good@1: 100/100")


@pytest.mark.slow
def test_tokens_command(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    text = "Tokenization splits naïve text."
    code, out, _ = run(capsys, "tokens", text, "--json")
    assert code == 0
    data = json.loads(out)
    assert "".join(p["text"] for p in data["pieces"]) == text
    assert data["tokens"] == len(data["pieces"]) == 7
    assert data["share_of_context"] == pytest.approx(7 / 4096)
    assert data["cost_usd_as_input"] == 0.0
    code, out, _ = run(capsys, "tokens", "--ids", "hello world")
    assert "[" in out and "2 tokens on local:smollm2-135m" in out


def test_bad_labels_and_versions(model: TestModel, capsys):
    code, _, err = run(capsys, "prompts", "promote", "support", "1", "--label", "no spaces")
    assert code == 1 and "is not valid" in err
    code, _, err = run(capsys, "prompts", "promote", "support", "9")
    assert code == 1 and "no version 9; versions: 1" in err
    code, _, err = run(capsys, "prompts", "rollback", "support")
    assert code == 1 and "no label 'production' to roll back" in err
    code, _, err = run(capsys, "prompts", "render", "nothing")
    assert code == 1 and "No prompt named 'nothing'" in err


def test_tokens_needs_text(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(capsys, "tokens", "")
    assert code == 1 and "Give text to tokenize" in err


@pytest.mark.slow
def test_run_on_the_real_local_model(project: Path, store: Store, capsys):
    code, out, err = run(
        capsys,
        "prompts",
        "run",
        "support",
        "--var",
        "question=Refunds?",
        "-o",
        "max_tokens",
        "12",
        "-o",
        "temperature",
        "0",
    )
    assert code == 0, err
    assert out.strip()
    from outcrop import Gateway, Settings

    row = Gateway(settings=Settings()).store.recent(1)[0]
    assert (row.model, row.prompt_name, row.prompt_version) == ("local:smollm2-135m", "support", 1)
    assert 0 < row.output_tokens <= 12
