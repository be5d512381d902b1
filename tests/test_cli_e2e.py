"""The installed `outcrop` command as a person runs it, on the real local model."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

OUTCROP = [sys.executable, "-m", "outcrop"]


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OUTCROP_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("OUTCROP_RAISE_ERRORS", None)
    return env


def _rows(home: Path) -> list[tuple]:
    db = sqlite3.connect(home / "outcrop.db")
    rows = db.execute(
        "SELECT status, stream, input_tokens, output_tokens FROM traces ORDER BY started_at"
    ).fetchall()
    db.close()
    return rows


def test_a_question_streams_an_answer_and_is_logged(outcrop_home: Path):
    proc = subprocess.Popen(
        [*OUTCROP, "-o", "max_tokens", "48", "What is a token?"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=_env(outcrop_home),
    )
    assert proc.stdout is not None
    first = proc.stdout.read1(64)  # arrives while the model is still writing
    still_running = proc.poll() is None
    rest, err = proc.communicate(timeout=120)
    answer = (first + rest).decode()
    assert proc.returncode == 0, err.decode()
    assert first and still_running
    assert len(answer.split()) >= 5
    (row,) = _rows(outcrop_home)
    assert row[0] == "ok" and row[1] == 1 and row[3] > 0
    logs = subprocess.run(
        [*OUTCROP, "logs"], capture_output=True, text=True, env=_env(outcrop_home), check=True
    )
    assert "local:smollm2-135m" in logs.stdout


def test_ctrl_c_stops_the_stream_cleanly(outcrop_home: Path):
    proc = subprocess.Popen(
        [*OUTCROP, "-o", "max_tokens", "400", "Write a long story about the sea."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=_env(outcrop_home),
    )
    assert proc.stdout is not None
    proc.stdout.read1(16)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert b"Traceback" not in err
    assert b"[stopped]" in err
    ((status, _stream, _, output_tokens),) = _rows(outcrop_home)
    assert status == "cancelled"
    assert 0 < output_tokens < 400


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "local:smolm2", "hi"], "Did you mean 'local:smollm2-135m'?"),
        (["-m", "local:/no/such/model.gguf", "hi"], "does not exist"),
        (["-m", f"local:{__file__}", "hi"], "is not a GGUF model file"),
        (["-o", "temperature", "-1", "hi"], "temperature"),
        (["-o", "max_tokens", "0", "hi"], "max_tokens"),
        ([""], "The prompt is empty"),
    ],
)
def test_bad_input_exits_non_zero_without_a_traceback(outcrop_home: Path, args, message):
    result = subprocess.run(
        [*OUTCROP, *args], capture_output=True, text=True, env=_env(outcrop_home), timeout=60
    )
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_checksum_mismatch_exits_cleanly(outcrop_home: Path):
    damaged = outcrop_home / "models" / "qwen2.5-coder-0.5b.gguf"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"GGUF" + b"\1" * 100)
    result = subprocess.run(
        [*OUTCROP, "-m", "local:qwen2.5-coder-0.5b", "hi"],
        capture_output=True,
        text=True,
        env=_env(outcrop_home),
        timeout=60,
    )
    assert result.returncode == 1
    assert "Checksum mismatch" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_config_exits_cleanly(outcrop_home: Path, tmp_path: Path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "outcrop.toml").write_text('default_model = "local:smollm2-135m"\nfallbacks = [\n')
    result = subprocess.run(
        [*OUTCROP, "hi"],
        capture_output=True,
        text=True,
        env=_env(outcrop_home),
        cwd=project,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"{project / 'outcrop.toml'}:2:" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_does_not_load_llama_cpp(outcrop_home: Path):
    code = "import sys, outcrop; print('llama_cpp' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(outcrop_home)
    )
    assert result.stdout.strip() == "False"
