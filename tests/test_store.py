import sqlite3
import time
from pathlib import Path

from outcrop import Store, TraceRow
from outcrop.observe.store import MIGRATIONS


def _row(i: int, **kw) -> TraceRow:
    data = dict(
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


def test_migrations_apply_once_and_are_recorded(tmp_path: Path):
    path = tmp_path / "x.db"
    first = Store(path)
    assert first.migrations() == [name for name, _ in MIGRATIONS]
    first.close()
    again = Store(path)
    assert again.migrate() == []
    again.close()


def test_wal_mode(store: Store):
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_record_list_get(store: Store):
    for i in range(3):
        store.record(_row(i))
    rows = store.recent(limit=2)
    assert [r.id for r in rows] == ["0002abc", "0001abc"]
    assert store.get("0001") == rows[1]
    assert store.get("0001abc").output_tokens == 1
    assert store.get("00") is None  # ambiguous prefix
    assert store.get("%") is None  # LIKE wildcards are literal
    assert store.count() == 3


def test_usage_totals(store: Store):
    store.record(_row(1, cost_usd=0.5))
    store.record(_row(2, cost_usd=0.25, status="error"))
    store.record(_row(3, model="other"))
    totals = {u.model: u for u in store.usage()}
    assert totals["test"].calls == 2
    assert totals["test"].output_tokens == 3
    assert totals["test"].cost_usd == 0.75
    assert totals["test"].errors == 1
    assert totals["other"].calls == 1


def test_a_failed_write_keeps_what_was_stored(store: Store):
    store.record(_row(1))
    try:
        store.record(_row(1))  # duplicate id
    except sqlite3.IntegrityError:
        pass
    else:  # pragma: no cover
        raise AssertionError("duplicate id was accepted")
    assert store.count() == 1
    store.record(_row(2))
    assert store.count() == 2


def test_queued_rows_are_read_back_and_written_at_exit(store: Store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

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
    path = tmp_path / "exit.db"
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    other = Store(path)
    assert other.count() == 300  # nothing queued was lost when the process ended
    other.close()
