"""The database engines behind :class:`~outcrop.observe.store.Store`: SQLite and PostgreSQL.

``Store`` is the one interface; an engine is what differs between databases,
and it is kept small:

- connecting (a file, or a psycopg connection pool) and closing;
- a transaction (``with engine.transaction() as tx``), in which
  ``tx.execute``/``tx.executemany`` run SQL written with ``?`` placeholders
  (translated for psycopg) and ``tx.lock(name)`` serialises writers that
  read before they write (SQLite's ``BEGIN IMMEDIATE`` already does; on
  PostgreSQL it is a transaction-scoped advisory lock, so replicas wait for
  each other);
- reads (``engine.all``/``engine.one``), retried once on a fresh connection
  when PostgreSQL dropped the one they got;
- the few bits of dialect the store's SQL needs: the column that orders rows
  by insertion (``rowid`` or ``seq``), a UTC day from epoch seconds, and how
  a JSON value is written.

Choose an engine by URL with :func:`connect`: a path or ``sqlite:///path`` is
SQLite, ``postgresql://…`` is PostgreSQL (needs ``pip install 'outcrop[postgres]'``).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from ..errors import MissingExtraError, StoreError, StoreUnavailableError

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

log = logging.getLogger("outcrop.store")

# Statement parameters: positional for ``?``, a mapping for ``:name``.
Args = Sequence[Any] | Mapping[str, Any]

__all__ = [
    "DATABASE_SCHEMES",
    "Engine",
    "PostgresEngine",
    "Row",
    "SqliteEngine",
    "StoreError",
    "StoreUnavailableError",
    "check_database_url",
    "connect",
    "redact_url",
    "relative_to",
]

DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")
_URL_HELP = "use postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE, sqlite:///PATH or a file path"
# How long to wait for PostgreSQL: to connect, and for a free pooled connection.
CONNECT_TIMEOUT_S = 5
POOL_TIMEOUT_S = 10.0
POOL_MAX_SIZE = 10


class Row(Protocol):
    """A result row: by position (``row[0]``), by name (``row["id"]``), and ``dict(row)``."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


def redact_url(url: str) -> str:
    """The URL with its password (in the netloc or a ``password=`` parameter) hidden."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}{':***' if sep else ''}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def check_database_url(url: str) -> str:
    """``url`` when outcrop can open it; else ``ValueError`` saying what is accepted."""
    url = url.strip()
    if not url:
        raise ValueError(f"the database URL is empty; {_URL_HELP}")
    scheme, sep, rest = url.partition("://")
    if not sep:
        if re.match(r"^\w+\s*=", url):
            raise ValueError(
                "a key=value connection string is not accepted here; write it as a URL, "
                "e.g. postgresql://USER@HOST:5432/DATABASE"
            )
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", url):  # a scheme without '//'
            raise ValueError(f"{redact_url(url)!r} is not a URL or a path; {_URL_HELP}")
        return url  # a file path: SQLite
    scheme = scheme.lower()
    if scheme not in DATABASE_SCHEMES:
        accepted = ", ".join(f"{s}://" for s in DATABASE_SCHEMES)
        raise ValueError(
            f"unknown database scheme {scheme + '://'!r} (accepted: {accepted}); {_URL_HELP}"
        )
    if scheme == "sqlite" and not rest.lstrip("/"):
        raise ValueError(f"sqlite:// needs a file path, e.g. sqlite:///outcrop.db; {_URL_HELP}")
    return url


def connect(target: Path | str) -> Engine:
    """The engine for a path or URL (see :func:`check_database_url`)."""
    if isinstance(target, Path):
        return SqliteEngine(target)
    try:
        url = check_database_url(target)
    except ValueError as exc:
        raise StoreError(f"Cannot open the store: {exc}.") from None
    scheme, sep, rest = url.partition("://")
    if not sep:
        return SqliteEngine(Path(url).expanduser())
    if scheme.lower() == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute/path.db, as SQLAlchemy reads them.
        return SqliteEngine(Path(rest[1:] if rest.startswith("/") else rest).expanduser())
    return PostgresEngine(url)


class Engine:
    """What a database engine provides the store (see the module's docstring)."""

    dialect: ClassVar[str]
    # The column that orders a table's rows by insertion.
    rowid: ClassVar[str]
    # What the engine raises when a row breaks a key or constraint (a duplicate id).
    integrity_errors: tuple[type[Exception], ...] = ()
    # The table that records applied migrations (the same columns on each engine).
    migrations_table: ClassVar[str]

    path: Path | None = None
    url: str = ""  # for people: the password hidden

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        raise NotImplementedError
        yield  # pragma: no cover

    def all(self, sql: str, args: Args = ()) -> list[Row]:
        raise NotImplementedError

    def one(self, sql: str, args: Args = ()) -> Row | None:
        rows = self.all(sql, args)
        return rows[0] if rows else None

    def has_table(self, name: str) -> bool:
        raise NotImplementedError

    def day(self, column: str) -> str:
        """SQL for the UTC day (YYYY-MM-DD) of a column of epoch seconds."""
        raise NotImplementedError

    def json(self, value: Any) -> str:
        """A value for a JSON column."""
        return dumps(value)

    def open_error(self, exc: BaseException) -> BaseException:
        """What to raise when opening the store (migrating) failed with ``exc``."""
        return exc

    def close(self) -> None:
        raise NotImplementedError


class Tx:
    """One transaction: statements with ``?`` placeholders; ``lock`` serialises writers."""

    def execute(self, sql: str, args: Args = ()) -> Cursor:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Sequence[Args]) -> int:
        """Run one statement for each row; returns the rows it changed in all."""
        raise NotImplementedError

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Args], *, conflict: str = ""
    ) -> int:
        """INSERT ``rows`` (one value per column each), with an optional ``ON CONFLICT``
        clause; returns the rows inserted."""
        marks = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) {conflict}"
        return self.executemany(sql, rows)

    def insert_json(
        self,
        table: str,
        columns: Sequence[str],
        rows: bytes,
        *,
        json_columns: Sequence[int] = (),
        conflict: str = "",
    ) -> int:
        """INSERT ``rows``, a JSON array (UTF-8 bytes) of rows that are arrays with one
        element per column: the elements at ``json_columns`` are stored as JSON text, the
        others as SQL values. Returns the rows inserted. This default decodes them for
        :meth:`insert_many`."""
        values = orjson.loads(rows)
        for row in values:
            for i in json_columns:
                row[i] = dumps(row[i])
        return self.insert_many(table, columns, values, conflict=conflict)

    def lock(self, name: str) -> None:
        """Hold a lock named ``name`` until the transaction ends (other writers wait)."""


