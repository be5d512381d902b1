"""Examples in docs/ run as tests, so the docs cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _python_blocks(page: str) -> list[str]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_test_double_example_runs():
    blocks = [b for b in _python_blocks("getting-started.md") if "TestModel" in b]
    assert len(blocks) == 1
    exec(compile(blocks[0], "getting-started.md", "exec"), {})


@pytest.mark.slow
def test_the_python_api_example_runs(capsys):
    blocks = [b for b in _python_blocks("getting-started.md") if "gw.stream(" in b]
    assert len(blocks) == 1
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "getting-started.md", "exec"), namespace)
    person = namespace["person"]
    assert isinstance(person, dict) and {"name", "age"} <= set(person)


def test_the_toml_example_loads(tmp_path: Path):
    from outcrop import load_settings

    text = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```toml\n(.*?)```", text, flags=re.S)]
    path = tmp_path / "outcrop.toml"
    path.write_text(block)
    settings = load_settings(path)
    assert settings.fallbacks == ["local:qwen2.5-coder-0.5b"]


def test_every_toml_example_in_remote_models_loads(tmp_path: Path):
    from outcrop import load_settings

    text = (DOCS / "remote-models.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 3
    for i, block in enumerate(blocks):
        path = tmp_path / f"{i}.toml"
        path.write_text(block)
        settings = load_settings(path)
        assert settings.endpoints["openai"].key_env == "OPENAI_API_KEY"
    assert (
        load_settings(tmp_path / "0.toml").endpoints["llamacpp"].json_schema_mode == "json_object"
    )


def test_prompt_guide_python_examples_run():
    blocks = _python_blocks("prompts.md")
    runnable = [b for b in blocks if "Gateway()" not in b]
    assert len(runnable) == 3
    namespace: dict[str, object] = {}  # the page reads top to bottom: later blocks use earlier ones
    for block in runnable:
        exec(compile(block, "prompts.md", "exec"), namespace)


def test_prompt_guide_files_load(tmp_path: Path):
    from outcrop.prompts import Chain, load_file

    text = (DOCS / "prompts.md").read_text(encoding="utf-8")
    prompt_block, chain_block = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    (tmp_path / "support.toml").write_text(prompt_block)
    support = load_file(tmp_path / "support.toml").prompt
    assert support is not None and support.options.temperature == 0.2
    assert support.messages({"question": "q"})[-1].text.startswith("Context:\nReturns")
    (tmp_path / "brief.toml").write_text(chain_block)
    chain = load_file(tmp_path / "brief.toml").chain
    assert isinstance(chain, Chain) and [s.output for s in chain.steps] == ["facts", "headline"]


@pytest.mark.slow
def test_rag_guide_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    (block,) = _python_blocks("rag.md")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "passwords.md").write_text(
        "# Accounts\n\n## Resetting a password\n\nOpen Settings, choose Security and click "
        "Reset password. The reset link expires after 30 minutes.\n"
    )
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(block, "rag.md", "exec"), namespace)
    answer = namespace["answer"]
    assert answer.found and answer.citations  # type: ignore[attr-defined]
    assert "passwords.md" in capsys.readouterr().out


def test_agents_guide_example_runs(capsys):
    (block,) = _python_blocks("agents.md")[:1]
    exec(compile(block, "agents.md", "exec"), {})
    assert "409.50 euros" in capsys.readouterr().out


def test_evaluation_guide_python_example_runs():
    (block,) = _python_blocks("evaluation.md")
    exec(compile(block, "evaluation.md", "exec"), {})


def test_evaluation_guide_suites_load(tmp_path: Path):
    from outcrop.evals import load_suite

    text = (DOCS / "evaluation.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2
    for i, block in enumerate(blocks):
        path = tmp_path / f"suite{i}.yaml"
        path.write_text(block)
        suite = load_suite(path)
        assert suite.metric_specs()
    assert load_suite(tmp_path / "suite0.yaml").models == [
        "local:smollm2-135m",
        "local:qwen2.5-coder-0.5b",
    ]


def test_deploy_guide_agents_table_loads(tmp_path: Path):
    from outcrop import load_settings
    from outcrop.serve.config import agents_from_settings

    text = (DOCS / "deploy.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    path = tmp_path / "outcrop.toml"
    path.write_text(block)
    agents = agents_from_settings(load_settings(path))
    assert agents["maths"]["tools"] == ["calculator"]
    path.write_text(block.replace('"calculator"', '"calculater"'))
    from outcrop.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown tool 'calculater'"):
        agents_from_settings(load_settings(path))


def test_models_guide_python_example_runs():
    (block,) = _python_blocks("models.md")
    exec(compile(block, "models.md", "exec"), {})


def test_guardrails_guide_policy_loads(tmp_path: Path):
    from outcrop import load_settings
    from outcrop.guardrails import GuardPolicy

    text = (DOCS / "guardrails.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    path = tmp_path / "outcrop.toml"
    path.write_text(block)
    policy = GuardPolicy.from_mapping(load_settings(path).guardrails)
    assert policy.retrieved.injection == "block" and policy.topics[0].name == "medical advice"


def test_scale_out_guide_storage_examples_run(postgres_url: str, tmp_path: Path) -> None:
    from outcrop import Store, load_settings
    from outcrop.observe.store import StoreError

    text = (DOCS / "scale-out.md").read_text(encoding="utf-8")
    (toml,) = [b for b in re.findall(r"```toml\n(.*?)```", text, flags=re.S) if "database_url" in b]
    (tmp_path / "outcrop.toml").write_text(toml)
    url = load_settings(tmp_path / "outcrop.toml").storage.database_url
    assert url == "postgresql://outcrop@db.internal:5432/outcrop"
    (block,) = [b for b in _python_blocks("scale-out.md") if "Store(url)" in b]
    code = block.replace("postgresql://outcrop:secret@127.0.0.1:5432/outcrop", postgres_url)
    assert code != block  # the example runs against the test server
    exec(compile(code, "scale-out.md", "exec"), {})
    # The start-up error shown is the one outcrop prints.
    (shown,) = [line.strip() for line in text.splitlines() if "Cannot connect" in line]
    with pytest.raises(StoreError) as err:
        Store("postgresql://outcrop:secret@127.0.0.1:1/outcrop")
    assert shown == "Error: " + str(err.value).replace("127.0.0.1:1", "db.internal:5432")
