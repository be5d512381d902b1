"""The CLI in process, on the test double: output, options, errors at the boundary."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from outcrop import Gateway, Settings, Store
from outcrop.cli import main
from outcrop.cli._common import Ctx
from outcrop.providers.testing import TestModel

from .helpers import run


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch, store: Store) -> TestModel:
    test_model = TestModel(default="a short answer")
    gw = Gateway(
        settings=Settings(default_model="test"), store=store, providers={"test": test_model}
    )
    monkeypatch.setattr(Ctx, "gateway", property(lambda self: gw))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    return test_model


def test_prompt_is_the_default_command(model: TestModel, capsys):
    code, out, _ = run(capsys, "What", "is", "a", "token?")
    assert code == 0
    assert out == "a short answer\n"
    assert model.requests[0].messages[-1].text == "What is a token?"


def test_options_and_system(model: TestModel, capsys):
    code, _, _ = run(
        capsys,
        "-s",
        "be brief",
        "-o",
        "temperature",
        "0.5",
        "-o",
        "stop",
        "X",
        "-o",
        "stop",
        "Y",
        "hi",
    )
    assert code == 0
    request = model.requests[0]
    assert request.temperature == 0.5
    assert request.stop == ["X", "Y"]
    assert request.messages[0].text == "be brief"


def test_json_output(model: TestModel, capsys):
    code, out, _ = run(capsys, "--json", "hi")
    assert code == 0
    data = json.loads(out)
    assert data["message"]["content"][0]["text"] == "a short answer"
    assert data["usage"] == {"input_tokens": 1, "output_tokens": 3, "estimated": False}


def test_piped_stdin_is_the_prompt(model: TestModel, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("text to summarise"))
    code, _, _ = run(capsys, "Summarise:")
    assert code == 0
    assert model.requests[0].messages[-1].text == "text to summarise\n\nSummarise:"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-o", "temperature", "-1", "hi"],
            "temperature: Input should be greater than or equal to 0",
        ),
        (["-o", "max_tokens", "0", "hi"], "max_tokens: Input should be greater than or equal to 1"),
        (["-o", "temprature", "1", "hi"], "Unknown option 'temprature'; options: temperature"),
        ([""], "The prompt is empty"),
        (["-m", "local:smolm2-135m", "hi"], "Did you mean 'local:smollm2-135m'?"),
        (["-m", "gpt-4o", "hi"], "Model ids look like provider:model"),
    ],
)
def test_bad_input_is_one_clear_line(model: TestModel, capsys, args, message):
    code, _out, err = run(capsys, *args)
    assert code == 1
    assert message in err
    assert err.startswith("Error: ")
    assert "Traceback" not in err
    assert model.requests == []


def test_raise_errors_lets_exceptions_through(model: TestModel, monkeypatch, capsys):
    monkeypatch.setenv("OUTCROP_RAISE_ERRORS", "1")
    from outcrop import InvalidRequestError

    with pytest.raises(InvalidRequestError):
        main(["-o", "temperature", "-1", "hi"])


def test_logs_and_usage(model: TestModel, store: Store, capsys):
    run(capsys, "first question")
    run(capsys, "second question")
    code, out, _ = run(capsys, "logs", "-n", "5")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["id", "when", "model"]
    assert len(lines) == 3
    trace_id = store.recent(1)[0].id
    code, out, _ = run(capsys, "logs", "show", trace_id[:16])
    assert code == 0
    assert "second question" in out and "a short answer" in out
    code, out, _ = run(capsys, "logs", "--json")
    assert [r["status"] for r in json.loads(out)] == ["ok", "ok"]
    code, out, _ = run(capsys, "usage", "--json")
    (totals,) = json.loads(out)
    assert (totals["model"], totals["calls"], totals["output_tokens"]) == ("test", 2, 6)
    code, out, err = run(capsys, "logs", "show", "nope")
    assert code == 1 and "No call with id 'nope'" in err


def test_chat_keeps_history_and_exits(model: TestModel, monkeypatch, capsys):
    model.replies.extend(["Hello Ada.", "Your name is Ada."])
    monkeypatch.setattr("sys.stdin", io.StringIO("My name is Ada.\nWhat is my name?\n/exit\n"))
    code, out, _ = run(capsys, "chat")
    assert code == 0
    assert "Your name is Ada." in out
    second = model.requests[1]
    assert [m.text for m in second.messages] == [
        "My name is Ada.",
        "Hello Ada.",
        "What is my name?",
    ]


def test_chat_reset_forgets(model: TestModel, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("one\n/reset\ntwo\n"))
    code, _, _ = run(capsys, "chat")
    assert code == 0
    assert [m.text for m in model.requests[1].messages] == ["two"]


def test_models_list(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0
    ids = {m["id"]: m for m in json.loads(out)}
    assert ids["local:smollm2-135m"]["installed"] is True
    assert ids["local:smollm2-135m"]["default"] is True
    assert "qwen2.5-coder-0.5b" in " ".join(ids)


def test_init_writes_a_config_and_refuses_to_overwrite(capsys, tmp_path: Path):
    target = tmp_path / "app"
    code, _out, _ = run(capsys, "init", str(target))
    assert code == 0
    assert (target / "outcrop.toml").is_file()
    code, _, err = run(capsys, "init", str(target))
    assert code == 1 and "already exists" in err


def test_malformed_config_names_file_and_line(capsys, tmp_path: Path, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    (Path.cwd() / "outcrop.toml").write_text(
        'default_model = "local:smollm2-135m"\ntemperature = 2\n'
    )
    code, _, err = run(capsys, "hi")
    assert code == 1
    assert "outcrop.toml:2: temperature: unknown setting" in err


def test_logs_path(model: TestModel, store: Store, capsys):
    code, out, _ = run(capsys, "logs", "path")
    assert code == 0
    assert out.strip() == str(store.path)


def test_stdin_that_is_not_utf8_still_works(model: TestModel, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("caf\udce9 menu"))  # how Python keeps a bad byte
    code, _, err = run(capsys, "Translate:")
    assert code == 0, err
    assert model.requests[0].messages[-1].text.startswith("caf\ufffd menu")


def test_a_damaged_database_is_one_clear_line(capsys, monkeypatch, outcrop_home: Path):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    outcrop_home.mkdir(parents=True, exist_ok=True)
    (outcrop_home / "outcrop.db").write_bytes(b"this is not sqlite" * 100)
    code, _, err = run(capsys, "logs")
    assert code == 1
    assert "is not a usable outcrop database" in err and "Move it aside" in err
    assert "Traceback" not in err


def test_home_that_is_a_file_is_one_clear_line(capsys, monkeypatch, tmp_path: Path):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("OUTCROP_HOME", str(blocker))
    code, _, err = run(capsys, "logs")
    assert code == 1
    assert "is not a folder" in err


def test_logs_path_names_the_postgresql_store(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys
):
    monkeypatch.setenv("OUTCROP_DATABASE_URL", postgres_url)
    code, out, _ = run(capsys, "logs", "path")
    assert code == 0
    store = Store(postgres_url)
    try:
        assert out.strip() == store.url and out.startswith("postgresql://")
    finally:
        store.close()
