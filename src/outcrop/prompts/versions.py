"""Prompt versions and labels, kept in outcrop's database.

Every change to a named prompt becomes an immutable version: its canonical
content, a hash of it, when, who and why. Labels (``production``, ``staging``,
any name) point at versions; promoting moves a label, rolling back moves it to
where it pointed before. A reference is ``name`` (the newest version),
``name@3`` (version 3) or ``name@production`` (what the label points at).
"""

from __future__ import annotations

import difflib
import getpass
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidRequestError
from ..observe.store import Store
from .files import PromptFile, load_file, project_prompts
from .prompt import Prompt

__all__ = ["PromptRegistry", "PromptVersion", "parse_ref"]

_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class PromptVersion:
    name: str
    version: int
    hash: str
    prompt: Prompt
    created_at: float
    author: str | None
    note: str | None
    path: str | None
    source: str | None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``name@selector`` → (name, selector); selector is a version number or a label."""
    name, _, selector = ref.partition("@")
    return name, selector or None


def _author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class PromptRegistry:
    """The prompts of a project (``prompts/``) and their stored versions."""

    def __init__(self, store: Store, folder: Path | None = None):
        self.store = store
        self.folder = folder

    # -- files to versions --------------------------------------------------

    def files(self) -> dict[str, PromptFile]:
        return project_prompts(self.folder)

    def record(
        self,
        prompt: Prompt,
        *,
        source: str | None = None,
        path: Path | None = None,
        note: str | None = None,
    ) -> PromptVersion:
        """Store ``prompt`` as a new version if its content is new; return its version."""
        if not prompt.name:
            raise InvalidRequestError("A prompt needs a name to be versioned.", field="name")
        version, _ = self.store.add_prompt_version(
            name=prompt.name,
            content_hash=prompt.content_hash(),
            content=prompt.canonical(),
            source=source,
            path=str(path) if path else None,
            author=_author(),
            note=note
            or ("first version" if not self.store.prompt_versions(prompt.name) else "edited"),
            created_at=time.time(),
        )
        return self.get(f"{prompt.name}@{version}")

    def sync(self, note: str | None = None) -> list[PromptVersion]:
        """Record a version for every prompt file whose content changed; returns the new ones."""
        new = []
        for file in self.files().values():
            if file.prompt is None:
                continue
            before = {v["hash"] for v in self.store.prompt_versions(file.name)}
            version = self.record(file.prompt, source=file.source, path=file.path, note=note)
            if version.hash not in before:
                new.append(version)
        return new

    # -- lookups ------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(
            set(self.store.prompt_names())
            | {n for n, f in self.files().items() if f.prompt is not None}
        )

    def versions(self, name: str) -> list[PromptVersion]:
        return [self._version(row) for row in self.store.prompt_versions(name)]

    @staticmethod
    def _version(row: dict[str, object]) -> PromptVersion:
        prompt = Prompt.model_validate(json.loads(str(row["content"])))
        return PromptVersion(
            name=str(row["name"]),
            version=int(row["version"]),  # type: ignore[call-overload]
            hash=str(row["hash"]),
            prompt=prompt,
            created_at=float(row["created_at"]),  # type: ignore[arg-type]
            author=row["author"] if isinstance(row["author"], str) else None,
            note=row["note"] if isinstance(row["note"], str) else None,
            path=row["path"] if isinstance(row["path"], str) else None,
            source=row["source"] if isinstance(row["source"], str) else None,
        )

    def labels(self, name: str) -> dict[str, int]:
        return self.store.prompt_labels(name)

    def get(self, ref: str) -> PromptVersion:
        """The version a reference names: ``name``, ``name@3`` or ``name@label``."""
        name, selector = parse_ref(ref)
        versions = self.versions(name)
        if not versions and name in self.files():
            self.sync()  # a file not recorded yet
            versions = self.versions(name)
        if not versions:
            known = self.names()
            close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise InvalidRequestError(
                f"No prompt named {name!r}.{hint} Prompts: {', '.join(known) or 'none yet'} "
                "(files in prompts/ of your project).",
                field="prompt",
            )
        if selector is None:
            file = self.files().get(name)
            if file is not None and file.prompt is not None:
                current = file.prompt.content_hash()
                for v in versions:  # the file's content, even if it went back to an old one
                    if v.hash == current:
                        return v
            return versions[-1]
        if selector.isdigit():
            wanted = int(selector)
            for v in versions:
                if v.version == wanted:
                    return v
            raise InvalidRequestError(
                f"{name} has no version {wanted}; versions: "
                f"{', '.join(str(v.version) for v in versions)}.",
                field="prompt",
            )
        labels = self.labels(name)
        if selector not in labels:
            close = (
                difflib.get_close_matches(selector, list(labels), n=1, cutoff=0.6)
                or [label for label in labels if label.startswith(selector)][:1]
            )
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InvalidRequestError(
                f"{name} has no label {selector!r}.{hint} Labels: "
                f"{', '.join(f'{k} → {v}' for k, v in labels.items()) or 'none yet'}; "
                f"versions: {', '.join(str(v.version) for v in versions)}.",
                field="prompt",
            )
        return next(v for v in versions if v.version == labels[selector])

    def resolve(self, ref_or_file: str) -> PromptVersion:
        """A reference, or a path to a prompt file (recorded as a version on the way)."""
        path = Path(ref_or_file)
        if path.suffix in (".toml", ".yaml", ".yml") and (path.exists() or "/" in ref_or_file):
            file = load_file(path)
            if file.prompt is None:
                raise InvalidRequestError(f"{path} holds a chain, not a prompt", field="prompt")
            return self.record(file.prompt, source=file.source, path=path)
        self.sync()
        return self.get(ref_or_file)

    # -- labels -------------------------------------------------------------

    def promote(self, name: str, version: int | str, label: str = "production") -> int | None:
        """Point ``label`` at a version; returns the version it pointed at before."""
        if not _LABEL.match(label):
            raise InvalidRequestError(
                f"Label {label!r} is not valid: letters, digits, '-' and '_', "
                "starting with a letter",
                field="label",
            )
        target = self.get(f"{name}@{version}")
        return self.store.move_prompt_label(name, label, target.version, time.time())

    def rollback(self, name: str, label: str = "production") -> int:
        """Move ``label`` back to the version it pointed at before its last move."""
        moves = self.store.prompt_label_moves(name, label)
        if not moves:
            raise InvalidRequestError(
                f"{name} has no label {label!r} to roll back; labels: "
                f"{', '.join(self.labels(name)) or 'none'}",
                field="label",
            )
        # Promotions and rollbacks form a stack: each rollback undoes the newest promotion
        # that no earlier rollback undid.
        undone = 0
        previous: int | None = None
        for move in moves:
            if move.get("kind") == "rollback":
                undone += 1
            elif undone:
                undone -= 1
            else:
                previous = move["previous"]
                break
        if previous is None:
            raise InvalidRequestError(
                f"{name}@{label} has never pointed anywhere else; nothing to roll back to",
                field="label",
            )
        self.store.move_prompt_label(name, label, int(previous), time.time(), kind="rollback")
        return int(previous)
