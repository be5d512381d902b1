"""The store: traces (one row per model call), the usage ledger, prompt versions, eval runs
and API keys, with named migrations.

Every call through the gateway — plain or streamed, finished, failed or
cancelled — leaves exactly one row in ``traces``. The same row is the usage
ledger: tokens, cost and latency are summed from it by ``usage()``.

One class, :class:`Store`, on either engine (``outcrop.observe.engines``): a
SQLite file in WAL mode (the default, ``outcrop.db`` in outcrop's home) or
PostgreSQL (``Store("postgresql://…")``, or ``OUTCROP_DATABASE_URL``), which
any number of server replicas may share. The migrations
(``outcrop.observe.migrations``) are the same list on both.
"""

from __future__ import annotations

import atexit
import json
import logging
import operator
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import UserError
from .engines import Engine, Row, StoreError, StoreUnavailableError, Tx, connect
from .migrations import MIGRATIONS

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("outcrop.store")

__all__ = [
    "MIGRATIONS",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "TraceRow",
    "UsageRow",
    "open_store",
]


@dataclass
class TraceRow:
    """One model call as recorded.

    The fields are the ``traces`` columns, in order: the store packs a row from its own
    ``__dict__``, which ``__init__`` fills in this order (a row with an attribute added
    is stored from its values instead)."""

    id: str
    started_at: float
    requested_model: str
    stream: bool
    status: str  # ok | error | cancelled | blocked (by a guardrail)
    request: dict[str, Any]
    model: str | None = None
    provider: str | None = None
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cost_usd: float | None = None
    error: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    response: str | None = None
    parent_id: str | None = None
    kind: str = "chat"  # chat | embedding | image | chain
    usage_estimated: bool = False
    prompt_name: str | None = None
    prompt_version: int | None = None
    api_key: str | None = None  # the server API key's id that made the call
    guardrails: list[dict[str, Any]] = field(default_factory=list)  # decisions on this call

    def to_dict(self) -> dict[str, Any]:
        # Shallow: dataclasses.asdict deep-copies the request's messages, which cost a fifth
        # of the server's CPU per request on a fast model; nothing here mutates them.
        return {name: getattr(self, name) for name in _TRACE_FIELDS}


_TRACE_FIELDS = tuple(f.name for f in fields(TraceRow))


@dataclass
class UsageRow:
    day: str
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    errors: int


def _flush_at_exit(ref: weakref.ReferenceType[Store]) -> None:
    store = ref()
    if store is not None:
        store.flush()


# The traces columns, in TraceRow's order.
_TRACE_COLUMNS = tuple(f.name for f in fields(TraceRow))
_TRACE_SELECT = ", ".join(_TRACE_COLUMNS)
_ROW_VALUES = operator.attrgetter(*_TRACE_COLUMNS)
_JSON_AT = tuple(_TRACE_COLUMNS.index(c) for c in ("request", "attempts", "guardrails"))
_BOOL_AT = tuple(_TRACE_COLUMNS.index(c) for c in ("stream", "usage_estimated"))
_N_COLUMNS = len(_TRACE_COLUMNS)
_STREAM_AT, _ESTIMATED_AT = _BOOL_AT
_STARTED_AT, _LATENCY_AT, _TTFT_AT, _COST_AT = (
    _TRACE_COLUMNS.index(c) for c in ("started_at", "latency_ms", "ttft_ms", "cost_usd")
)
_TRACE_INSERT = (
    f"INSERT INTO traces ({_TRACE_SELECT}) VALUES ({', '.join('?' * len(_TRACE_COLUMNS))})"
)

# What the writer's queue holds: a row as the JSON array of its column values (when
# nothing listens: the row and its request are freed at once, so the garbage collector
# does not walk thousands of queued rows, and SQLite takes the batch apart without the
# interpreter), or the row itself (for listeners, or values JSON cannot hold).
_Queued = bytes | TraceRow


