"""The store's contract, run on each engine: a SQLite file and a PostgreSQL schema."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outcrop import Store, TraceRow
from outcrop.errors import UserError
from outcrop.observe.store import MIGRATIONS, StoreError


def _row(i: int, **kw: Any) -> TraceRow:
    data: dict[str, Any] = dict(
        id=f"{i:04d}abc",
        started_at=time.time() + i,
        requested_model="test",
        model="test",
        stream=False,
        status="ok",
        request={"messages": []},
        input_tokens=10,
        output_tokens=i,
    )
    data.update(kw)
    return TraceRow(**data)


@pytest.fixture
def any_store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


def test_migrations_apply_once_and_are_recorded(store_url: str) -> None:
    first = Store(store_url)
    assert first.migrations() == [m.name for m in MIGRATIONS]
    assert first.migrate() == []
    first.close()
    again = Store(store_url)
    assert again.migrate() == []
    assert {s["status"] for s in again.migration_status()} == {"applied"}
    again.close()


def test_migration_status_without_migrating(store_url: str) -> None:
    fresh = Store(store_url, migrate=False)
    status = fresh.migration_status()
    assert [s["name"] for s in status] == [m.name for m in MIGRATIONS]
    assert {s["status"] for s in status} == {"pending"}
    assert fresh.migrate() == [m.name for m in MIGRATIONS]
    status = fresh.migration_status()
    assert all(s["status"] == "applied" and s["applied_at"] for s in status)
    # A migration a newer outcrop applied is listed, not dropped.
    with fresh._tx() as tx:
        tx.execute("INSERT INTO _migrations (name) VALUES (?)", ("999_from_the_future",))
    assert fresh.migration_status()[-1]["status"] == "unknown"
    fresh.close()


def test_wal_mode(store: Store) -> None:
    assert store.path is not None
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_record_list_get(any_store: Store) -> None:
    store = any_store
    for i in range(3):
        store.record(_row(i))
    rows = store.recent(limit=2)
    assert [r.id for r in rows] == ["0002abc", "0001abc"]
    assert store.get("0001") == rows[1]
    assert store.get("0001abc").output_tokens == 1  # type: ignore[union-attr]
    assert store.get("00") is None  # ambiguous prefix
    assert store.get("%") is None  # LIKE wildcards are literal
    assert store.get("____") is None
    assert store.count() == 3
    assert [r.id for r in store.recent(status="ok", kind="chat", model="test")] == [
        "0002abc",
        "0001abc",
        "0000abc",
    ]


def test_rows_read_back_as_written(any_store: Store) -> None:
    row = _row(
        7,
        stream=True,
        usage_estimated=True,
        request={"messages": [{"role": "user", "content": "héllo ✓"}], "temperature": 0.7},
        attempts=[{"model": "test", "error": None}],
        guardrails=[{"check": "pii", "action": "mask"}],
        response="réponse",
        latency_ms=12.5,
        cost_usd=0.001,
        prompt_name="support",
        prompt_version=3,
        api_key="k1",
        parent_id="p1",
        kind="chain",
    )
    any_store.record(row)
    assert any_store.get(row.id) == row
    assert any_store.children("p1") == [row]


def test_nul_characters_do_not_lose_the_row(any_store: Store) -> None:
    row = _row(1, response="a\x00b", request={"messages": [{"content": "x\x00y \\u0000"}]})
    any_store.record(row)
    got = any_store.get(row.id)
    assert got is not None
    if any_store.dialect == "sqlite":
        assert got == row
    else:  # PostgreSQL text cannot hold NUL: U+FFFD stands in for it
        assert got.response == "a\ufffdb"
        assert got.request == {"messages": [{"content": "x\ufffdy \\u0000"}]}


def test_usage_totals(any_store: Store) -> None:
    store = any_store
    store.record(_row(1, cost_usd=0.5))
    store.record(_row(2, cost_usd=0.25, status="error"))
    store.record(_row(3, model="other"))
    store.record(_row(4, started_at=time.time() - 10 * 86400))
    totals = {u.model: u for u in store.usage(days=2)}
    assert totals["test"].calls == 2
    assert totals["test"].output_tokens == 3
    assert totals["test"].cost_usd == 0.75
    assert totals["test"].errors == 1
    assert totals["other"].calls == 1
    assert totals["test"].day == time.strftime("%Y-%m-%d", time.gmtime())
    assert sum(u.calls for u in store.usage()) == 4


def test_a_failed_write_keeps_what_was_stored(any_store: Store) -> None:
    store = any_store
    store.record(_row(1))
    with pytest.raises(StoreError, match="already stored"):
        store.record(_row(1))  # duplicate id
    assert store.count() == 1
    store.record(_row(2))
    assert store.count() == 2
    store.replace(_row(2, status="error", output_tokens=99))
    assert store.get("0002abc").output_tokens == 99  # type: ignore[union-attr]
    assert store.count() == 2


def test_a_bad_row_in_a_batch_costs_only_itself(
    any_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    store = any_store
    store.record(_row(5))
    with caplog.at_level(logging.WARNING, logger="outcrop.store"):
        for i in range(10):
            store.record_later(_row(i))  # 5 is stored already
        store.record_later(_row(50, request={"bad": object()}))  # not JSON
        store.record_later(_row(51, input_tokens=2**64))  # the database refuses it
        store.record_later(_row(52))
        store.flush()
    assert store.count() == 11  # the batch's other rows, each once
    assert store.get("0052abc") is not None
    assert "trace 0050abc could not be written" in caplog.text
    assert "trace 0051abc could not be written" in caplog.text
    assert "1 trace row(s) not stored: a row with the same id" in caplog.text


def test_a_queued_batch_is_stored_whole_around_rows_stored_before(
    any_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Queued rows are inserted many to a statement (in statements of 2^k rows): every
    row of an odd-sized batch lands once, and ids stored before are skipped, not fatal."""
    store = any_store
    store.record(_row(0))
    store.record(_row(298))
    with caplog.at_level(logging.WARNING, logger="outcrop.store"):
        with store._cv:  # the writer takes them as one batch: 256 + 32 + 8 + 2 + 1 rows
            for i in range(299):
                store.record_later(_row(i, request={"messages": [{"content": f"m{i}"}]}))
        store.flush()
    assert store.count() == 299
    assert store.get("0150abc").request == {"messages": [{"content": "m150"}]}  # type: ignore[union-attr]
    assert store.get("0298abc").request == {"messages": []}  # type: ignore[union-attr]
    assert "2 trace row(s) not stored: a row with the same id" in caplog.text


