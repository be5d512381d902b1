"""The trace store: one row per model call, in SQLite (WAL), with named migrations.

Every call through the gateway — plain or streamed, finished, failed or
cancelled — leaves exactly one row in ``traces``. The same row is the usage
ledger: tokens, cost and latency are summed from it by ``usage()``.
"""

from __future__ import annotations

import atexit
import json
import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import UserError

log = logging.getLogger("outcrop.store")

__all__ = ["MIGRATIONS", "Store", "TraceRow", "UsageRow"]


def _m001_traces(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE traces (
            id TEXT PRIMARY KEY,
            parent_id TEXT,
            kind TEXT NOT NULL DEFAULT 'chat',
            started_at REAL NOT NULL,
            requested_model TEXT NOT NULL,
            model TEXT,
            provider TEXT,
            stream INTEGER NOT NULL,
            status TEXT NOT NULL,
            finish_reason TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            latency_ms REAL,
            ttft_ms REAL,
            cost_usd REAL,
            error TEXT,
            attempts TEXT NOT NULL DEFAULT '[]',
            request TEXT NOT NULL,
            response TEXT
        )
        """
    )
    db.execute("CREATE INDEX traces_started ON traces(started_at)")
    db.execute("CREATE INDEX traces_model ON traces(model, started_at)")


def _m002_usage_estimated(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE traces ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0")


def _m003_prompts(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE traces ADD COLUMN prompt_name TEXT")
    db.execute("ALTER TABLE traces ADD COLUMN prompt_version INTEGER")
    db.execute("CREATE INDEX traces_parent ON traces(parent_id)")
    db.execute(
        """
        CREATE TABLE prompt_versions (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            hash TEXT NOT NULL,
            content TEXT NOT NULL,
            source TEXT,
            path TEXT,
            created_at REAL NOT NULL,
            author TEXT,
            note TEXT,
            PRIMARY KEY (name, version),
            UNIQUE (name, hash)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE prompt_labels (
            name TEXT NOT NULL,
            label TEXT NOT NULL,
            version INTEGER NOT NULL,
            moved_at REAL NOT NULL,
            PRIMARY KEY (name, label)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE prompt_label_moves (
            name TEXT NOT NULL,
            label TEXT NOT NULL,
            version INTEGER NOT NULL,
            previous INTEGER,
            moved_at REAL NOT NULL
        )
        """
    )


def _m004_label_move_kind(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE prompt_label_moves ADD COLUMN kind TEXT NOT NULL DEFAULT 'promote'")


def _m005_evals(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE eval_runs (
            id TEXT PRIMARY KEY,
            suite TEXT NOT NULL,
            suite_hash TEXT NOT NULL,
            suite_json TEXT NOT NULL,
            created_at REAL NOT NULL,
            finished_at REAL,
            status TEXT NOT NULL,
            total INTEGER NOT NULL,
            note TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE eval_results (
            run_id TEXT NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
            prompt TEXT NOT NULL,
            model TEXT NOT NULL,
            case_id TEXT NOT NULL,
            repeat INTEGER NOT NULL,
            data TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (run_id, prompt, model, case_id, repeat)
        )
        """
    )
    db.execute(
        "CREATE TABLE eval_cache (key TEXT PRIMARY KEY, data TEXT NOT NULL, "
        "created_at REAL NOT NULL)"
    )


def _m006_api_keys(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            scopes TEXT NOT NULL,
            limits TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL
        )
        """
    )
    db.execute("ALTER TABLE traces ADD COLUMN api_key TEXT")
    db.execute("CREATE INDEX traces_api_key ON traces(api_key, started_at)")


def _m007_guardrails(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE traces ADD COLUMN guardrails TEXT NOT NULL DEFAULT '[]'")


def _m008_feedback(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE feedback (
            trace_id TEXT PRIMARY KEY REFERENCES traces(id),
            rating TEXT NOT NULL,
            comment TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL
        )
        """
    )


def _m009_online_eval(db: sqlite3.Connection) -> None:
    # Live traffic scored by online evaluation (outcrop.observe.online), and the alerts its
    # rules raise. Plain SQL: the same statements run on PostgreSQL.
    db.execute(
        """
        CREATE TABLE online_scores (
            trace_id TEXT NOT NULL,
            metric TEXT NOT NULL,
            score REAL,
            reason TEXT,
            scored_at REAL NOT NULL,
            model TEXT,
            prompt_name TEXT,
            prompt_version INTEGER,
            api_key TEXT,
            PRIMARY KEY (trace_id, metric)
        )
        """
    )
    db.execute("CREATE INDEX online_scores_metric ON online_scores(metric, scored_at)")
    db.execute("CREATE INDEX online_scores_time ON online_scores(scored_at)")
    db.execute(
        """
        CREATE TABLE alerts (
            id TEXT PRIMARY KEY,
            rule TEXT NOT NULL,
            metric TEXT NOT NULL,
            opened_at REAL NOT NULL,
            closed_at REAL,
            value REAL,
            threshold REAL NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            closed_value REAL
        )
        """
    )
    # At most one open alert per rule, across every replica writing to this database.
    db.execute("CREATE UNIQUE INDEX alerts_open ON alerts(rule) WHERE closed_at IS NULL")
    db.execute("CREATE INDEX alerts_opened ON alerts(opened_at)")


# Named and ordered; each applied once and recorded in _migrations.
MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("001_traces", _m001_traces),
    ("002_usage_estimated", _m002_usage_estimated),
    ("003_prompts", _m003_prompts),
    ("004_label_move_kind", _m004_label_move_kind),
    ("005_evals", _m005_evals),
    ("006_api_keys", _m006_api_keys),
    ("007_guardrails", _m007_guardrails),
    ("008_feedback", _m008_feedback),
    ("009_online_eval", _m009_online_eval),
]


