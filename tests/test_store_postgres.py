"""Past one machine: replicas sharing one database, migrations racing, a connection dropped
under a running store, an unreachable server, ``outcrop migrate``, OUTCROP_DATABASE_URL;
and what users build on the store (budgets, prompt versions, eval runs) on each engine."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import psycopg
import pytest

from outcrop import Gateway, Settings, Store, TraceRow
from outcrop.cli import main
from outcrop.errors import ConfigError
from outcrop.evals.runner import Runner, load_run
from outcrop.evals.suite import Suite
from outcrop.observe.migrations import MIGRATIONS
from outcrop.observe.store import StoreError, StoreUnavailableError
from outcrop.prompts import Prompt
from outcrop.prompts.versions import PromptRegistry
from outcrop.providers.testing import FunctionModel, TestModel
from outcrop.serve.app import create_app
from outcrop.serve.keys import KeyLimits, create_key
from outcrop.types import ChatRequest

from .conftest import POSTGRES_URL
from .serving import LiveServer

NAMES = [m.name for m in MIGRATIONS]


def _row(i: int, **kw: Any) -> TraceRow:
    data: dict[str, Any] = dict(
        id=uuid.uuid4().hex,
        started_at=time.time(),
        requested_model="test",
        model="test",
        stream=False,
        status="ok",
        request={"messages": [{"role": "user", "content": f"call {i}"}]},
        input_tokens=1,
        output_tokens=1,
    )
    data.update(kw)
    return TraceRow(**data)


@pytest.fixture
def replicas(store_url: str) -> Iterator[tuple[Store, Store]]:
    """Two stores on one database, as two server processes would hold."""
    a, b = Store(store_url), Store(store_url)
    yield a, b
    a.close()
    b.close()


# -- replicas -----------------------------------------------------------------------


def test_replicas_see_each_others_rows(replicas: tuple[Store, Store]) -> None:
    a, b = replicas
    for i in range(30):
        a.record_later(_row(i, api_key="k1"))
    a.flush()  # a's writer commits; b reads the database, not a's queue
    assert b.count() == 30
    assert b.key_usage("k1", 0) == (60, 0.0, 30)
    b.record(_row(99, api_key="k1"))
    assert a.count() == 31

    a.add_api_key(
        key_id="k1",
        name="app",
        key_hash="h1",
        prefix="oc-1",
        scopes="{}",
        limits="{}",
        created_at=1.0,
    )
    assert b.api_key_by_hash("h1") is not None
    b.revoke_api_key("app", 2.0)
    assert a.api_key_by_hash("h1") is None

    add = dict(source=None, path=None, author=None, note=None, created_at=1.0)
    assert a.add_prompt_version(name="p", content_hash="x", content="x", **add) == (1, True)
    assert b.add_prompt_version(name="p", content_hash="y", content="y", **add) == (2, True)
    b.move_prompt_label("p", "production", 2, 3.0)
    assert a.prompt_labels("p") == {"production": 2}

    a.add_eval_run(
        run_id="run1", suite="s", suite_hash="h", suite_json="{}", total=1, created_at=1.0
    )
    b.add_eval_result("run1", "p", "m", "1", 0, "{}")
    assert [r["done"] for r in a.eval_runs()] == [1]


def test_replicas_number_prompt_versions_without_clashing(
    replicas: tuple[Store, Store],
) -> None:
    stores = replicas
    errors: list[BaseException] = []
    got: list[int] = []
    start = threading.Barrier(8)

    def add(i: int) -> None:
        start.wait()
        try:
            for j in range(5):
                version, created = stores[i % 2].add_prompt_version(
                    name="shared",
                    content_hash=f"{i}-{j}",
                    content=f"{i}-{j}",
                    source=None,
                    path=None,
                    author=None,
                    note=None,
                    created_at=time.time(),
                )
                assert created
                got.append(version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(got) == list(range(1, 41))


def test_migrations_racing_apply_each_once(postgres_url: str) -> None:
    stores = [Store(postgres_url, migrate=False) for _ in range(6)]
    applied: list[list[str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def run(store: Store) -> None:
        start.wait()
        try:
            applied.append(store.migrate())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(name for names in applied for name in names) == NAMES  # once each
    assert stores[0].migrations() == NAMES
    for s in stores:
        s.close()


# -- a database that is not there, or goes away ---------------------------------------


def test_an_unreachable_database_is_one_clear_line() -> None:
    started = time.monotonic()
    with pytest.raises(StoreError) as err:
        Store("postgresql://outcrop:s3cret@127.0.0.1:1/outcrop")
    message = str(err.value)
    assert time.monotonic() - started < 10
    assert "\n" not in message and "s3cret" not in message
    assert message.startswith(
        "Cannot connect to PostgreSQL at postgresql://outcrop:***@127.0.0.1:1"
    )
    assert "Connection refused" in message and "OUTCROP_DATABASE_URL" in message
    with pytest.raises(StoreError, match='database "no_such_database" does not exist'):
        Store(POSTGRES_URL.rsplit("/", 1)[0] + "/no_such_database")


def test_serve_with_an_unreachable_database_exits_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OUTCROP_DATABASE_URL", "postgresql://outcrop:s3cret@127.0.0.1:1/outcrop")
    with pytest.raises(SystemExit) as code:
        main(["serve", "--port", "0"])
    assert code.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: Cannot connect to PostgreSQL at postgresql://outcrop:***@")
    assert len(err.splitlines()) == 1 and "s3cret" not in err

    monkeypatch.setenv("OUTCROP_DATABASE_URL", "mysql://root@localhost/outcrop")
    with pytest.raises(SystemExit):
        main(["serve", "--port", "0"])
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: OUTCROP_DATABASE_URL: unknown database scheme 'mysql://'")
    assert "postgresql://" in err and len(err.splitlines()) == 1


def _terminate(application_name: str) -> int:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchall()
    return len(rows)


def test_a_dropped_connection_is_replaced_and_fails_no_more_than_one_call(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"outcrop-{uuid.uuid4().hex[:8]}"
    store = Store(f"{postgres_url}&application_name={name}")
    store.record(_row(0))
    assert _terminate(name) >= 1
    assert store.count() == 1  # a read: retried on a fresh connection
    assert _terminate(name) >= 1
    store.record(_row(1))  # a write: its transaction starts on a fresh connection
    assert _terminate(name) >= 1
    with caplog.at_level(logging.WARNING, logger="outcrop.store"):
        for i in range(50):
            store.record_later(_row(100 + i))  # the writer thread's batch
        store.flush()
    assert store.count() == 52
    assert "could not be written" not in caplog.text
    # Lost in the middle of a transaction: that call fails, with a message; the next works.
    with pytest.raises(StoreUnavailableError, match=r"stopped answering.*Try again"):  # noqa: SIM117
        with store._tx() as tx:
            tx.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    assert store.count() == 52
    store.close()


# -- outcrop migrate and the configuration ----------------------------------------------


def test_outcrop_migrate(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    if store_url.startswith("postgresql://postgres@"):  # a password must not be printed
        store_url = store_url.replace("postgres@", "postgres:s3cret@", 1)
    main(["migrate", "--status", "--url", store_url])
    out = capsys.readouterr().out
    assert "s3cret" not in out
    assert out.count("pending") == len(NAMES) + 1
    assert f"{len(NAMES)} pending: run `outcrop migrate`" in out
    main(["migrate", "--url", store_url])
    out = capsys.readouterr().out
    assert f"Applied {len(NAMES)} migration(s) to" in out and "s3cret" not in out
    assert [line.strip() for line in out.splitlines()[1:]] == NAMES
    main(["migrate", "--url", store_url])
    assert "up to date; nothing to apply" in capsys.readouterr().out
    main(["migrate", "--status", "--json", "--url", store_url])
    data = json.loads(capsys.readouterr().out)
    assert [m["status"] for m in data["migrations"]] == ["applied"] * len(NAMES)


def test_outcrop_migrate_reads_the_configured_database(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OUTCROP_DATABASE_URL", postgres_url)
    main(["migrate"])
    assert f"Applied {len(NAMES)} migration(s) to postgresql://" in capsys.readouterr().out
    with pytest.raises(SystemExit) as code:
        main(["migrate", "--url", "mysql://root@localhost/outcrop"])
    assert code.value.code == 2
    err = capsys.readouterr().err
    assert "Invalid value for '--url': unknown database scheme 'mysql://'" in err


def test_the_gateway_uses_the_configured_database(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "work" / "outcrop.toml").write_text(
        f'default_model = "test"\n\n[storage]\ndatabase_url = "{postgres_url}"\n'
    )
    gw = Gateway(providers={"test": TestModel()})
    assert gw.store.dialect == "postgresql"
    gw.chat("hi")
    gw.close()
    other = Store(postgres_url)
    assert other.count() == 1
    other.close()
    gw.store.close()
    # The environment wins over outcrop.toml.
    monkeypatch.setenv("OUTCROP_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    gw = Gateway(providers={"test": TestModel()})
    assert gw.store.path == tmp_path / "env.db"
    gw.store.close()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ('"mysql://root@db/outcrop"', "unknown database scheme 'mysql://' (accepted: sqlite://,"),
        ('"host=db dbname=outcrop"', "key=value connection string is not accepted here"),
        ('"sqlite://"', "sqlite:// needs a file path"),
        ("5432", "Input should be a valid string"),
    ],
)
def test_a_bad_database_url_in_outcrop_toml_names_the_file_and_line(
    tmp_path: Path, value: str, words: str
) -> None:
    from outcrop.config import load_settings

    path = tmp_path / "outcrop.toml"
    path.write_text(f'default_model = "test"\n\n[storage]\ndatabase_url = {value}\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(err.value).startswith(f"{path}:4: storage.database_url: ")
    assert words in str(err.value)
    assert path.read_text().endswith(f"database_url = {value}\n")  # the file is left alone


def test_a_sqlite_path_in_outcrop_toml_is_relative_to_the_file(tmp_path: Path) -> None:
    from outcrop.config import load_settings

    project = tmp_path / "project"
    project.mkdir()
    (project / "outcrop.toml").write_text('[storage]\ndatabase_url = "sqlite:///data/o.db"\n')
    settings = load_settings(project / "outcrop.toml")
    assert settings.storage.database_url == f"sqlite:///{project}/data/o.db"
    store = Store(settings.storage.database_url)
    assert store.path == project / "data" / "o.db"
    store.close()


# -- what users build on the store, on each engine --------------------------------------


def echo(request: ChatRequest) -> str:
    return f"You said: {request.messages[-1].text}"


def test_budgets_hold_across_replicas(replicas: tuple[Store, Store]) -> None:
    servers = [
        LiveServer(
            create_app(
                Gateway(
                    settings=Settings(default_model="fn:echo"),
                    store=store,
                    providers={"fn": FunctionModel(echo)},
                )
            )
        ).start()
        for store in replicas
    ]
    try:
        _, secret = create_key(replicas[0], "team", limits=KeyLimits(tokens_per_day=30))
        clients = [openai.OpenAI(base_url=s.url + "/v1", api_key=secret) for s in servers]
        spent = 0
        with pytest.raises(openai.RateLimitError) as err:
            for _ in range(20):  # spent through replica 0 only
                r = clients[0].chat.completions.create(
                    model="fn:echo", messages=[{"role": "user", "content": "one two three"}]
                )
                assert r.usage is not None
                spent += r.usage.total_tokens
        assert err.value.code == "insufficient_quota" and spent >= 30
        with pytest.raises(openai.RateLimitError, match="Budget exhausted") as err:
            clients[1].chat.completions.create(
                model="fn:echo", messages=[{"role": "user", "content": "hi"}]
            )
        assert err.value.code == "insufficient_quota"
        for c in clients:
            c.close()
    finally:
        for s in servers:
            s.stop()


def test_prompt_versions_promote_and_roll_back(store_url: str) -> None:
    store = Store(store_url)
    registry = PromptRegistry(store)
    v1 = registry.record(Prompt(name="support", query="Answer: {{ q }}"))
    v2 = registry.record(Prompt(name="support", query="Answer briefly: {{ q }}"))
    assert registry.record(Prompt(name="support", query="Answer: {{ q }}")).version == v1.version
    assert (v1.version, v2.version) == (1, 2)
    registry.promote("support", 1)
    registry.promote("support", 2)
    assert registry.labels("support") == {"production": 2}
    assert registry.rollback("support") == 1
    assert registry.get("support@production").version == 1
    store.close()


def test_an_eval_run_is_stored_and_resumed(store_url: str) -> None:
    store = Store(store_url)
    gw = Gateway(
        settings=Settings(default_model="fn:m"),
        store=store,
        providers={"fn": FunctionModel(lambda r: "Paris")},
    )
    suite = Suite.model_validate(
        {
            "name": "capitals",
            "prompts": [{"name": "capital", "query": "Capital of {{ country }}?"}],
            "models": ["fn:m"],
            "cases": [
                {"vars": {"country": c}, "expected": city}
                for c, city in (("France", "Paris"), ("Peru", "Lima"))
            ],
            "metrics": ["contains"],
        }
    )
    run = Runner(suite, gateway=gw).run()
    loaded = load_run(gw, run.id[:8])
    assert loaded.status == "done" and len(loaded.rows) == 2 and loaded.corrupt == []
    assert sorted(r.scores["contains"] for r in loaded.rows) == [0.0, 1.0]  # type: ignore[attr-defined]
    again = Runner(suite, gateway=gw, cache=False).run(resume=run.id)
    assert again.id == run.id and len(again.rows) == 2
    gw.close()
    store.close()


def test_rows_queued_while_the_database_is_away_are_written_when_it_is_back(
    postgres_url: str,
) -> None:
    """They are the budget ledger: an outage holds them back instead of dropping them, and
    readers are not kept waiting for it."""
    from .test_rag_pg import Proxy

    proxy = Proxy(postgres_url)
    url = proxy.url + "?" + postgres_url.split("?", 1)[1]
    store = Store(url)
    try:
        for i in range(10):
            store.record_later(_row(i))
        store.flush()
        assert store.count() == 10
        proxy.cut()
        for i in range(5):
            store.record_later(_row(100 + i))
        deadline = time.monotonic() + 60
        while not store._outage and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store._outage, "the writer never noticed the outage"
        started = time.monotonic()
        store.flush()  # does not wait for the database to come back
        assert time.monotonic() - started < 5
        proxy.restore()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if store.count() == 15:
                    break
            except Exception:
                pass
            time.sleep(0.5)
        assert store.count() == 15
        assert not store._outage
    finally:
        store.close()
        proxy.cut()