def _packed(row: TraceRow) -> bytes | None:
    """The row as a JSON array of its column values, or None when JSON cannot carry them
    as the bound values would be stored: an integer past 64 bits, a lone surrogate, a
    float that is not finite (JSON would make it null), or a flag that is not a bool
    (PostgreSQL's boolean column takes no 1). A NUL is caught by the writer, a batch at a
    time (:func:`_batch_text`): that is a search of a few bytes a row instead of a call."""
    # The instance's own dict holds the fields in TraceRow's order (its __init__ sets them
    # in that order): half the cost of fetching 24 attributes by name.
    values = [*row.__dict__.values()]
    if len(values) != _N_COLUMNS:
        return None
    if type(values[_STREAM_AT]) is not bool or type(values[_ESTIMATED_AT]) is not bool:
        return None
    try:  # one sum instead of four isfinite calls: inf or NaN anywhere makes it NaN
        total = values[_STARTED_AT] + (values[_LATENCY_AT] or 0.0) + (values[_TTFT_AT] or 0.0)
        total += values[_COST_AT] or 0.0
    except Exception:  # not numbers (an array's truth is an error, not a TypeError)
        return None
    if type(total) is not float or total - total != 0.0:  # past the range too, harmlessly
        return None
    try:
        return orjson.dumps(values)
    except orjson.JSONEncodeError:
        pass
    try:  # a dict with keys that are not strings (rare): as the JSON columns' dumps does
        return orjson.dumps(values, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return None


# A NUL escaped in a packed row: SQLite's JSON functions would cut the text at it.
_ESCAPED_NUL = re.compile(rb"\\u0000")


def _batch_text(packed: list[bytes]) -> tuple[bytes, list[bytes], list[bytes]]:
    """The packed rows SQLite can take apart — as one JSON array, and as a list — and those
    with a NUL (to be bound instead): one search over the batch, then row by row only when
    it finds one."""
    text = b"[" + b",".join(packed) + b"]"
    if not _ESCAPED_NUL.search(text):
        return text, packed, []
    clean: list[bytes] = []
    nul: list[bytes] = []
    for blob in packed:
        (nul if _ESCAPED_NUL.search(blob) else clean).append(blob)
    return b"[" + b",".join(clean) + b"]", clean, nul


def _unpacked_row(item: bytes | TraceRow) -> TraceRow:
    """A queued item as a row (for a listener that subscribed after it was queued)."""
    return item if isinstance(item, TraceRow) else TraceRow(*orjson.loads(item))


def _upsert(table: str, columns: tuple[str, ...], key: tuple[str, ...]) -> str:
    """INSERT that writes over the row with the same key (the same SQL on both engines)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


def open_store(settings: Settings | None = None) -> Store:
    """The store the settings name: ``[storage] database_url`` in outcrop.toml or
    ``OUTCROP_DATABASE_URL`` (already folded into ``settings``), else ``outcrop.db`` in
    outcrop's home."""
    from ..config import home, load_settings

    settings = settings if settings is not None else load_settings()
    url = settings.storage.database_url
    return Store(url if url else home() / "outcrop.db")


# Rows kept in memory while the database is unreachable (about 2 KB each), oldest dropped.
_MAX_HELD = 100_000
_BATCH_ROWS = 4096  # rows the writer stores in one transaction, at most
# How long the writer waits for more rows before it writes a batch: packed rows cost
# nothing while they wait; rows kept for listeners are objects the garbage collector
# scans, and waiting longer for them cost a server more than the bigger batches saved.
_LINGER_S = 0.05
_LINGER_ROWS_S = 0.01


class Store:
    """Traces, ledger, prompt versions, eval runs and API keys on SQLite or PostgreSQL.

    ``Store(path)`` or ``Store("sqlite:///path")``: a SQLite file, shared by the threads of
    one process. ``Store("postgresql://user@host:5432/db")``: PostgreSQL through a
    connection pool, shared by threads and by any number of processes (server replicas).
    Opening applies pending migrations (``migrate=False`` leaves them to ``outcrop
    migrate``). An unreachable database raises :class:`StoreError` at once; a connection
    lost later is replaced and the read or transaction retried once, else that call
    raises :class:`StoreUnavailableError`.
    """

    def __init__(self, target: Path | str, *, migrate: bool = True):
        self._engine: Engine = connect(target)
        self.dialect = self._engine.dialect  # "sqlite" | "postgresql"
        self.path: Path | None = self._engine.path  # the SQLite file (None on PostgreSQL)
        self.url = self._engine.url  # where the store is, for people (no password)
        self._cv = threading.Condition()
        self._queue: deque[_Queued] = deque()  # rows waiting for the writer, oldest first
        self._idle = True  # the writer waits for a row (or has not started): wake it
        self._inflight = 0
        self._flushing = 0  # readers waiting for the queue to be written
        self._closed = False
        self._finished = False  # closed, and the writer's last rows written
        self._writer: threading.Thread | None = None
        self._listeners: list[Callable[[list[TraceRow]], None]] = []
        self._outage = 0  # failed writes in a row while the database is unreachable
        # Bumped when this object adds or revokes an API key, so caches of keys in this
        # process (the server's) see the change at once; other processes within their TTL.
        self.keys_generation = 0
        if migrate:
            try:
                self.migrate()
            except BaseException as exc:
                self._engine.close()
                error = self._engine.open_error(exc)
                if error is exc:
                    raise
                raise error from None

    @classmethod
    def open(cls, target: Path | str, *, migrate: bool = True) -> Store:
        """The store at a path or URL (``sqlite:///…``, ``postgresql://…``)."""
        return cls(target, migrate=migrate)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @contextmanager
    def _tx(self) -> Iterator[Tx]:
        with self._engine.transaction() as tx:
            yield tx

    def _all(self, sql: str, args: Any = ()) -> list[Row]:
        return self._engine.all(sql, args)

    def _one(self, sql: str, args: Any = ()) -> Row | None:
        return self._engine.one(sql, args)

    @property
    def _db(self) -> Any:
        """The SQLite connection itself (tests and tools; SQLite only)."""
        db = getattr(self._engine, "db", None)
        if db is None:
            raise AttributeError("_db: only a SQLite store has one connection")
        return db

    # -- migrations -----------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply the migrations not yet recorded, in one transaction; returns their names.

        On PostgreSQL an advisory lock makes replicas that start together wait for the
        first: each migration runs once."""
        applied: list[str] = []
        with self._tx() as tx:
            tx.lock("outcrop.migrate")
            tx.execute(self._engine.migrations_table)
            done = {row[0] for row in tx.execute("SELECT name FROM _migrations").fetchall()}
            for migration in MIGRATIONS:
                if migration.name not in done:
                    for statement in migration.statements(self.dialect):
                        tx.execute(statement)
                    tx.execute("INSERT INTO _migrations (name) VALUES (?)", (migration.name,))
                    applied.append(migration.name)
        return applied

    def migrations(self) -> list[str]:
        """The names of the applied migrations."""
        return [r[0] for r in self._all("SELECT name FROM _migrations ORDER BY name")]

    def migration_status(self) -> list[dict[str, Any]]:
        """Every migration this outcrop knows, applied (with when) or pending, in order; then
        any the database records that this outcrop does not know (a newer outcrop's)."""
        applied: dict[str, str] = {}
        if self._engine.has_table("_migrations"):
            rows = self._all("SELECT name, applied_at FROM _migrations ORDER BY name")
            applied = {r[0]: str(r[1]) for r in rows}
        status = [
            {
                "name": m.name,
                "status": "applied" if m.name in applied else "pending",
                "applied_at": applied.get(m.name),
            }
            for m in MIGRATIONS
        ]
        known = {m.name for m in MIGRATIONS}
        status += [
            {"name": name, "status": "unknown", "applied_at": at}
            for name, at in applied.items()
            if name not in known
        ]
        return status

    def close(self) -> None:
        self.flush()
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        writer = self._writer
        if writer is not None:
            writer.join(timeout=5)
        with self._cv:
            # Rows of calls that queued them while the store closed, after the writer's
            # last look: written here. A call that queues one after this is told the
            # store is closed, and its row taken back (see _wake).
            if self._queue and (writer is None or not writer.is_alive()):
                late = self._drain()
                if not self._write_batch(late):
                    log.error("%d trace rows not written: the database is unreachable", len(late))
                elif self._listeners:
                    self._notify([_unpacked_row(item) for item in late])
            self._finished = True
        self._engine.close()

    # -- traces -----------------------------------------------------------

    def _values(self, row: TraceRow) -> tuple[Any, ...]:
        # For record() and replace(), and rows the writer cannot pack: one C-level
        # attribute fetch, then the few columns that need converting.
        return self._bound(list(_ROW_VALUES(row)))

    def _bound(self, values: list[Any]) -> tuple[Any, ...]:
        """A row's column values (TraceRow's order) as the database binds them."""
        json_value = self._engine.json
        for i in _JSON_AT:
            values[i] = json_value(values[i])
        for i in _BOOL_AT:
            values[i] = bool(values[i])
        return tuple(values)

    def subscribe(self, listener: Callable[[list[TraceRow]], None]) -> None:
        """Call ``listener`` with every batch of rows once it is stored (OpenTelemetry
        export, online evaluation). It runs on the writer thread, off the calls' path: keep
        it short or hand the rows on; an exception it raises is logged, never propagated."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[list[TraceRow]], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, rows: list[TraceRow]) -> None:
        for listener in list(self._listeners):
            try:
                listener(rows)
            except Exception:
                log.exception("trace listener %r failed", listener)

    def record(self, row: TraceRow) -> None:
        """Add one call's row; an id already stored is an error (:class:`StoreError`)."""
        self.flush()
        try:
            with self._tx() as tx:
                tx.execute(_TRACE_INSERT, self._values(row))
        except self._engine.integrity_errors:
            raise StoreError(
                f"A trace with id {row.id!r} is already stored; give the row a new id, or "
                "use Store.replace to write over it."
            ) from None
        self._notify([row])

    def record_later(self, row: TraceRow) -> None:
        """Add a row from the hot path: a writer thread stores queued rows in batches, one
        transaction each, so a call does not wait for the database. Every read flushes
        first, so readers (budgets included) always see every row recorded before they asked."""
        # With nobody listening the row is queued as its packed values and freed at once;
        # listeners need the row itself, and then it is queued as it is.
        item: _Queued = row if self._listeners else (_packed(row) or row)
        if self._closed:
            raise UserError("The trace store is closed.")
        # No lock on the way in: a deque's append is atomic, and the writer takes what is
        # queued under its lock. Only the first row after the writer fell idle wakes it
        # (and a row that raced close() learns of it there).
        self._queue.append(item)
        if self._idle or self._closed:
            self._wake(item)

    def _wake(self, item: _Queued) -> None:
        with self._cv:
            if self._finished:
                # Closed, and its last rows written. The row is still queued unless
                # close() wrote it: then the call is done; else nothing will take it.
                for i, queued in enumerate(self._queue):
                    if queued is item:
                        del self._queue[i]
                        raise UserError("The trace store is closed.")
                return
            if self._writer is None and not self._closed:
                self._writer = threading.Thread(
                    target=self._write_loop, name="outcrop-trace-writer", daemon=True
                )
                self._writer.start()
                # Rows still queued when the program ends are written before it exits.
                atexit.register(_flush_at_exit, weakref.ref(self))
            # Idle only when it waits for rows (never during an outage's back-off).
            if self._idle:
                self._idle = False
                self._cv.notify_all()

    def _take(self) -> list[_Queued]:
        """The queued rows, oldest first, up to a batch (the caller holds the lock)."""
        return self._drain(_BATCH_ROWS)

    def _drain(self, most: int | None = None) -> list[_Queued]:
        """Queued rows, oldest first: one at a time, so a row appended meanwhile (calls
        take no lock) stays queued instead of being cleared unseen."""
        queue = self._queue
        n = len(queue) if most is None else min(len(queue), most)
        return [queue.popleft() for _ in range(n)]

    def _write_loop(self) -> None:
        while True:
            with self._cv:
                while True:
                    # Idle before looking: a row queued after the look sees it and wakes
                    # this thread (callers take no lock); one queued before it is seen.
                    self._idle = True
                    if self._queue or self._closed:
                        break
                    self._cv.wait()
                self._idle = False
                if not self._queue:
                    return
                # Linger a moment so rows arriving together share one transaction
                # (a commit costs far more than a row); a reader waiting cuts it short.
                # Callers do not wake this thread while it lingers: a notification a call
                # would cost a thread switch a call.
                deadline = time.monotonic() + (_LINGER_ROWS_S if self._listeners else _LINGER_S)
                while (
                    len(self._queue) < _BATCH_ROWS
                    and not self._flushing
                    and not self._closed
                    and (left := deadline - time.monotonic()) > 0
                ):
                    self._cv.wait(timeout=left)
                batch = self._take()
                self._inflight = len(batch)
            try:
                if not self._write_batch(batch):
                    self._hold_back(batch)
                    continue
                if self._outage:
                    log.warning("the database answers again: queued trace rows written")
                    self._outage = 0
                if self._listeners:
                    self._notify([_unpacked_row(item) for item in batch])
            except Exception:
                log.exception("%d trace rows could not be written", len(batch))
            finally:
                with self._cv:
                    self._inflight = 0
                    self._cv.notify_all()

    def _hold_back(self, batch: list[_Queued]) -> None:
        """The database is unreachable: keep the rows (they are the budget ledger), queued
        first, and wait before trying again — up to ``_MAX_HELD`` rows, the oldest dropped
        beyond that. Once closed, what cannot be written is counted in the log."""
        with self._cv:
            self._outage += 1
            if self._closed:
                lost = len(batch) + len(self._drain())
                log.error("%d trace rows not written: the database is unreachable", lost)
                return
            self._queue.extendleft(reversed(batch))
            dropped = len(self._queue) - _MAX_HELD
            if dropped > 0:
                for _ in range(dropped):
                    self._queue.popleft()
                log.error("%d trace rows dropped: the database is unreachable", dropped)
            self._inflight = 0
            self._cv.notify_all()  # readers waiting in flush() go on (and meet the outage)
            self._cv.wait(timeout=min(2.0 ** min(self._outage, 4), 10.0))

    def _write_batch(self, batch: list[_Queued]) -> bool:
        """Store a batch in one transaction. A failed batch is tried once more (a dropped
        connection is replaced); then row by row, so one row the database refuses costs
        only itself. An id already stored is skipped with a warning."""
        packed: list[bytes] = []
        values: list[tuple[Any, ...]] = []
        for item in batch:
            if isinstance(item, bytes):
                packed.append(item)
            elif blob := _packed(item):  # a row kept for listeners: SQLite still takes
                packed.append(blob)  # it apart, a third of the time of binding its values
            else:  # values JSON cannot carry exactly, or a row _packed cannot read
                try:
                    values.append(self._values(item))
                except (TypeError, ValueError) as exc:  # a value JSON cannot hold
                    log.error("trace %s could not be written: %s", item.id, exc)
        text, packed, nul = _batch_text(packed)
        values.extend(map(self._unpacked, nul))
        conflict = "ON CONFLICT (id) DO NOTHING"
        total = len(packed) + len(values)
        stored = 0
        for attempt in (1, 2):
            try:
                with self._tx() as tx:
                    stored = 0
                    if packed:
                        stored = tx.insert_json(
                            "traces", _TRACE_COLUMNS, text, json_columns=_JSON_AT, conflict=conflict
                        )
                    stored += tx.insert_many("traces", _TRACE_COLUMNS, values, conflict=conflict)
                break
            except Exception as exc:
                if attempt == 1:
                    log.warning("%d trace rows: write failed (%s); trying again", total, exc)
                    continue
                if isinstance(exc, StoreUnavailableError):
                    log.error("%d trace rows held back: %s", total, exc)
                    return False
                stored = self._write_one_by_one([*map(self._unpacked, packed), *values])
        if 0 <= stored < total:
            log.warning(
                "%d trace row(s) not stored: a row with the same id was stored already",
                total - stored,
            )
        return True

    def _unpacked(self, blob: bytes) -> tuple[Any, ...]:
        """A queued JSON array as the values :meth:`_values` gives."""
        return self._bound(orjson.loads(blob))

    def _write_one_by_one(self, values: list[tuple[Any, ...]]) -> int:
        """Each row in its own transaction; a row the database refuses is logged and
        counted as handled (it is not a duplicate)."""
        sql = _TRACE_INSERT + " ON CONFLICT (id) DO NOTHING"
        stored = 0
        for one in values:
            try:
                with self._tx() as tx:
                    stored += tx.execute(sql, one).rowcount
            except Exception as row_exc:
                log.error("trace %s could not be written: %s", one[0], row_exc)
                stored += 1
        return stored

    def flush(self) -> None:
        """Wait until every row queued by :meth:`record_later` is stored."""
        with self._cv:
            self._flushing += 1
            self._cv.notify_all()
            try:
                while self._queue or self._inflight:
                    if self._writer is None or not self._writer.is_alive() or self._outage:
                        break
                    self._cv.wait(timeout=1.0)
            finally:
                self._flushing -= 1

    def replace(self, row: TraceRow) -> None:
        """Write a row over the one with its id (a run that paused and went on)."""
        self.flush()
        with self._tx() as tx:
            tx.execute(_upsert("traces", _TRACE_COLUMNS, ("id",)), self._values(row))

    @staticmethod
    def _load(value: Any) -> Any:
        # JSON columns: text on SQLite, already parsed (jsonb) on PostgreSQL.
        return json.loads(value) if isinstance(value, str) else value

    @classmethod
    def _row(cls, r: Row) -> TraceRow:
        data = {c: r[i] for i, c in enumerate(_TRACE_COLUMNS)}
        data["stream"] = bool(data["stream"])
        data["usage_estimated"] = bool(data["usage_estimated"])
        data["request"] = cls._load(data["request"])
        data["attempts"] = cls._load(data["attempts"])
        data["guardrails"] = cls._load(data["guardrails"])
        return TraceRow(**data)

    def recent(
        self,
        limit: int = 20,
        model: str | None = None,
        *,
        kind: str | None = None,
        status: str | None = None,
    ) -> list[TraceRow]:
        """The most recent calls, newest first."""
        self.flush()
        sql = f"SELECT {_TRACE_SELECT} FROM traces"
        where: list[str] = []
        args: list[Any] = []
        if model:
            where.append("(model = ? OR requested_model = ?)")
            args += [model, model]
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if status:
            where.append("status = ?")
            args.append(status)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY started_at DESC, {self._engine.rowid} DESC LIMIT ?"
        args.append(limit)
        return [self._row(r) for r in self._all(sql, args)]

    def get(self, trace_id: str) -> TraceRow | None:
        """A call by id, or by a unique prefix of its id."""
        self.flush()
        rows = self._all(
            f"SELECT {_TRACE_SELECT} FROM traces WHERE id LIKE ? ESCAPE '\\' "
            "ORDER BY started_at DESC LIMIT 2",
            (trace_id.replace("\\", "").replace("%", r"\%").replace("_", r"\_") + "%",),
        )
        if len(rows) != 1:
            exact = [r for r in rows if r[0] == trace_id]
            return self._row(exact[0]) if exact else None
        return self._row(rows[0])

    def count(self) -> int:
        self.flush()
        row = self._one("SELECT count(*) FROM traces")
        return int(row[0]) if row is not None else 0

    def usage(self, days: int | None = None) -> list[UsageRow]:
        """Totals by day (UTC) and model, newest day first."""
        self.flush()
        sql = f"""
            SELECT {self._engine.day("started_at")} AS day,
                   coalesce(model, requested_model) AS model,
                   count(*) AS calls,
                   sum(input_tokens) AS input_tokens,
                   sum(output_tokens) AS output_tokens,
                   coalesce(sum(cost_usd), 0) AS cost_usd,
                   sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors
            FROM traces
        """
        args: list[Any] = []
        if days is not None:
            sql += " WHERE started_at >= ?"
            args.append(time.time() - int(days) * 86400)
        sql += " GROUP BY 1, 2 ORDER BY 1 DESC, 2"
        return [UsageRow(**dict(r)) for r in self._all(sql, args)]

    # -- prompt versions ----------------------------------------------------

    def prompt_names(self) -> list[str]:
        return [r[0] for r in self._all("SELECT DISTINCT name FROM prompt_versions ORDER BY name")]

    def prompt_versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of a prompt, oldest first."""
        return [
            dict(r)
            for r in self._all(
                "SELECT name, version, hash, content, source, path, created_at, author, note "
                "FROM prompt_versions WHERE name = ? ORDER BY version",
                (name,),
            )
        ]

    def add_prompt_version(
        self,
        *,
        name: str,
        content_hash: str,
        content: str,
        source: str | None,
        path: str | None,
        author: str | None,
        note: str | None,
        created_at: float,
    ) -> tuple[int, bool]:
        """Record a version unless one with this hash exists; returns (version, created)."""
        with self._tx() as tx:
            tx.lock(f"prompt:{name}")  # replicas number a prompt's versions one at a time
            row = tx.execute(
                "SELECT version FROM prompt_versions WHERE name = ? AND hash = ?",
                (name, content_hash),
            ).fetchone()
            if row is not None:
                return int(row[0]), False
            latest = tx.execute(
                "SELECT coalesce(max(version), 0) FROM prompt_versions WHERE name = ?", (name,)
            ).fetchone()[0]
            version = int(latest) + 1
            tx.execute(
                "INSERT INTO prompt_versions (name, version, hash, content, source, path, "
                "created_at, author, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, version, content_hash, content, source, path, created_at, author, note),
            )
            return version, True

    def prompt_labels(self, name: str) -> dict[str, int]:
        return {
            r[0]: int(r[1])
            for r in self._all(
                "SELECT label, version FROM prompt_labels WHERE name = ? ORDER BY label", (name,)
            )
        }

    def move_prompt_label(
        self, name: str, label: str, version: int, moved_at: float, kind: str = "promote"
    ) -> int | None:
        """Point ``label`` at ``version``; returns the version it pointed at before."""
        with self._tx() as tx:
            tx.lock(f"prompt:{name}")
            row = tx.execute(
                "SELECT version FROM prompt_labels WHERE name = ? AND label = ?", (name, label)
            ).fetchone()
            previous = int(row[0]) if row is not None else None
            tx.execute(
                _upsert(
                    "prompt_labels", ("name", "label", "version", "moved_at"), ("name", "label")
                ),
                (name, label, version, moved_at),
            )
            tx.execute(
                "INSERT INTO prompt_label_moves (name, label, version, previous, moved_at, kind) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, label, version, previous, moved_at, kind),
            )
            return previous

    def prompt_label_moves(self, name: str, label: str) -> list[dict[str, Any]]:
        """How a label moved, newest first."""
        return [
            dict(r)
            for r in self._all(
                "SELECT name, label, version, previous, moved_at, kind FROM prompt_label_moves "
                f"WHERE name = ? AND label = ? ORDER BY moved_at DESC, {self._engine.rowid} DESC",
                (name, label),
            )
        ]

    def children(self, parent_id: str) -> list[TraceRow]:
        """The calls made under one trace (a chain's steps), in order."""
        self.flush()
        return [
            self._row(r)
            for r in self._all(
                f"SELECT {_TRACE_SELECT} FROM traces WHERE parent_id = ? "
                f"ORDER BY started_at, {self._engine.rowid}",
                (parent_id,),
            )
        ]

    # -- evaluation runs ----------------------------------------------------

    def add_eval_run(
        self,
        *,
        run_id: str,
        suite: str,
        suite_hash: str,
        suite_json: str,
        total: int,
        created_at: float,
    ) -> None:
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO eval_runs (id, suite, suite_hash, suite_json, created_at, status, "
                "total) VALUES (?, ?, ?, ?, ?, 'running', ?)",
                (run_id, suite, suite_hash, suite_json, created_at, total),
            )

    def set_eval_run_status(self, run_id: str, status: str, finished_at: float | None) -> None:
        with self._tx() as tx:
            tx.execute(
                "UPDATE eval_runs SET status = ?, finished_at = ? WHERE id = ?",
                (status, finished_at, run_id),
            )

    def eval_runs(self, limit: int = 20, suite: str | None = None) -> list[dict[str, Any]]:
        """Runs, newest first, with how many results each holds."""
        where, args = ("WHERE r.suite = ?", [suite]) if suite else ("", [])
        return [
            dict(r)
            for r in self._all(
                "SELECT r.id, r.suite, r.suite_hash, r.created_at, r.finished_at, r.status, "
                "r.total, (SELECT count(*) FROM eval_results e WHERE e.run_id = r.id) AS done "
                f"FROM eval_runs r {where} "
                f"ORDER BY r.created_at DESC, r.{self._engine.rowid} DESC LIMIT ?",
                (*args, limit),
            )
        ]

    def eval_run(self, run_id: str) -> dict[str, Any] | None:
        """A run by id or unique id prefix (``None`` when none matches)."""
        rows = self._all(
            "SELECT id, suite, suite_hash, suite_json, created_at, finished_at, status, total, "
            "note FROM eval_runs WHERE id = ? OR id LIKE ? ORDER BY id = ? DESC LIMIT 2",
            (run_id, run_id.replace("%", "").replace("_", "") + "%", run_id),
        )
        if not rows:
            return None
        if len(rows) > 1 and rows[0]["id"] != run_id:
            raise UserError(f"{run_id!r} matches more than one run; give more of the id.")
        return dict(rows[0])

    def add_eval_result(
        self, run_id: str, prompt: str, model: str, case_id: str, repeat: int, data: str
    ) -> None:
        columns = ("run_id", "prompt", "model", "case_id", "repeat", "data", "created_at")
        with self._tx() as tx:
            tx.execute(
                _upsert("eval_results", columns, columns[:5]),
                (run_id, prompt, model, case_id, repeat, data, time.time()),
            )

    def eval_results(self, run_id: str) -> list[dict[str, Any]]:
        """A run's result rows in the order they were stored (``data`` still JSON text)."""
        return [
            dict(r)
            for r in self._all(
                "SELECT run_id, prompt, model, case_id, repeat, data, created_at FROM "
                f"eval_results WHERE run_id = ? ORDER BY created_at, {self._engine.rowid}",
                (run_id,),
            )
        ]

    def cache_get(self, key: str) -> str | None:
        row = self._one("SELECT data FROM eval_cache WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def cache_put(self, key: str, data: str) -> None:
        with self._tx() as tx:
            tx.execute(
                _upsert("eval_cache", ("key", "data", "created_at"), ("key",)),
                (key, data, time.time()),
            )

    # -- server API keys ----------------------------------------------------

    def add_api_key(
        self,
        *,
        key_id: str,
        name: str,
        key_hash: str,
        prefix: str,
        scopes: str,
        limits: str,
        created_at: float,
    ) -> None:
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO api_keys (id, name, hash, prefix, scopes, limits, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key_id, name, key_hash, prefix, scopes, limits, created_at),
            )
        self.keys_generation += 1

    def api_keys(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        return [dict(r) for r in self._all(f"SELECT * FROM api_keys {where} ORDER BY created_at")]

    def api_key_by_hash(self, key_hash: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM api_keys WHERE hash = ? AND revoked_at IS NULL", (key_hash,))
        return None if row is None else dict(row)

    def revoke_api_key(self, name: str, revoked_at: float) -> bool:
        with self._tx() as tx:
            cur = tx.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (revoked_at, name),
            )
            revoked = cur.rowcount > 0
        self.keys_generation += 1
        return revoked

    def key_usage(self, key_id: str, since: float) -> tuple[int, float, int]:
        """(tokens, cost in USD, calls) recorded for an API key since a time."""
        self.flush()
        row = self._one(
            "SELECT coalesce(sum(input_tokens + output_tokens), 0), "
            "coalesce(sum(cost_usd), 0), count(*) FROM traces "
            "WHERE api_key = ? AND started_at >= ?",
            (key_id, since),
        )
        assert row is not None  # an aggregate always has a row
        return int(row[0]), float(row[1]), int(row[2])

    # -- feedback and monitoring ----------------------------------------------

    def set_feedback(self, trace_id: str, rating: str, comment: str) -> None:
        """Store (or replace) the feedback on a call."""
        self.flush()  # the trace it names may still be queued
        with self._tx() as tx:
            tx.execute(
                _upsert("feedback", ("trace_id", "rating", "comment", "created_at"), ("trace_id",)),
                (trace_id, rating, comment, time.time()),
            )

    def feedback(self, trace_ids: list[str]) -> dict[str, dict[str, Any]]:
        self.flush()
        if not trace_ids:
            return {}
        marks = ",".join("?" * len(trace_ids))
        return {
            r["trace_id"]: {"rating": r["rating"], "comment": r["comment"]}
            for r in self._all(
                f"SELECT trace_id, rating, comment FROM feedback WHERE trace_id IN ({marks})",
                trace_ids,
            )
        }

    def calls_since(
        self,
        since: float,
        *,
        model: str | None = None,
        prompt: str | None = None,
        api_key: str | None = None,
    ) -> list[dict[str, Any]]:
        """Top-level calls since a time, with what a dashboard sums (oldest first)."""
        self.flush()
        sql = (
            "SELECT started_at, status, input_tokens, output_tokens, cost_usd, latency_ms, "
            "coalesce(model, requested_model) AS model, prompt_name, prompt_version, api_key "
            "FROM traces WHERE started_at >= ? AND kind NOT IN ('tool', 'chain', 'agent')"
        )
        args: list[Any] = [since]
        if model:
            sql += " AND (model = ? OR requested_model = ?)"
            args += [model, model]
        sql += _prompt_and_key(prompt, api_key, args)
        sql += " ORDER BY started_at"
        return [dict(r) for r in self._all(sql, args)]

    # -- online evaluation and alerts -------------------------------------------

    def add_online_scores(self, rows: list[dict[str, Any]]) -> int:
        """Store scores of live calls (keys: trace_id, metric, score, reason, scored_at, model,
        prompt_name, prompt_version, api_key); a call already scored on a metric keeps its
        first score. Returns how many were new."""
        added = 0
        with self._tx() as db:
            for row in rows:
                cur = db.execute(
                    "INSERT INTO online_scores (trace_id, metric, score, reason, scored_at, model, "
                    "prompt_name, prompt_version, api_key) VALUES (:trace_id, :metric, :score, "
                    ":reason, :scored_at, :model, :prompt_name, :prompt_version, :api_key) "
                    "ON CONFLICT (trace_id, metric) DO NOTHING",
                    row,
                )
                added += max(cur.rowcount, 0)
        return added

    def online_scores(
        self,
        since: float,
        until: float,
        *,
        model: str | None = None,
        prompt: str | None = None,
        api_key: str | None = None,
    ) -> list[dict[str, Any]]:
        """Scores given from ``since`` up to ``until``, oldest first."""
        sql = (
            "SELECT trace_id, metric, score, reason, scored_at, model, prompt_name, "
            "prompt_version FROM online_scores WHERE scored_at >= ? AND scored_at < ?"
        )
        args: list[Any] = [since, until]
        if model:
            sql += " AND model = ?"
            args.append(model)
        sql += _prompt_and_key(prompt, api_key, args)
        sql += " ORDER BY scored_at, trace_id"
        return [dict(r) for r in self._all(sql, args)]

    def online_window(
        self, metric: str, *, last: int | None = None, since: float | None = None
    ) -> list[float]:
        """A metric's latest scores, newest first (unscored calls left out): the last ``last``
        of them, or those given since ``since``."""
        sql = "SELECT score FROM online_scores WHERE metric = ? AND score IS NOT NULL"
        args: list[Any] = [metric]
        if since is not None:
            sql += " AND scored_at >= ?"
            args.append(since)
        sql += " ORDER BY scored_at DESC, trace_id DESC"
        if last is not None:
            sql += " LIMIT ?"
            args.append(last)
        return [float(r[0]) for r in self._all(sql, args)]

    def open_alert(
        self,
        *,
        alert_id: str,
        rule: str,
        metric: str,
        opened_at: float,
        value: float,
        threshold: float,
        detail: str,
    ) -> dict[str, Any] | None:
        """Open an alert for ``rule`` unless one is open already (raised here or by another
        replica); returns it, or None when one was open."""
        try:
            with self._tx() as db:
                if db.execute(
                    "SELECT 1 FROM alerts WHERE rule = ? AND closed_at IS NULL", (rule,)
                ).fetchone():
                    return None
                db.execute(
                    "INSERT INTO alerts (id, rule, metric, opened_at, value, threshold, detail) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (alert_id, rule, metric, opened_at, value, threshold, detail),
                )
        except self._engine.integrity_errors:  # another writer opened it first
            return None
        return {
            "id": alert_id,
            "rule": rule,
            "metric": metric,
            "opened_at": opened_at,
            "closed_at": None,
            "value": value,
            "threshold": threshold,
            "detail": detail,
            "closed_value": None,
        }

    def close_alert(self, rule: str, *, closed_at: float, value: float) -> dict[str, Any] | None:
        """Close the open alert of ``rule``; returns it, closed, or None when none was open."""
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM alerts WHERE rule = ? AND closed_at IS NULL", (rule,)
            ).fetchone()
            if row is None:
                return None
            # Only if it is still open: replicas that saw the same recovery race to close it,
            # and only the one whose update lands reports it (one "resolved" webhook).
            done = db.execute(
                "UPDATE alerts SET closed_at = ?, closed_value = ? WHERE id = ? "
                "AND closed_at IS NULL",
                (closed_at, value, row["id"]),
            )
            if done.rowcount != 1:
                return None
        return {**dict(row), "closed_at": closed_at, "closed_value": value}

    def alerts(self, *, open_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        """Alerts, newest first; ``open_only`` for those not closed yet."""
        where = " WHERE closed_at IS NULL" if open_only else ""
        return [
            dict(r)
            for r in self._all(
                f"SELECT * FROM alerts{where} ORDER BY opened_at DESC, id LIMIT ?", (limit,)
            )
        ]


def _prompt_and_key(prompt: str | None, api_key: str | None, args: list[Any]) -> str:
    """SQL conditions (appending their arguments) for a prompt ("name" or "name@3") and an
    API key id, as the monitoring filters take them."""
    sql = ""
    if prompt:
        name, _, version = prompt.partition("@")
        sql += " AND prompt_name = ?"
        args.append(name)
        if version.isdigit():
            sql += " AND prompt_version = ?"
            args.append(int(version))
    if api_key:
        sql += " AND api_key = ?"
        args.append(api_key)
    return sql