def test_queued_rows_are_stored_as_a_direct_record_stores_them(any_store: Store) -> None:
    """Rows queued from the hot path travel as JSON arrays that the database takes apart;
    what lands is what record() stores, column for column, and reads back equal."""
    store = any_store
    full = dict(
        stream=True,
        usage_estimated=True,
        request={"messages": [{"role": "user", "content": 'héllo ✓ "q"'}], "t": 0.7},
        attempts=[{"model": "test", "error": None, "ms": 1.25e-7}],
        guardrails=[{"check": "pii", "action": "mask"}],
        response="réponse 𝄞",
        latency_ms=12.345678901234567,
        ttft_ms=0.1,
        cost_usd=0.0,
        prompt_name="support",
        prompt_version=3,
        api_key="k1",
        parent_id="p1",
        kind="chain",
        started_at=1795980503.6604338,
        input_tokens=2**31 - 1,
        output_tokens=5,
    )
    store.record(_row(1, **full))
    store.record_later(_row(2, **full))
    bare = _row(3, model=None, provider=None, finish_reason=None)
    store.record_later(bare)
    store.flush()
    direct, queued = store.get("0001abc"), store.get("0002abc")
    assert queued is not None and direct is not None
    assert queued == _row(2, **full)
    assert {**vars(queued), "id": ""} == {**vars(direct), "id": ""}
    assert store.get("0003abc") == bare
    if store.dialect == "sqlite":  # the same SQL types, not only equal Python values
        rows = store._all(
            "SELECT "
            + ", ".join(f"{c}, typeof({c})" for c in vars(direct) if c != "id")
            + " FROM traces WHERE id IN ('0001abc', '0002abc') ORDER BY id"
        )
        assert tuple(rows[0]) == tuple(rows[1])


def test_rows_json_cannot_carry_exactly_are_queued_as_rows(any_store: Store) -> None:
    from outcrop.observe.store import _packed

    assert _packed(_row(2, request={"n": 2**70})) is None
    assert _packed(_row(3)) is not None
    assert _packed(_row(4, latency_ms=float("inf"))) is None  # JSON would make it null
    assert _packed(_row(5, stream=1)) is None  # PostgreSQL's boolean takes no 1
    odd = _row(6)
    odd.note = "set after it was made"  # type: ignore[attr-defined]
    assert _packed(odd) is None  # more values than columns: queued as the row
    assert _packed(_row(7, request={3: "int key"})) is not None  # as the JSON columns' dumps
    for i in (2, 4, 6, 7):
        any_store.record_later(_row(i, request={"n": 2**70}) if i == 2 else _row(i))
    any_store.flush()
    assert any_store.count() == 4