@dataclass
class TraceRow:
    """One model call as recorded."""

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


class Store:
    """SQLite store for traces. Safe to share between threads of one process."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._cv = threading.Condition()
        self._pending: list[TraceRow] = []
        self._inflight = 0
        self._flushing = 0  # readers waiting for the queue to be written
        self._closed = False
        self._writer: threading.Thread | None = None
        self._listeners: list[Callable[[list[TraceRow]], None]] = []
        # Bumped when this object adds or revokes an API key, so caches of keys in this
        # process (the server's) see the change at once; other processes within their TTL.
        self.keys_generation = 0
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self.migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise UserError(
                f"{self.path} is not a usable outcrop database ({exc}). Move it aside; outcrop "
                "starts a new one on the next call."
            ) from None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def migrate(self) -> list[str]:
        """Apply the migrations not yet recorded; returns their names."""
        applied: list[str] = []
        with self._tx() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at "
                "TEXT NOT NULL DEFAULT (datetime('now')))"
            )
            done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
            for name, fn in MIGRATIONS:
                if name not in done:
                    fn(db)
                    db.execute("INSERT INTO _migrations(name) VALUES (?)", (name,))
                    applied.append(name)
        return applied

    def migrations(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT name FROM _migrations ORDER BY name")]

    def close(self) -> None:
        self.flush()
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._writer is not None:
            self._writer.join(timeout=5)
        with self._lock:
            self._db.close()

    # -- traces -----------------------------------------------------------

    @staticmethod
    def _columns(row: TraceRow) -> dict[str, Any]:
        data = row.to_dict()
        data["stream"] = int(row.stream)
        data["usage_estimated"] = int(row.usage_estimated)
        data["request"] = json.dumps(row.request, ensure_ascii=False)
        data["attempts"] = json.dumps(row.attempts, ensure_ascii=False)
        data["guardrails"] = json.dumps(row.guardrails, ensure_ascii=False)
        return data

    def _write(self, row: TraceRow, verb: str) -> None:
        data = self._columns(row)
        columns = ", ".join(data)
        marks = ", ".join(f":{k}" for k in data)
        with self._tx() as db:
            db.execute(f"{verb} INTO traces ({columns}) VALUES ({marks})", data)

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
        """Add one call's row; an id already stored is an error."""
        self.flush()
        self._write(row, "INSERT")
        self._notify([row])

    def record_later(self, row: TraceRow) -> None:
        """Add a row from the hot path: a writer thread stores queued rows in batches, one
        transaction each, so a call does not wait for SQLite. Every read flushes first, so
        readers (budgets included) always see every row recorded before they asked."""
        with self._cv:
            if self._closed:
                raise UserError("The trace store is closed.")
            self._pending.append(row)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="outcrop-trace-writer", daemon=True
                )
                self._writer.start()
                # Rows still queued when the program ends are written before it exits.
                atexit.register(_flush_at_exit, weakref.ref(self))
            self._cv.notify_all()

    def _write_loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if not self._pending:
                    return
                # Linger a moment so rows arriving together share one transaction
                # (a commit costs far more than a row); a reader waiting cuts it short.
                deadline = time.monotonic() + 0.01
                while (
                    len(self._pending) < 512
                    and not self._flushing
                    and not self._closed
                    and (left := deadline - time.monotonic()) > 0
                ):
                    self._cv.wait(timeout=left)
                batch, self._pending = self._pending, []
                self._inflight = len(batch)
            try:
                rows = [self._columns(r) for r in batch]
                with self._tx() as db:
                    for data in rows:
                        columns = ", ".join(data)
                        marks = ", ".join(f":{k}" for k in data)
                        try:
                            db.execute(f"INSERT INTO traces ({columns}) VALUES ({marks})", data)
                        except sqlite3.IntegrityError as exc:
                            log.warning("trace %s not stored: %s", data["id"], exc)
                if self._listeners:
                    self._notify(batch)
            except Exception:
                log.exception("%d trace rows could not be written", len(batch))
            finally:
                with self._cv:
                    self._inflight = 0
                    self._cv.notify_all()

    def flush(self) -> None:
        """Wait until every row queued by :meth:`record_later` is stored."""
        with self._cv:
            self._flushing += 1
            self._cv.notify_all()
            try:
                while self._pending or self._inflight:
                    if self._writer is None or not self._writer.is_alive():
                        break
                    self._cv.wait(timeout=1.0)
            finally:
                self._flushing -= 1

    def replace(self, row: TraceRow) -> None:
        """Write a row over the one with its id (a run that paused and went on)."""
        self.flush()
        self._write(row, "INSERT OR REPLACE")

    @staticmethod
    def _row(r: sqlite3.Row) -> TraceRow:
        data = dict(r)
        data["stream"] = bool(data["stream"])
        data["usage_estimated"] = bool(data["usage_estimated"])
        data["request"] = json.loads(data["request"])
        data["attempts"] = json.loads(data["attempts"])
        data["guardrails"] = json.loads(data["guardrails"])
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
        sql = "SELECT * FROM traces"
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
        sql += " ORDER BY started_at DESC, rowid DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            return [self._row(r) for r in self._db.execute(sql, args)]

    def get(self, trace_id: str) -> TraceRow | None:
        """A call by id, or by a unique prefix of its id."""
        self.flush()
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM traces WHERE id LIKE ? ESCAPE '\\' ORDER BY started_at DESC LIMIT 2",
                (trace_id.replace("\\", "").replace("%", r"\%").replace("_", r"\_") + "%",),
            ).fetchall()
        if len(rows) != 1:
            exact = [r for r in rows if r["id"] == trace_id]
            return self._row(exact[0]) if exact else None
        return self._row(rows[0])

    def count(self) -> int:
        self.flush()
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM traces").fetchone()[0])

    def usage(self, days: int | None = None) -> list[UsageRow]:
        """Totals by day (UTC) and model, newest day first."""
        self.flush()
        sql = """
            SELECT date(started_at, 'unixepoch') AS day,
                   coalesce(model, requested_model) AS model,
                   count(*) AS calls,
                   sum(input_tokens) AS input_tokens,
                   sum(output_tokens) AS output_tokens,
                   coalesce(sum(cost_usd), 0) AS cost_usd,
                   sum(status = 'error') AS errors
            FROM traces
        """
        args: list[Any] = []
        if days is not None:
            sql += " WHERE started_at >= strftime('%s', 'now', ?)"
            args.append(f"-{int(days)} days")
        sql += " GROUP BY day, model ORDER BY day DESC, model"
        with self._lock:
            return [UsageRow(**dict(r)) for r in self._db.execute(sql, args)]

    # -- prompt versions ----------------------------------------------------

    def prompt_names(self) -> list[str]:
        with self._lock:
            return [
                r[0]
                for r in self._db.execute("SELECT DISTINCT name FROM prompt_versions ORDER BY name")
            ]

    def prompt_versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of a prompt, oldest first."""
        with self._lock:
            return [
                dict(r)
                for r in self._db.execute(
                    "SELECT * FROM prompt_versions WHERE name = ? ORDER BY version", (name,)
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
        with self._tx() as db:
            row = db.execute(
                "SELECT version FROM prompt_versions WHERE name = ? AND hash = ?",
                (name, content_hash),
            ).fetchone()
            if row is not None:
                return int(row[0]), False
            latest = db.execute(
                "SELECT coalesce(max(version), 0) FROM prompt_versions WHERE name = ?", (name,)
            ).fetchone()[0]
            version = int(latest) + 1
            db.execute(
                "INSERT INTO prompt_versions (name, version, hash, content, source, path, "
                "created_at, author, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, version, content_hash, content, source, path, created_at, author, note),
            )
            return version, True

    def prompt_labels(self, name: str) -> dict[str, int]:
        with self._lock:
            return {
                r["label"]: int(r["version"])
                for r in self._db.execute(
                    "SELECT label, version FROM prompt_labels WHERE name = ? ORDER BY label",
                    (name,),
                )
            }

    def move_prompt_label(
        self, name: str, label: str, version: int, moved_at: float, kind: str = "promote"
    ) -> int | None:
        """Point ``label`` at ``version``; returns the version it pointed at before."""
        with self._tx() as db:
            row = db.execute(
                "SELECT version FROM prompt_labels WHERE name = ? AND label = ?", (name, label)
            ).fetchone()
            previous = int(row[0]) if row is not None else None
            db.execute(
                "INSERT INTO prompt_labels (name, label, version, moved_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name, label) DO UPDATE SET version = excluded.version, "
                "moved_at = excluded.moved_at",
                (name, label, version, moved_at),
            )
            db.execute(
                "INSERT INTO prompt_label_moves (name, label, version, previous, moved_at, kind) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, label, version, previous, moved_at, kind),
            )
            return previous

    def prompt_label_moves(self, name: str, label: str) -> list[dict[str, Any]]:
        """How a label moved, newest first."""
        with self._lock:
            return [
                dict(r)
                for r in self._db.execute(
                    "SELECT * FROM prompt_label_moves WHERE name = ? AND label = ? "
                    "ORDER BY moved_at DESC, rowid DESC",
                    (name, label),
                )
            ]

    def children(self, parent_id: str) -> list[TraceRow]:
        """The calls made under one trace (a chain's steps), in order."""
        self.flush()
        with self._lock:
            return [
                self._row(r)
                for r in self._db.execute(
                    "SELECT * FROM traces WHERE parent_id = ? ORDER BY started_at, rowid",
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
        with self._tx() as db:
            db.execute(
                "INSERT INTO eval_runs (id, suite, suite_hash, suite_json, created_at, status, "
                "total) VALUES (?, ?, ?, ?, ?, 'running', ?)",
                (run_id, suite, suite_hash, suite_json, created_at, total),
            )

    def set_eval_run_status(self, run_id: str, status: str, finished_at: float | None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE eval_runs SET status = ?, finished_at = ? WHERE id = ?",
                (status, finished_at, run_id),
            )

    def eval_runs(self, limit: int = 20, suite: str | None = None) -> list[dict[str, Any]]:
        """Runs, newest first, with how many results each holds."""
        where, args = ("WHERE r.suite = ?", [suite]) if suite else ("", [])
        with self._lock:
            return [
                dict(r)
                for r in self._db.execute(
                    "SELECT r.id, r.suite, r.suite_hash, r.created_at, r.finished_at, r.status, "
                    "r.total, (SELECT count(*) FROM eval_results e WHERE e.run_id = r.id) AS done "
                    f"FROM eval_runs r {where} ORDER BY r.created_at DESC, r.rowid DESC LIMIT ?",
                    (*args, limit),
                )
            ]

    def eval_run(self, run_id: str) -> dict[str, Any] | None:
        """A run by id or unique id prefix (``None`` when none matches)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM eval_runs WHERE id = ? OR id LIKE ? ORDER BY id = ? DESC LIMIT 2",
                (run_id, run_id.replace("%", "").replace("_", "") + "%", run_id),
            ).fetchall()
        if not rows:
            return None
        if len(rows) > 1 and rows[0]["id"] != run_id:
            raise UserError(f"{run_id!r} matches more than one run; give more of the id.")
        return dict(rows[0])

    def add_eval_result(
        self, run_id: str, prompt: str, model: str, case_id: str, repeat: int, data: str
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO eval_results (run_id, prompt, model, case_id, repeat, "
                "data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, prompt, model, case_id, repeat, data, time.time()),
            )

    def eval_results(self, run_id: str) -> list[dict[str, Any]]:
        """A run's result rows in the order they were stored (``data`` still JSON text)."""
        with self._lock:
            return [
                dict(r)
                for r in self._db.execute(
                    "SELECT * FROM eval_results WHERE run_id = ? ORDER BY created_at, rowid",
                    (run_id,),
                )
            ]

    def cache_get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM eval_cache WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def cache_put(self, key: str, data: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO eval_cache (key, data, created_at) VALUES (?, ?, ?)",
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
        with self._tx() as db:
            db.execute(
                "INSERT INTO api_keys (id, name, hash, prefix, scopes, limits, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key_id, name, key_hash, prefix, scopes, limits, created_at),
            )
        self.keys_generation += 1

    def api_keys(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        with self._lock:
            return [
                dict(r)
                for r in self._db.execute(f"SELECT * FROM api_keys {where} ORDER BY created_at")
            ]

    def api_key_by_hash(self, key_hash: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM api_keys WHERE hash = ? AND revoked_at IS NULL", (key_hash,)
            ).fetchone()
        return None if row is None else dict(row)

    def revoke_api_key(self, name: str, revoked_at: float) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (revoked_at, name),
            )
            revoked = cur.rowcount > 0
        self.keys_generation += 1
        return revoked

    def key_usage(self, key_id: str, since: float) -> tuple[int, float, int]:
        """(tokens, cost in USD, calls) recorded for an API key since a time."""
        self.flush()
        with self._lock:
            row = self._db.execute(
                "SELECT coalesce(sum(input_tokens + output_tokens), 0), "
                "coalesce(sum(cost_usd), 0), count(*) FROM traces "
                "WHERE api_key = ? AND started_at >= ?",
                (key_id, since),
            ).fetchone()
        return int(row[0]), float(row[1]), int(row[2])

    # -- feedback and monitoring ----------------------------------------------

    def set_feedback(self, trace_id: str, rating: str, comment: str) -> None:
        """Store (or replace) the feedback on a call."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO feedback (trace_id, rating, comment, created_at) "
                "VALUES (?, ?, ?, ?)",
                (trace_id, rating, comment, time.time()),
            )

    def feedback(self, trace_ids: list[str]) -> dict[str, dict[str, Any]]:
        self.flush()
        if not trace_ids:
            return {}
        marks = ",".join("?" * len(trace_ids))
        with self._lock:
            return {
                r["trace_id"]: {"rating": r["rating"], "comment": r["comment"]}
                for r in self._db.execute(
                    f"SELECT * FROM feedback WHERE trace_id IN ({marks})", trace_ids
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
        sql += " ORDER BY started_at"
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args)]

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
        sql += " ORDER BY scored_at, trace_id"
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args)]

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
        with self._lock:
            return [float(r[0]) for r in self._db.execute(sql, args)]

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
        except sqlite3.IntegrityError:  # another writer opened it first
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
            db.execute(
                "UPDATE alerts SET closed_at = ?, closed_value = ? WHERE id = ?",
                (closed_at, value, row["id"]),
            )
        return {**dict(row), "closed_at": closed_at, "closed_value": value}

    def alerts(self, *, open_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        """Alerts, newest first; ``open_only`` for those not closed yet."""
        where = " WHERE closed_at IS NULL" if open_only else ""
        with self._lock:
            return [
                dict(r)
                for r in self._db.execute(
                    f"SELECT * FROM alerts{where} ORDER BY opened_at DESC, id LIMIT ?", (limit,)
                )
            ]