# -- SQLite ------------------------------------------------------------------


class _SqliteTx(Tx):
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def execute(self, sql: str, args: Args = ()) -> Cursor:
        return self.db.execute(sql, args)

    def executemany(self, sql: str, rows: Sequence[Args]) -> int:
        return self.db.executemany(sql, rows).rowcount

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Args], *, conflict: str = ""
    ) -> int:
        # Many rows per statement. executemany runs one step per row, and each step lets go
        # of the interpreter and takes it back from whichever thread holds it: from a
        # writer thread beside a busy caller that handover cost more than the row itself.
        # Statements of 2^k rows keep to a few shapes, which the statement cache keeps.
        if not rows:
            return 0
        width = len(columns)
        most = max(1, self.db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width)
        size = 1 << min(most.bit_length() - 1, 8)  # 256 rows at most
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        one = "(" + ", ".join("?" * width) + ")"
        done = start = 0
        while start < len(rows):
            while size > len(rows) - start:
                size >>= 1
            chunk = rows[start : start + size]
            args = [value for row in chunk for value in row]
            done += self.db.execute(f"{head}{', '.join([one] * size)} {conflict}", args).rowcount
            start += size
        return done

    def insert_json(
        self,
        table: str,
        columns: Sequence[str],
        rows: bytes,
        *,
        json_columns: Sequence[int] = (),
        conflict: str = "",
    ) -> int:
        # One statement and one parameter for the whole batch: SQLite takes the rows
        # apart (json_each) while the interpreter is free for the callers, instead of this
        # thread binding every value under it. ``->`` gives an element as JSON text (a string
        # quoted, as dumps() writes it), json_extract as an SQL value (true is 1).
        if sqlite3.sqlite_version_info < (3, 38):  # no -> operator: bind the values instead
            return super().insert_json(
                table, columns, rows, json_columns=json_columns, conflict=conflict
            )
        picks = ", ".join(
            f"v -> {i}" if i in json_columns else f"json_extract(v, '$[{i}]')"
            for i in range(len(columns))
        )
        # MATERIALIZED: json_each renders a row's text once, not once per column (and the
        # extractions then share one parse of it): half the work per row of reading
        # json_each's value in every column. The statement starts with INSERT so that the
        # sqlite3 module counts its rows; "WHERE true" tells SQLite's parser that
        # ON CONFLICT belongs to the INSERT.
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"WITH batch(v) AS MATERIALIZED (SELECT value FROM json_each(CAST(? AS TEXT))) "
            f"SELECT {picks} FROM batch WHERE true {conflict}"
        )
        # Bound as bytes and made text by SQLite: no decoding under the interpreter lock.
        return int(self.db.execute(sql, (rows,)).rowcount)

    def lock(self, name: str) -> None:
        pass  # BEGIN IMMEDIATE holds the database's one write lock already


