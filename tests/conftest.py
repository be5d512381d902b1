"""Shared fixtures: every test gets its own outcrop home and an empty working folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from outcrop import Gateway, Settings, Store
from outcrop.providers.testing import TestModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def outcrop_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("OUTCROP_HOME", str(home))
    monkeypatch.delenv("OUTCROP_MODEL", raising=False)
    monkeypatch.delenv("OUTCROP_RAISE_ERRORS", raising=False)
    monkeypatch.chdir(work)
    return home


@pytest.fixture
def store(outcrop_home: Path) -> Iterator[Store]:
    s = Store(outcrop_home / "outcrop.db")
    yield s
    s.close()


@pytest.fixture
def test_model() -> TestModel:
    return TestModel()


@pytest.fixture
def gateway(store: Store, test_model: TestModel) -> Gateway:
    """A gateway whose default model is the test double, with instant back-off."""
    settings = Settings(default_model="test")
    return Gateway(
        settings=settings, store=store, providers={"test": test_model}, sleep=lambda s: None
    )