def test_packed_values_are_in_column_order() -> None:
    """Packing reads the row's own dict, so TraceRow's fields must be its columns, in order."""
    import orjson

    from outcrop.observe.store import _TRACE_COLUMNS, _packed

    row = _row(1, response="r", api_key="k")
    assert list(vars(row)) == list(_TRACE_COLUMNS)
    packed = _packed(row)
    assert packed is not None
    assert orjson.loads(packed) == [getattr(row, c) for c in _TRACE_COLUMNS]


def test_a_nul_in_a_queued_batch_costs_only_its_row_the_fast_path(any_store: Store) -> None:
    """SQLite's JSON functions cut text at a NUL: the writer finds those rows in the batch
    and binds them instead; the rest of the batch is taken apart as JSON."""
    import orjson

    from outcrop.observe.store import _batch_text, _packed

    rows = [_row(i, response=f"answer {i}") for i in range(6)]
    rows[2] = _row(2, response="a\x00b")
    rows[4] = _row(4, request={"messages": [{"content": "x\x00y"}]})
    packed = [_packed(r) for r in rows]
    assert all(packed)
    text, clean, nul = _batch_text(packed)  # type: ignore[arg-type]
    assert nul == [packed[2], packed[4]]
    assert clean == [packed[i] for i in (0, 1, 3, 5)]
    assert orjson.loads(text) == [orjson.loads(packed[i]) for i in (0, 1, 3, 5)]  # type: ignore[arg-type]
    assert _batch_text(clean) == (text, clean, [])
    with any_store._cv:  # one batch
        for r in rows:
            any_store.record_later(r)
    any_store.flush()
    got = any_store.get(rows[2].id)
    assert got is not None
    assert got.response == ("a\x00b" if any_store.dialect == "sqlite" else "a\ufffdb")
    assert any_store.get(rows[5].id) == rows[5]
    content = any_store.get(rows[4].id).request["messages"][0]["content"]  # type: ignore[union-attr]
    assert content == ("x\x00y" if any_store.dialect == "sqlite" else "x\ufffdy")


def test_a_row_queued_while_the_store_closes_is_written_or_refused(tmp_path: Path) -> None:
    """Calls queue rows without a lock: one that slips in while close() runs is written
    by close() once the writer has gone, and one after that is told the store is closed."""
    from outcrop.observe.store import _packed

    store = Store(tmp_path / "closing.db")
    seen: list[TraceRow] = []
    store.subscribe(seen.extend)
    store.record_later(_row(1))
    store.flush()
    with store._cv:  # close() up to the writer's exit
        store._closed = True
        store._cv.notify_all()
    assert store._writer is not None
    store._writer.join(timeout=5)
    slipped = _packed(_row(2))
    assert slipped is not None
    store._queue.append(slipped)  # a call that checked before closing began
    store.close()
    assert [r.id for r in seen] == ["0001abc", "0002abc"]  # listeners get it too
    store._wake(slipped)  # as that call goes on: its row was written, so no error
    with pytest.raises(UserError, match="closed"):
        store.record_later(_row(3))
    late = _packed(_row(4))
    assert late is not None
    store._queue.append(late)  # checked before close() began, queued after it ended
    with pytest.raises(UserError, match="closed"):  # as record_later goes on: refused,
        store._wake(late)
    assert not store._queue  # and its row taken back
    again = Store(tmp_path / "closing.db")
    assert sorted(r.id for r in again.recent(limit=10)) == ["0001abc", "0002abc"]
    again.close()


def test_queued_rows_without_sqlite_json_operators(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite before 3.38 has no -> operator: the batch's values are bound instead."""
    from outcrop.observe.engines import _SqliteTx

    bound: list[int] = []
    insert_many = _SqliteTx.insert_many

    def counting(self: _SqliteTx, table: str, columns: Any, rows: Any, **kw: Any) -> int:
        bound.append(len(rows))
        return insert_many(self, table, columns, rows, **kw)

    monkeypatch.setattr(_SqliteTx, "insert_many", counting)
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 37, 2))
    for i in range(5):
        store.record_later(_row(i, request={"messages": [{"content": f"m{i}"}]}))
    store.flush()
    assert sum(bound) == 5  # the packed rows were bound as values, not taken apart by SQLite
    assert store.count() == 5
    assert store.get("0004abc").request == {"messages": [{"content": "m4"}]}  # type: ignore[union-attr]


