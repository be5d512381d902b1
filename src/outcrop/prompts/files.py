"""Prompt files: TOML or YAML in ``prompts/`` of an outcrop project.

A file holds one prompt (its fields are :class:`~outcrop.prompts.Prompt`'s) or
one chain (a file with ``steps``). The prompt's name is its ``name`` field, else
the file's stem. Errors name the file, the line and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..config import find_config, load_toml, toml_line
from ..errors import ConfigError
from .chain import Chain
from .prompt import Prompt

__all__ = ["PROMPT_SUFFIXES", "PromptFile", "load_file", "project_prompts", "prompts_dir"]

PROMPT_SUFFIXES = (".toml", ".yaml", ".yml")


@dataclass
class PromptFile:
    path: Path
    source: str
    prompt: Prompt | None = None
    chain: Chain | None = None

    @property
    def name(self) -> str:
        item = self.prompt or self.chain
        assert item is not None
        return item.name or self.path.stem


def prompts_dir(start: Path | None = None) -> Path:
    """``prompts/`` beside the nearest outcrop.toml, else in the current folder."""
    config = find_config(start)
    root = config.parent if config else (start or Path.cwd())
    return root / "prompts"


def project_prompts(folder: Path | None = None) -> dict[str, PromptFile]:
    """Every prompt and chain file in the project, by name. Two files with one name are an error."""
    folder = folder or prompts_dir()
    found: dict[str, PromptFile] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.rglob("*")):
        if path.suffix not in PROMPT_SUFFIXES or not path.is_file():
            continue
        loaded = load_file(path)
        if loaded.name in found:
            raise ConfigError(
                f"two prompt files are named {loaded.name!r}: {found[loaded.name].path} and "
                "this one; rename one (the name field, or the file)",
                path=path,
            )
        found[loaded.name] = loaded
    return found


def yaml_line(text: str, loc: list[str]) -> int | None:
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            if match is None:
                key = next((k for k, v in node.value if k.value == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
        else:
            break
        line = node.start_mark.line + 1
    return line


def parse_mapping(path: Path, text: str, what: str = "a prompt file") -> dict[str, Any]:
    """A YAML or TOML file's top-level mapping; errors carry the file and line."""
    if path.suffix == ".toml":
        return load_toml(text, path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"not valid YAML: {problem}", path=path, line=mark.line + 1 if mark else None
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} holds a mapping of fields (name: …)", path=path, line=1)
    return data


def load_file(path: Path) -> PromptFile:
    """Read one prompt or chain file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such prompt file", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it ({exc.__class__.__name__}: {exc})", path=path) from None
    if path.suffix not in PROMPT_SUFFIXES:
        raise ConfigError(f"a prompt file ends in {', '.join(PROMPT_SUFFIXES)}", path=path)
    data = parse_mapping(path, text)
    is_chain = "steps" in data
    try:
        if is_chain:
            return PromptFile(path=path, source=text, chain=Chain.model_validate(data))
        prompt = Prompt.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        line = (toml_line if path.suffix == ".toml" else yaml_line)(text, loc) if loc else None
        field = ".".join(loc) or "(file)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            known = ", ".join(sorted((Chain if is_chain else Prompt).model_fields))
            message = f"unknown field (fields: {known})"
        elif err["type"] == "missing":
            message = "missing; every prompt needs a query" if field == "query" else "missing"
        raise ConfigError(f"{field}: {message}", path=path, line=line) from None
    if prompt.name is None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", path.stem):
            raise ConfigError(
                f"the file name {path.stem!r} is not a valid prompt name (letters, digits, "
                "'_', '-', '.'); rename the file or set name = \"…\" in it",
                path=path,
                line=1,
            )
        prompt = prompt.model_copy(update={"name": path.stem})
    return PromptFile(path=path, source=text, prompt=prompt)