class SqliteEngine(Engine):
    """One file in WAL mode, one connection shared by the threads of this process."""

    dialect = "sqlite"
    rowid = "rowid"
    integrity_errors = (sqlite3.IntegrityError,)
    migrations_table = (
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at "
        "TEXT NOT NULL DEFAULT (datetime('now')))"
    )

    def __init__(self, path: Path):
        self.path = path
        self.url = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"Cannot create the folder for {path} ({exc.strerror or exc}); point "
                "OUTCROP_HOME or OUTCROP_DATABASE_URL at a folder you can write."
            ) from None
        self._lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise self.unusable(exc) from None

    def open_error(self, exc: BaseException) -> BaseException:
        return self.unusable(exc) if isinstance(exc, sqlite3.DatabaseError) else exc

    def unusable(self, exc: sqlite3.DatabaseError) -> StoreError:
        return StoreError(
            f"{self.path} is not a usable outcrop database ({exc}). Move it aside; outcrop "
            "starts a new one on the next call."
        )

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(self.db)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def all(self, sql: str, args: Args = ()) -> list[Row]:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    def has_table(self, name: str) -> bool:
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return self.one(sql, (name,)) is not None

    def day(self, column: str) -> str:
        return f"date({column}, 'unixepoch')"

    def close(self) -> None:
        with self._lock:
            self.db.close()


# -- PostgreSQL ----------------------------------------------------------------


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=1024)
def _pg_sql(sql: str) -> str:
    """SQLite's placeholders as psycopg's: ``?`` as ``%s``, ``:name`` as ``%(name)s`` (outside
    quoted literals), and ``%`` escaped."""
    parts = sql.replace("%", "%%").split("'")
    for i in range(0, len(parts), 2):  # the even parts are outside quotes
        parts[i] = _NAMED.sub(r"%(\1)s", parts[i].replace("?", "%s"))
    return "'".join(parts)