def test_listeners_get_the_rows_themselves(any_store: Store) -> None:
    store = any_store
    seen: list[TraceRow] = []
    rows = [_row(i, request={"messages": [{"content": f"m{i}"}]}) for i in range(4)]
    with store._cv:  # held: the writer cannot take these before the listener comes
        store.record_later(rows[0])  # queued packed: nobody listens yet
        store.record_later(rows[1])
        store.subscribe(seen.extend)
        store.record_later(rows[2])  # queued as the row
    store.flush()
    store.record_later(rows[3])
    store.flush()
    assert seen == rows


def test_json_columns_hold_what_the_standard_library_would() -> None:
    import json

    from outcrop.observe.engines import dumps

    value = {"é": ["✓", 1.5, None, True], "n": 2**70, 3: "int key"}
    assert json.loads(dumps(value)) == {"é": ["✓", 1.5, None, True], "n": 2**70, "3": "int key"}
    assert json.loads(dumps({"t": float("nan")})) == {"t": None}
    with pytest.raises(TypeError):
        dumps({"bad": object()})


def test_queued_rows_are_read_back_and_written_at_exit(any_store: Store, store_url: str) -> None:
    store = any_store
    for i in range(200):
        store.record_later(_row(1000 + i))
    assert store.count() == 200  # a read waits for the queue
    script = (
        "import sys\n"
        "from outcrop import Gateway, Settings, Store\n"
        "from outcrop.providers.testing import TestModel\n"
        "store = Store(sys.argv[1])\n"
        "gw = Gateway(settings=Settings(default_model='test'), store=store,\n"
        "             providers={'test': TestModel()})\n"
        "for _ in range(300):\n"
        "    gw.chat('hi')\n"
    )
    subprocess.run([sys.executable, "-c", script, store_url], check=True)
    assert store.count() == 500  # nothing queued was lost when the process ended


def test_prompt_versions_and_labels(any_store: Store) -> None:
    store = any_store
    add = dict(source=None, path=None, author="ada", note=None, created_at=time.time())
    assert store.add_prompt_version(name="p", content_hash="h1", content="one", **add) == (1, True)
    assert store.add_prompt_version(name="p", content_hash="h2", content="two", **add) == (2, True)
    assert store.add_prompt_version(name="p", content_hash="h1", content="one", **add) == (1, False)
    assert store.add_prompt_version(name="q", content_hash="h1", content="one", **add) == (1, True)
    assert store.prompt_names() == ["p", "q"]
    versions = store.prompt_versions("p")
    assert [(v["version"], v["content"], v["author"]) for v in versions] == [
        (1, "one", "ada"),
        (2, "two", "ada"),
    ]
    assert store.move_prompt_label("p", "prod", 1, 100.0) is None
    assert store.move_prompt_label("p", "prod", 2, 100.0) == 1  # same time: order by insertion
    assert store.move_prompt_label("p", "prod", 1, 101.0, kind="rollback") == 2
    assert store.prompt_labels("p") == {"prod": 1}
    moves = store.prompt_label_moves("p", "prod")
    assert [(m["version"], m["previous"], m["kind"]) for m in moves] == [
        (1, 2, "rollback"),
        (2, 1, "promote"),
        (1, None, "promote"),
    ]


def test_eval_runs_results_and_cache(any_store: Store) -> None:
    store = any_store
    store.add_eval_run(
        run_id="run1abc", suite="s", suite_hash="h", suite_json="{}", total=2, created_at=1.0
    )
    store.add_eval_run(
        run_id="run2abc", suite="s", suite_hash="h", suite_json="{}", total=2, created_at=1.0
    )
    store.add_eval_result("run1abc", "p", "m", "1", 0, '{"score": 1}')
    store.add_eval_result("run1abc", "p", "m", "2", 0, '{"score": 0}')
    store.add_eval_result("run1abc", "p", "m", "2", 0, '{"score": 0.5}')  # written over
    store.set_eval_run_status("run1abc", "done", 2.0)
    runs = store.eval_runs(suite="s")
    assert [(r["id"], r["done"]) for r in runs] == [("run2abc", 0), ("run1abc", 2)]
    run = store.eval_run("run1")
    assert run is not None and run["status"] == "done" and run["finished_at"] == 2.0
    with pytest.raises(UserError, match="more than one run"):
        store.eval_run("run")
    assert store.eval_run("nope") is None
    assert [r["data"] for r in store.eval_results("run1abc")] == ['{"score": 1}', '{"score": 0.5}']
    assert store.cache_get("k") is None
    store.cache_put("k", "v1")
    store.cache_put("k", "v2")
    assert store.cache_get("k") == "v2"


