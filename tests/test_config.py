from pathlib import Path

import pytest

from outcrop import ConfigError, load_settings
from outcrop.config import DEFAULT_MODEL, find_config, home, render_default_config


def test_defaults_without_a_file():
    settings = load_settings()
    assert settings.default_model == DEFAULT_MODEL
    assert settings.path is None


def test_home_follows_the_environment(outcrop_home: Path):
    assert home() == outcrop_home
    assert outcrop_home.is_dir()


def test_found_in_a_parent_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "outcrop.toml").write_text('default_model = "local:qwen2.5-coder-0.5b"\n')
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_config() == tmp_path / "outcrop.toml"
    assert load_settings().default_model == "local:qwen2.5-coder-0.5b"


def test_environment_overrides_the_default_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OUTCROP_MODEL", "local:/models/x.gguf")
    assert load_settings().default_model == "local:/models/x.gguf"


def test_the_init_template_loads(tmp_path: Path):
    path = tmp_path / "outcrop.toml"
    path.write_text(render_default_config())
    settings = load_settings(path)
    assert settings.aliases == {"fast": DEFAULT_MODEL}
    assert settings.retry.max_attempts == 3


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('default_model = "x"\nfallbacks = [\n', 2, "not valid TOML"),
        ('default_model = "x"\n\nname = = 3\n', 3, "not valid TOML"),
        ('default_model = "x"\nmodle = "y"\n', 2, "modle: unknown setting"),
        ("[retry]\nmax_attempts = 0\n", 2, "retry.max_attempts"),
        ('fallbacks = "local:x"\n', 1, "fallbacks"),
    ],
)
def test_malformed_file_names_file_and_line(tmp_path: Path, text: str, line: int, words: str):
    path = tmp_path / "outcrop.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.path == path
    assert info.value.line == line
    assert f"{path}:{line}:" in str(info.value)
    assert words in str(info.value)


def test_unreadable_file_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "outcrop.toml"
    path.write_bytes(b'default_model = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_settings(path)
    folder = tmp_path / "dir"
    folder.mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(folder)