def _pg_value(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL; U+FFFD stands in for it (SQLite keeps it as is).
    return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value


def _pg_args(args: Args) -> Any:
    if isinstance(args, Mapping):
        return {k: _pg_value(v) for k, v in args.items()}
    return tuple(_pg_value(a) for a in args)


# A JSON-escaped NUL (\u0000) not itself escaped: jsonb refuses it.
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


class _PgRow:
    """A row by position or by name, like :class:`sqlite3.Row`."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: Sequence[Any]):
        self._index = index
        self._values = values

    def __getitem__(self, key: int | str, /) -> Any:
        return self._values[self._index[key] if isinstance(key, str) else key]

    def keys(self) -> list[str]:
        return list(self._index)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values, strict=True))!r})"


def _pg_row_factory(cursor: Any) -> Any:
    index = {c.name: i for i, c in enumerate(cursor.description or ())}
    return lambda values: _PgRow(index, values)


class _PgTx(Tx):
    def __init__(self, conn: psycopg.Connection[Any]):
        self.conn = conn

    def execute(self, sql: str, args: Args = ()) -> Cursor:
        return self.conn.execute(_pg_sql(sql), _pg_args(args))

    def executemany(self, sql: str, rows: Sequence[Args]) -> int:
        with self.conn.cursor() as cur:
            cur.executemany(_pg_sql(sql), [_pg_args(r) for r in rows])
            return cur.rowcount

    def lock(self, name: str) -> None:
        # Per schema, so stores in different schemas of one database do not wait on each other.
        self.conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':' || %s))", (name,)
        )


class PostgresEngine(Engine):
    """A psycopg connection pool; any number of processes may share the database."""

    dialect = "postgresql"
    rowid = "seq"
    migrations_table = (
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL "
        "DEFAULT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'))"
    )

    def __init__(self, url: str, *, max_size: int = POOL_MAX_SIZE):
        try:
            import psycopg
            import psycopg_pool
        except ImportError:
            raise MissingExtraError("Storing traces in PostgreSQL", "postgres") from None
        self._psycopg = psycopg
        self.integrity_errors = (psycopg.IntegrityError,)
        self.url = redact_url(url)
        params = {} if "connect_timeout" in url else {"connect_timeout": CONNECT_TIMEOUT_S}
        # One connection first: an unreachable server is one clear error now, not a pool
        # retrying in the background while calls wait.
        try:
            psycopg.connect(url, **params).close()  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise self.unreachable(exc) from None
        self._pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "row_factory": _pg_row_factory, **params},
            open=False,
            timeout=POOL_TIMEOUT_S,
            name="outcrop-store",
        )
        self._pool.open(wait=False)

    def unreachable(self, exc: BaseException) -> StoreError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = first.rsplit(": ", 1)[-1].strip() or first
        return StoreError(
            f"Cannot connect to PostgreSQL at {self.url}: {reason}. Is the server running and "
            "the URL right? Check OUTCROP_DATABASE_URL (or [storage] database_url in "
            "outcrop.toml)."
        )

    def open_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, StoreUnavailableError):
            return StoreError(str(exc))
        if isinstance(exc, self._psycopg.OperationalError):
            return self.unreachable(exc)
        return exc

    def lost(self, exc: BaseException) -> StoreUnavailableError:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return StoreUnavailableError(
            f"PostgreSQL at {self.url} stopped answering ({reason}); this call failed. "
            "Try again; if it persists, check the database server."
        )

    @contextmanager
    def _connection(self, *, begin: bool) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection that answered (a dropped one is replaced, once)."""
        psycopg = self._psycopg
        for attempt in (1, 2):
            try:
                conn = self._pool.getconn()
            except psycopg.OperationalError as exc:  # PoolTimeout included
                raise self.lost(exc) from None
            try:
                if begin:
                    conn.execute("BEGIN")
            except psycopg.OperationalError as exc:
                self._pool.putconn(conn)  # broken: the pool discards it
                if attempt == 2:
                    raise self.lost(exc) from None
                log.info("PostgreSQL connection dropped (%s); retrying on a fresh one", exc)
                self._pool.check()  # drop the idle connections that died with it
                continue
            try:
                yield conn
            finally:
                self._pool.putconn(conn)
            return

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        psycopg = self._psycopg
        with self._connection(begin=True) as conn:
            try:
                yield _PgTx(conn)
            except BaseException as exc:
                if not conn.closed:
                    # When the connection is gone, so is the transaction.
                    with suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, psycopg.OperationalError):
                    raise self.lost(exc) from exc
                raise
            try:
                conn.execute("COMMIT")
            except psycopg.OperationalError as exc:
                raise self.lost(exc) from None

    def all(self, sql: str, args: Args = ()) -> list[Row]:
        psycopg = self._psycopg
        query, params = _pg_sql(sql), _pg_args(args)
        for attempt in (1, 2):
            try:
                with self._connection(begin=False) as conn:
                    rows: list[Row] = conn.execute(query, params).fetchall()
                    return rows
            except psycopg.OperationalError as exc:
                if attempt == 2:
                    raise self.lost(exc) from None
                log.info("PostgreSQL connection dropped (%s); retrying on a fresh one", exc)
                self._pool.check()
        raise AssertionError("unreachable")  # pragma: no cover

    def has_table(self, name: str) -> bool:
        row = self.one("SELECT to_regclass(?) IS NOT NULL", (name,))
        return bool(row and row[0])

    def day(self, column: str) -> str:
        return f"to_char(to_timestamp({column}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"

    def json(self, value: Any) -> str:
        text = dumps(value)
        return _JSON_NUL.sub(r"\1\\ufffd", text) if "\\u0000" in text else text

    def close(self) -> None:
        self._pool.close()


def dumps(value: Any) -> str:
    """Compact JSON text, through orjson (a tenth of the standard library's time; the trace
    writer converts three columns a row while calls hold the interpreter). What orjson
    refuses — an integer past 64 bits, a lone surrogate — gets the standard library's
    answer (or its error). On the orjson path NaN and infinities become null, which both
    engines accept; the standard library's fallback writes them as NaN, which SQLite keeps
    and PostgreSQL refuses (the row is then logged as not written)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def relative_to(url: str, folder: Path) -> str:
    """A SQLite path or ``sqlite:///`` URL made absolute against ``folder`` (where the
    outcrop.toml that names it lives); other URLs unchanged."""
    if "://" not in url:
        path = Path(url).expanduser()
        return str(path if path.is_absolute() else folder / path)
    scheme, _, rest = url.partition("://")
    if scheme.lower() == "sqlite" and rest.startswith("/") and not rest.startswith("//"):
        return f"{scheme}:///{folder / rest[1:]}"
    return url