def test_api_keys_and_their_usage(any_store: Store) -> None:
    store = any_store
    store.add_api_key(
        key_id="k1",
        name="app",
        key_hash="hash1",
        prefix="oc-ab",
        scopes="{}",
        limits="{}",
        created_at=1.0,
    )
    with pytest.raises(store._engine.integrity_errors):
        store.add_api_key(
            key_id="k2",
            name="app",
            key_hash="hash2",
            prefix="oc-cd",
            scopes="{}",
            limits="{}",
            created_at=2.0,
        )
    assert [k["name"] for k in store.api_keys()] == ["app"]
    assert store.api_key_by_hash("hash1")["id"] == "k1"  # type: ignore[index]
    store.record(_row(1, api_key="k1", cost_usd=0.5))
    store.record_later(_row(2, api_key="k1"))
    store.record(_row(3, api_key="other"))
    assert store.key_usage("k1", 0) == (23, 0.5, 2)
    assert store.key_usage("k1", time.time() + 100) == (0, 0.0, 0)
    assert store.revoke_api_key("app", 3.0) is True
    assert store.revoke_api_key("app", 4.0) is False
    assert store.api_key_by_hash("hash1") is None
    assert store.api_keys() == []
    assert store.api_keys(include_revoked=True)[0]["revoked_at"] == 3.0


def test_feedback_and_calls_since(any_store: Store) -> None:
    store = any_store
    now = time.time()
    store.record_later(_row(1, started_at=now, prompt_name="p", prompt_version=2, api_key="k"))
    store.record_later(_row(2, started_at=now + 1, kind="chain"))
    store.record_later(_row(3, started_at=now + 2, model="other"))
    store.set_feedback("0001abc", "up", "")  # the trace it names is still queued
    store.set_feedback("0001abc", "down", "wrong city")
    assert store.feedback(["0001abc", "0003abc"]) == {
        "0001abc": {"rating": "down", "comment": "wrong city"}
    }
    assert store.feedback([]) == {}
    calls = store.calls_since(now - 1)
    assert [c["model"] for c in calls] == ["test", "other"]  # a chain is not a call
    assert len(store.calls_since(now - 1, prompt="p@2", api_key="k")) == 1
    assert store.calls_since(now - 1, prompt="p@3") == []
    assert len(store.calls_since(now - 1, model="other")) == 1


def test_a_bad_location_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"unknown database scheme 'mysql://'.*postgresql://"):
        Store("mysql://root@localhost/outcrop")
    with pytest.raises(StoreError, match="sqlite:// needs a file path"):
        Store("sqlite://")
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match=r"not a usable outcrop database.*Move it aside"):
        Store(damaged)
    assert damaged.read_bytes() == b"not a database" * 100  # left as it was
    assert Store(f"sqlite:///{tmp_path}/by-url.db").path == tmp_path / "by-url.db"


def test_a_row_queued_after_the_writer_fell_idle_is_written_without_a_reader(
    tmp_path: Path,
) -> None:
    """Calls wake the writer only when it waits for rows: each row recorded after a quiet
    spell reaches the database on its own (seen here from another connection, which does
    not flush), not at the next read or the next call."""
    store = Store(tmp_path / "idle.db")
    other = sqlite3.connect(tmp_path / "idle.db")
    try:
        for i in range(3):
            store.record_later(_row(i))
            deadline = time.monotonic() + 10
            while other.execute("SELECT count(*) FROM traces").fetchone()[0] < i + 1:
                assert time.monotonic() < deadline, f"row {i} was not written"
                time.sleep(0.01)
            time.sleep(0.1)  # longer than the writer lingers: it waits for rows again
            assert store._idle
    finally:
        other.close()
        store.close()


def test_a_row_a_listener_gets_that_cannot_be_read_costs_only_itself(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows kept for listeners are packed by the writer: one whose values cannot even be
    read as numbers is bound instead (and refused alone), not the end of its batch."""

    class Odd:
        def __bool__(self) -> bool:
            raise ValueError("the truth of an array is ambiguous")

    store.subscribe(lambda rows: None)  # rows are queued as themselves
    with caplog.at_level(logging.ERROR, logger="outcrop.store"):
        with store._cv:  # one batch
            store.record_later(_row(1))
            store.record_later(_row(2, latency_ms=Odd()))
            store.record_later(_row(3))
        store.flush()
    assert store.get("0001abc") is not None
    assert store.get("0003abc") is not None
    assert store.get("0002abc") is None
    assert "trace 0002abc could not be written" in caplog.text
