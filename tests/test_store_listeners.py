"""Store.subscribe: listeners see every stored row, off the calls' path, and cannot break it."""

import logging
import threading
import time
from pathlib import Path

import pytest

from outcrop import Store, TraceRow


def _row(i: int) -> TraceRow:
    return TraceRow(
        id=f"t{i}",
        started_at=time.time(),
        requested_model="test",
        stream=False,
        status="ok",
        request={"messages": []},
    )


def test_listeners_get_every_row_once_after_it_is_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "o.db")
    seen: list[str] = []
    readable: list[bool] = []
    threads: set[str] = set()

    def listener(rows: list[TraceRow]) -> None:
        threads.add(threading.current_thread().name)
        seen.extend(r.id for r in rows)
        readable.append(
            all(
                store._db.execute("SELECT 1 FROM traces WHERE id=?", (r.id,)).fetchone()
                for r in rows
            )
        )

    store.subscribe(listener)
    for i in range(50):
        store.record_later(_row(i))
    store.record(_row(50))
    store.flush()
    assert sorted(seen) == sorted(f"t{i}" for i in range(51))
    assert all(readable)
    assert "outcrop-trace-writer" in threads
    store.unsubscribe(listener)
    store.record_later(_row(99))
    store.flush()
    assert "t99" not in seen
    store.close()


def test_a_failing_listener_is_logged_and_rows_are_still_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "o.db")
    got: list[str] = []

    def broken(rows: list[TraceRow]) -> None:
        raise RuntimeError("listener broke")

    store.subscribe(broken)
    store.subscribe(lambda rows: got.extend(r.id for r in rows))
    with caplog.at_level(logging.ERROR, logger="outcrop"):
        store.record_later(_row(1))
        store.flush()
    assert store.get("t1") is not None
    assert got == ["t1"]  # the next listener still ran
    assert "listener" in caplog.text and "listener broke" in caplog.text
    store.close()
