"""The CLI's remote-model surfaces: keys, images, and one-line errors for remote mistakes."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
from pathlib import Path

import pytest

from .fake_openai import FakeOpenAI
from .helpers import run


@pytest.fixture(autouse=True)
def no_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))


@pytest.fixture
def fake(outcrop_home: Path):
    server = FakeOpenAI().start()
    Path("outcrop.toml").write_text(f'[endpoints.fake]\nbase_url = "{server.base_url}"\n')
    yield server
    server.stop()


def test_keys_are_stored_privately_and_never_printed(capsys, outcrop_home: Path):
    code, out, _ = run(capsys, "keys", "set", "openai", "--value", "sk-secret-123")
    assert code == 0 and "sk-secret" not in out
    path = outcrop_home / "keys.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text()) == {"openai": "sk-secret-123"}
    code, out, _ = run(capsys, "keys")
    assert out.strip() == "openai"
    code, out, _ = run(capsys, "keys", "remove", "openai")
    assert code == 0
    code, _, err = run(capsys, "keys", "remove", "openai")
    assert code == 1 and "No stored key named 'openai'" in err


def test_a_bad_key_name_is_refused(capsys):
    code, _, err = run(capsys, "keys", "set", "no spaces", "--value", "x")
    assert code == 1 and "not valid" in err


def test_a_missing_key_is_one_line(capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, _, err = run(capsys, "-m", "openai:gpt-4o-mini", "hi")
    assert code == 1
    assert err.strip() == (
        "Error: No key for openai: set OPENAI_API_KEY or run `outcrop keys set openai`."
    )


def test_a_wrong_base_url_is_one_line(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    Path("outcrop.toml").write_text(
        f'[endpoints.vllm]\nbase_url = "http://127.0.0.1:{port}/v1"\n[retry]\nmax_attempts = 1\n'
    )
    code, _, err = run(capsys, "-m", "vllm:llama", "hi")
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "Cannot reach vllm" in err and "[endpoints.vllm]" in err


def test_an_unknown_bedrock_model_is_one_line(capsys):
    code, _, err = run(capsys, "-m", "bedrock:anthropic.claude-3-haiku-20240307", "hi")
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "Did you mean 'bedrock:anthropic.claude-3-haiku-20240307-v1:0'?" in err


def test_a_remote_answer_streams_and_is_logged(capsys, fake: FakeOpenAI):
    code, out, err = run(capsys, "-m", "fake:any", "hi")
    assert code == 0, err
    assert out.strip() == "Hello from the fake server."
    code, out, _ = run(capsys, "logs", "--json")
    (row,) = json.loads(out)
    assert (row["model"], row["input_tokens"], row["output_tokens"]) == ("fake:any", 11, 5)


def test_image_command(capsys, fake: FakeOpenAI, tmp_path: Path):
    code, out, err = run(
        capsys, "image", "a red dot", "-m", "fake:painter", "-d", str(tmp_path), "-n", "2"
    )
    assert code == 0, err
    paths = [Path(p) for p in out.split()]
    assert len(paths) == 2 and all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


def test_image_command_bad_size(capsys, fake: FakeOpenAI):
    code, _, err = run(capsys, "image", "x", "-m", "fake:painter", "--size", "big")
    assert code == 1 and "size must look like 1024x1024" in err


def test_endpoint_names_are_checked(capsys):
    Path("outcrop.toml").write_text('[endpoints.Bad_Name]\nbase_url = "http://127.0.0.1:1/v1"\n')
    code, _, err = run(capsys, "hi")
    assert code == 1
    assert "outcrop.toml:1: endpoints.Bad_Name" in err
