"""Knowledge bases on PostgreSQL with pgvector, behind the same store interface as SQLite.

One database holds any number of knowledge bases: each is a schema
(``outcrop_kb_<name>``) listed in the catalog table ``outcrop_kb.catalog``. A schema
holds ``meta``, ``documents``, ``chunks`` (``embedding vector(D)`` with an HNSW index
for cosine distance; ``fts``, an english ``tsvector`` of the chunk with its title and
headings), and what BM25 reads: ``postings`` (lexeme, chunk, term frequency, chunk
length; a B-tree on the lexeme) and ``stats`` (chunk count and total length).

Search runs in PostgreSQL: dense search is ``ORDER BY embedding <=> $1 LIMIT k`` on the
HNSW index (``hnsw.ef_search`` raised for recall; exact when filtered, so no filtered
result is missed), BM25 is the Okapi formula SQLite's FTS5 uses (k1 = 1.2, b = 0.75)
over the postings of the query's lexemes, and filters are WHERE clauses. (A GIN index
over the tsvector finds the chunks but not how often each word occurs in them, so
scoring them meant unpacking every candidate's tsvector: ten times slower and more.)

Writes are one transaction per batch under a per-knowledge-base advisory lock, as in
SQLite: a process killed mid-``add`` leaves every document fully indexed or absent.
Connections come from a small pool per database URL per process; a connection lost
mid-query is retried once on a new connection, and a database that cannot be reached
fails that call with one line that names the URL (without its password) and the fix.
"""

from __future__ import annotations

import atexit
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.adapt import Buffer, Dumper, Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import Format, TransactionStatus
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb

from ..errors import InvalidRequestError, UserError
from ..observe.engines import StoreUnavailableError
from .store import ChunkRow, DocumentItem, DocumentRow, NewChunk, check_filters

__all__ = ["PgKBStore", "close_pools", "display_url"]

T = TypeVar("T")
Connection = psycopg.Connection[Any]

CATALOG_SCHEMA = "outcrop_kb"
SCHEMA_PREFIX = "outcrop_kb_"
SCHEMA_VERSION = "1"
MIN_PGVECTOR = (0, 5, 0)  # HNSW indexes arrived in pgvector 0.5
HNSW_MAX_DIMENSIONS = 2000  # pgvector indexes vector columns up to 2,000 dimensions
CONNECT_TIMEOUT_S = 5
_LOCK_CLASS = 0x6F6B62  # advisory-lock namespace of outcrop's knowledge bases ("okb")
K1, B = 1.2, 0.75  # Okapi BM25, as SQLite FTS5's bm25()
_QUOTED = re.compile(r'"([^"]+)"')
_URL_HELP = (
    "start the server or fix the URL (OUTCROP_DATABASE_URL, [storage] database_url in "
    "outcrop.toml, or --url)"
)


# -- URLs -----------------------------------------------------------------------


def display_url(url: str) -> str:
    """A connection URL as people may see it: everything but the password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unreadable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "")
    port = f":{parts['port']}" if parts.get("port") else ""
    dbname = str(parts.get("dbname") or "")
    if host.startswith("/"):
        return f"postgresql://{user}/{dbname}?host={host}"
    return f"postgresql://{user}{host}{port}/{dbname}"


def is_postgres_url(url: str) -> bool:
    return url.partition("://")[0].lower() in ("postgresql", "postgres")


def check_url(url: str) -> None:
    """Refuse what is not a PostgreSQL URL, before anything connects."""
    if is_postgres_url(url):
        try:
            conninfo_to_dict(url)
            return
        except psycopg.ProgrammingError:
            pass
    shown = url.rpartition("@")[2] if "@" in url else url  # never echo a password
    raise InvalidRequestError(
        f"{shown!r} is not a PostgreSQL URL; use one like "
        "postgresql://user:password@host:5432/dbname",
        field="url",
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or exc.__class__.__name__


def _unreachable(url: str, exc: BaseException) -> UserError:
    return UserError(
        f"Cannot reach the PostgreSQL database {display_url(url)} ({_one_line(exc)}); " + _URL_HELP
    )


# -- pgvector values ------------------------------------------------------------


class _Vector:
    """A float32 vector on its way to a pgvector ``vector`` parameter."""

    __slots__ = ("array",)

    def __init__(self, array: npt.NDArray[np.float32]):
        self.array = np.ascontiguousarray(array, dtype=np.float32)


class _VectorDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Any) -> Buffer:
        array: npt.NDArray[np.float32] = obj.array
        return struct.pack(">HH", array.shape[0], 0) + array.astype(">f4").tobytes()


class _VectorBinaryLoader(Loader):
    format = Format.BINARY

    def load(self, data: Buffer) -> npt.NDArray[np.float32]:
        return np.frombuffer(bytes(data)[4:], dtype=">f4").astype(np.float32)


class _VectorTextLoader(Loader):
    format = Format.TEXT

    def load(self, data: Buffer) -> npt.NDArray[np.float32]:
        text = bytes(data).decode()
        return np.array(text.strip("[]").split(","), dtype=np.float32)


def _pgvector_version(conn: Connection) -> tuple[int, ...] | None:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is None:
        return None
    return tuple(int(p) for p in re.findall(r"\d+", str(row[0]))[:3])


def _prepare(conn: Connection, url: str) -> None:
    """Make sure the database has pgvector (creating the extension when allowed) and teach
    the connection to send and read vectors as numpy arrays."""
    version = _pgvector_version(conn)
    if version is None:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.UniqueViolation:
            pass  # another connection created it at the same moment
        except psycopg.Error as exc:
            raise UserError(
                f"The PostgreSQL database {display_url(url)} has no pgvector extension "
                f"({_one_line(exc)}); install pgvector 0.5 or later on the server (the "
                "postgresql-NN-pgvector package, or https://github.com/pgvector/pgvector) "
                "and run `CREATE EXTENSION vector;` in that database as a superuser"
            ) from None
        version = _pgvector_version(conn) or (0,)
    if version < MIN_PGVECTOR:
        shown = ".".join(str(p) for p in version)
        raise UserError(
            f"pgvector {shown} on {display_url(url)} is too old: knowledge bases need 0.5 or "
            "later (HNSW indexes); upgrade it and run `ALTER EXTENSION vector UPDATE;`"
        )
    # The vector type and its operators must resolve whatever the URL's search_path is.
    row = conn.execute(
        "SELECT n.nspname, n.nspname = ANY(current_schemas(false)) FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
    ).fetchone()
    if row is not None and not row[1]:
        conn.execute(
            "SELECT set_config('search_path', current_setting('search_path') || ', ' || "
            "quote_ident(%s), false)",
            (row[0],),
        )
    info = TypeInfo.fetch(conn, "vector")
    if info is None:  # pragma: no cover - the extension was just found
        raise UserError(f"pgvector's vector type is not visible on {display_url(url)}")
    dumper = type("VectorDumper", (_VectorDumper,), {"oid": info.oid})
    conn.adapters.register_dumper(_Vector, dumper)
    conn.adapters.register_loader(info.oid, _VectorBinaryLoader)
    conn.adapters.register_loader(info.oid, _VectorTextLoader)


# -- connections ----------------------------------------------------------------


class _Pool:
    """Connections to one database, reused between calls (thread-safe)."""

    max_idle = 8

    def __init__(self, url: str):
        self.url = url
        self._idle: list[Connection] = []
        self._lock = threading.Lock()

    def _connect(self) -> Connection:
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.OperationalError as exc:
            raise _unreachable(self.url, exc) from None
        except psycopg.ProgrammingError as exc:
            raise InvalidRequestError(
                f"Cannot use the database URL {display_url(self.url)}: {_one_line(exc)}",
                field="url",
            ) from None
        try:
            _prepare(conn, self.url)
        except BaseException:
            conn.close()
            raise
        return conn

    def get(self) -> Connection:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        return conn if conn is not None else self._connect()

    def put(self, conn: Connection) -> None:
        usable = not conn.closed and not conn.broken
        if usable and conn.info.transaction_status != TransactionStatus.IDLE:
            usable = False
        with self._lock:
            if usable and len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def discard_idle(self) -> None:
        """Close the idle connections: after one was lost, the others likely were too."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


_pools: dict[str, _Pool] = {}
_pools_lock = threading.Lock()


def _pool(url: str) -> _Pool:
    with _pools_lock:
        pool = _pools.get(url)
        if pool is None:
            pool = _pools[url] = _Pool(url)
        return pool


def close_pools() -> None:
    """Close every pooled connection of this process (at exit, and between tests)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.discard_idle()


atexit.register(close_pools)


def _run(url: str, work: Callable[[Connection], T]) -> T:
    """Run ``work`` on a pooled connection; a connection lost on the way (server restart,
    failover, a dropped network) is replaced and ``work`` run once more. When that fails
    too, only this call fails (:class:`StoreUnavailableError`); the next one tries again."""
    pool = _pool(url)
    lost: psycopg.OperationalError | None = None
    for _attempt in (1, 2):
        try:
            conn = pool.get()
        except UserError as exc:
            if lost is None:
                raise  # unreachable from the start: one clear line
            raise _unavailable(url, exc.__context__ or exc) from None
        try:
            result = work(conn)
        except psycopg.OperationalError as exc:
            broken = conn.closed or conn.broken
            pool.put(conn)
            if not broken:
                raise
            if lost is not None:
                raise _unavailable(url, exc) from None
            lost = exc
            pool.discard_idle()  # the others likely went with it
            continue
        except BaseException:
            pool.put(conn)
            raise
        pool.put(conn)
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def _unavailable(url: str, exc: BaseException) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"Lost the connection to the PostgreSQL database {display_url(url)} and could not get "
        f"it back ({_one_line(exc)}); only this call failed: check that the server is up, "
        "then try again"
    )


# -- the catalog ------------------------------------------------------------------


def _catalog_exists(conn: Connection) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (f"{CATALOG_SCHEMA}.catalog",)).fetchone()
    return row is not None and row[0] is not None


def _schema_for(conn: Connection, name: str) -> str | None:
    if not _catalog_exists(conn):
        return None
    row = conn.execute(
        f"SELECT schema_name FROM {CATALOG_SCHEMA}.catalog WHERE name = %s", (name,)
    ).fetchone()
    return str(row[0]) if row else None


def _new_schema_name(conn: Connection, name: str) -> str:
    """``outcrop_kb_`` and the name ('-' as '_'), made unique; never longer than 63 bytes."""
    base = SCHEMA_PREFIX + name.replace("-", "_")[: 63 - len(SCHEMA_PREFIX) - 4]
    candidate, n = base, 1
    while (
        conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (candidate,)).fetchone()
        is not None
    ):
        n += 1
        candidate = f"{base}_{n}"
    return candidate


def _ddl(schema: str) -> list[sql.Composed]:
    s = sql.Identifier(schema)
    return [
        sql.SQL("CREATE SCHEMA {}").format(s),
        sql.SQL("CREATE TABLE {}.meta (key text PRIMARY KEY, value text NOT NULL)").format(s),
        sql.SQL(
            """CREATE TABLE {}.documents (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                origin text NOT NULL,
                source text NOT NULL,
                hash text NOT NULL,
                title text,
                metadata jsonb NOT NULL DEFAULT '{{}}',
                text text NOT NULL,
                chunks integer NOT NULL DEFAULT 0,
                added_at double precision NOT NULL,
                UNIQUE (origin, source)
            )"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE {0}.chunks (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                document_id bigint NOT NULL REFERENCES {0}.documents(id) ON DELETE CASCADE,
                idx integer NOT NULL,
                text text NOT NULL,
                start integer NOT NULL,
                "end" integer NOT NULL,
                heading_path jsonb NOT NULL DEFAULT '[]',
                tokens integer NOT NULL,
                embedding vector NOT NULL,
                fts tsvector NOT NULL,
                fts_len integer NOT NULL
            )"""
        ).format(s),
        sql.SQL("CREATE INDEX chunks_document ON {}.chunks (document_id)").format(s),
        sql.SQL(
            "CREATE TABLE {}.postings (term text NOT NULL, chunk_id bigint NOT NULL, "
            "tf integer NOT NULL, len integer NOT NULL, PRIMARY KEY (term, chunk_id) "
            "INCLUDE (tf, len))"
        ).format(s),
        sql.SQL(
            "CREATE TABLE {}.stats (one boolean PRIMARY KEY DEFAULT true CHECK (one), "
            "chunks bigint NOT NULL DEFAULT 0, length bigint NOT NULL DEFAULT 0)"
        ).format(s),
        sql.SQL("INSERT INTO {}.stats DEFAULT VALUES").format(s),
    ]


# -- filters ----------------------------------------------------------------------


def _glob_regex(glob: str) -> str:
    """SQLite's GLOB (``*``, ``?``, ``[...]``, ``[^...]``; case-sensitive) as a POSIX regex."""
    out = ["^"]
    i = 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i + 1
            negate = j < len(glob) and glob[j] == "^"
            if negate:
                j += 1
            if j < len(glob) and glob[j] == "]":
                j += 1
            end = glob.find("]", j)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = glob[i + 1 + negate : end].replace("\\", "\\\\")
                out.append("[" + ("^" if negate else "") + body + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out) + "$"


def _where(filters: Mapping[str, str] | None) -> tuple[str, list[Any]]:
    """Filters as a WHERE fragment over ``documents d`` (the same meaning as on SQLite)."""
    if not filters:
        return "", []
    check_filters(filters)
    clauses, args = [], []
    for key, value in filters.items():
        if key == "source":
            clauses.append("d.source ~ %s")
            args.append(_glob_regex(value))
        elif key == "title":
            clauses.append("d.title = %s")
            args.append(value)
        else:
            # SQLite's CAST(json_extract(...) AS TEXT): numbers as written, true as 1.
            clauses.append(
                "(CASE WHEN jsonb_typeof(d.metadata -> %s) = 'boolean' "
                "THEN ((d.metadata -> %s)::boolean)::int::text ELSE d.metadata ->> %s END) = %s"
            )
            args += [key, key, key, value]
    return " AND ".join(clauses), args


# -- the store ----------------------------------------------------------------------


class PgKBStore:
    """The storage of one knowledge base in PostgreSQL; safe to share between threads."""

    engine = "postgres"
    searches_vectors = True
    ef_search = 200  # HNSW candidates per query (raised to the number of results asked)

    def __init__(self, url: str, name: str, schema: str):
        self.url = url
        self.name = name
        self.schema = schema
        self._s = f'"{schema}"'  # generated by _new_schema_name: [a-z0-9_] only

    # -- lifecycle ------------------------------------------------------------

    @classmethod
    def names(cls, url: str) -> list[str]:
        def work(conn: Connection) -> list[str]:
            if not _catalog_exists(conn):
                return []
            rows = conn.execute(f"SELECT name FROM {CATALOG_SCHEMA}.catalog").fetchall()
            return sorted(str(r[0]) for r in rows)

        check_url(url)
        return _run(url, work)

    @classmethod
    def open(cls, url: str, name: str) -> PgKBStore | None:
        """The knowledge base ``name`` in that database, or None when it holds none."""
        check_url(url)
        schema = _run(url, lambda conn: _schema_for(conn, name))
        return cls(url, name, schema) if schema is not None else None

    @classmethod
    def create(cls, url: str, name: str, meta: Mapping[str, str]) -> PgKBStore:
        """Create the schema, its tables and meta, and list it in the catalog: all or nothing."""
        check_url(url)

        def work(conn: Connection) -> str:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_CLASS,))
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(CATALOG_SCHEMA))
                )
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {CATALOG_SCHEMA}.catalog (name text PRIMARY "
                    "KEY, schema_name text NOT NULL UNIQUE, created_at timestamptz NOT NULL "
                    "DEFAULT now())"
                )
                if _schema_for(conn, name) is not None:
                    raise UserError(
                        f"Knowledge base {name!r} already exists in {display_url(url)}; add to "
                        "it, or remove it first."
                    )
                schema = _new_schema_name(conn, name)
                for statement in _ddl(schema):
                    conn.execute(statement)
                values = {
                    "schema": SCHEMA_VERSION,
                    "generation": "0",
                    "engine": "postgres",
                    **meta,
                }
                with conn.cursor() as cur:
                    cur.executemany(
                        sql.SQL("INSERT INTO {}.meta (key, value) VALUES (%s, %s)").format(
                            sql.Identifier(schema)
                        ),
                        list(values.items()),
                    )
                conn.execute(
                    f"INSERT INTO {CATALOG_SCHEMA}.catalog (name, schema_name) VALUES (%s, %s)",
                    (name, schema),
                )
                return schema

        try:
            schema = _run(url, work)
        except psycopg.errors.UniqueViolation:
            # Several first creates in a new database race to make the catalog's schema
            # (CREATE ... IF NOT EXISTS is not safe under concurrency): it exists now, so once
            # more; a name taken meanwhile is then the clear "already exists".
            schema = _run(url, work)
        return cls(url, name, schema)

    @classmethod
    def drop(cls, url: str, name: str) -> bool:
        """Remove a knowledge base and everything in it; False when there was none."""
        check_url(url)

        def work(conn: Connection) -> bool:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_CLASS,))
                schema = _schema_for(conn, name)
                if schema is None:
                    return False
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
                conn.execute(f"DELETE FROM {CATALOG_SCHEMA}.catalog WHERE name = %s", (name,))
                return True

        return _run(url, work)

    @property
    def location(self) -> str:
        return f"{display_url(self.url)} (schema {self.schema})"

    def close(self) -> None:
        """Nothing to do: connections go back to the process's pool after every call."""

    def _run(self, work: Callable[[Connection], T]) -> T:
        return _run(self.url, work)

    @contextmanager
    def _writing(self, conn: Connection) -> Iterator[None]:
        """A transaction that holds this knowledge base's write lock (one writer at a time,
        as SQLite's BEGIN IMMEDIATE)."""
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, self.schema)
            )
            yield

    # -- meta ---------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        rows = self._run(lambda c: c.execute(f"SELECT key, value FROM {self._s}.meta").fetchall())
        return {str(k): str(v) for k, v in rows}

    def set_meta(self, **values: str) -> None:
        def work(conn: Connection) -> None:
            with self._writing(conn), conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {self._s}.meta (key, value) VALUES (%s, %s) ON CONFLICT (key) "
                    "DO UPDATE SET value = excluded.value",
                    list(values.items()),
                )

        self._run(work)

    def generation(self) -> int:
        row = self._run(
            lambda c: c.execute(
                f"SELECT value FROM {self._s}.meta WHERE key = 'generation'"
            ).fetchone()
        )
        return int(row[0]) if row else 0

    def _bump(self, conn: Connection) -> None:
        conn.execute(
            f"UPDATE {self._s}.meta SET value = (value::bigint + 1)::text WHERE key = 'generation'"
        )

    # -- documents ----------------------------------------------------------

    def documents(self, origin: str | None = None) -> list[DocumentRow]:
        query = (
            f"SELECT id, origin, source, hash, title, metadata, chunks, added_at "
            f"FROM {self._s}.documents"
        )
        args: tuple[Any, ...] = ()
        if origin is not None:
            query += " WHERE origin = %s"
            args = (origin,)
        query += ' ORDER BY origin COLLATE "C", source COLLATE "C"'
        rows = self._run(lambda c: c.execute(query, args).fetchall())
        return [
            DocumentRow(
                id=int(r[0]),
                origin=r[1],
                source=r[2],
                hash=r[3],
                title=r[4],
                metadata=dict(r[5]),
                chunks=int(r[6]),
                added_at=float(r[7]),
            )
            for r in rows
        ]

    def document_text(self, document_id: int) -> str:
        row = self._run(
            lambda c: c.execute(
                f"SELECT text FROM {self._s}.documents WHERE id = %s", (document_id,)
            ).fetchone()
        )
        return str(row[0]) if row else ""

    def read_documents(
        self, document_ids: Sequence[int]
    ) -> tuple[list[DocumentItem], npt.NDArray[np.float32]]:
        ids = [int(i) for i in document_ids]

        def work(conn: Connection) -> tuple[list[Any], list[Any]]:
            with conn.transaction():  # one snapshot for documents and chunks
                docs = conn.execute(
                    f"SELECT id, origin, source, hash, title, metadata, text "
                    f"FROM {self._s}.documents WHERE id = ANY(%s)",
                    (ids,),
                ).fetchall()
                with conn.cursor(binary=True) as cur:
                    chunks = cur.execute(
                        f'SELECT document_id, idx, text, start, "end", heading_path, tokens, '
                        f"embedding FROM {self._s}.chunks WHERE document_id = ANY(%s) "
                        "ORDER BY document_id, id",
                        (ids,),
                    ).fetchall()
            return docs, chunks

        docs, chunks = self._run(work)
        by_document: dict[int, list[Any]] = {}
        for r in chunks:
            by_document.setdefault(int(r[0]), []).append(r)
        found = {int(d[0]): d for d in docs}
        items: list[DocumentItem] = []
        vectors: list[npt.NDArray[np.float32]] = []
        for document_id in ids:
            d = found.get(document_id)
            if d is None:
                continue
            rows = by_document.get(document_id, [])
            items.append(
                (
                    d[1],
                    d[2],
                    d[3],
                    d[4],
                    dict(d[5]),
                    d[6],
                    [NewChunk(r[1], r[2], r[3], r[4], list(r[5]), r[6]) for r in rows],
                )
            )
            vectors += [r[7] for r in rows]
        if not vectors:
            return items, np.zeros((0, 0), dtype=np.float32)
        return items, np.stack(vectors).astype(np.float32)

    def _ensure_dimensions(self, conn: Connection, dimensions: int) -> None:
        """Type the vector column and build the HNSW index on the first write, when the
        embedder's dimensions are known; later writes must match them."""
        row = conn.execute(f"SELECT value FROM {self._s}.meta WHERE key = 'dimensions'").fetchone()
        if row is not None:
            if int(row[0]) != dimensions:
                raise UserError(
                    f"Vectors of {dimensions} dimensions cannot go into knowledge base "
                    f"{self.name!r}, which holds {row[0]}-dimension vectors: vectors of two "
                    "embedders never mix; create a new knowledge base for this embedder"
                )
            return
        conn.execute(
            f"ALTER TABLE {self._s}.chunks ALTER COLUMN embedding TYPE vector({int(dimensions)})"
        )
        if dimensions <= HNSW_MAX_DIMENSIONS:
            conn.execute(
                f"CREATE INDEX chunks_embedding ON {self._s}.chunks "
                "USING hnsw (embedding vector_cosine_ops)"
            )
        conn.execute(
            f"INSERT INTO {self._s}.meta (key, value) VALUES ('dimensions', %s)",
            (str(dimensions),),
        )

    def _delete(self, conn: Connection, keys: Sequence[tuple[str, str]]) -> int:
        if not keys:
            return 0
        origins = [k[0] for k in keys]
        sources = [k[1] for k in keys]
        rows = conn.execute(
            f"SELECT d.id FROM {self._s}.documents d JOIN unnest(%s::text[], %s::text[]) "
            "AS k(origin, source) ON d.origin = k.origin AND d.source = k.source",
            (origins, sources),
        ).fetchall()
        ids = [int(r[0]) for r in rows]
        if not ids:
            return 0
        # Take the deleted chunks out of BM25's postings and statistics first.
        conn.execute(
            f"DELETE FROM {self._s}.postings p USING (SELECT c.id, u.lexeme "
            f"FROM {self._s}.chunks c, unnest(c.fts) u WHERE c.document_id = ANY(%s)) d "
            "WHERE p.term = d.lexeme AND p.chunk_id = d.id",
            (ids,),
        )
        conn.execute(
            f"UPDATE {self._s}.stats SET chunks = chunks - s.n, length = length - s.total "
            f"FROM (SELECT count(*) AS n, coalesce(sum(fts_len), 0) AS total "
            f"FROM {self._s}.chunks WHERE document_id = ANY(%s)) s",
            (ids,),
        )
        conn.execute(f"DELETE FROM {self._s}.documents WHERE id = ANY(%s)", (ids,))
        return len(ids)

    def replace_documents(
        self, items: Sequence[DocumentItem], vectors: npt.NDArray[np.float32]
    ) -> None:
        """Write documents with their chunks and vectors, replacing earlier versions, in one
        transaction."""
        from .store import _fts_text

        def work(conn: Connection) -> None:
            with self._writing(conn):
                if len(vectors):
                    self._ensure_dimensions(conn, int(vectors.shape[1]))
                self._delete(conn, [(i[0], i[1]) for i in items])
                now = time.time()
                with conn.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO {self._s}.documents (origin, source, hash, title, metadata, "
                        "text, chunks, added_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                        "RETURNING id",
                        [
                            (o, s, h, t, Jsonb(m), text, len(chunks), now)
                            for o, s, h, t, m, text, chunks in items
                        ],
                        returning=True,
                    )
                    document_ids = []
                    while True:
                        row = cur.fetchone()
                        if row is not None:
                            document_ids.append(int(row[0]))
                        if not cur.nextset():
                            break
                    rows = []
                    n = 0
                    for document_id, item in zip(document_ids, items, strict=True):
                        title, chunks = item[3], item[6]
                        for chunk in chunks:
                            rows.append(
                                (
                                    document_id,
                                    chunk.index,
                                    chunk.text,
                                    chunk.start,
                                    chunk.end,
                                    Jsonb(list(chunk.heading_path)),
                                    chunk.tokens,
                                    _Vector(vectors[n]),
                                    _fts_text(chunk.text, chunk.heading_path, title),
                                )
                            )
                            n += 1
                    cur.executemany(
                        f'INSERT INTO {self._s}.chunks (document_id, idx, text, start, "end", '
                        "heading_path, tokens, embedding, fts, fts_len) "
                        "SELECT %s, %s, %s, %s, %s, %s, %s, %b, v.fts, "
                        "(SELECT coalesce(sum(cardinality(u.positions)), 0) FROM unnest(v.fts) u) "
                        "FROM (SELECT to_tsvector('english', %s::text) AS fts) v",
                        rows,
                    )
                if document_ids:
                    conn.execute(
                        f"INSERT INTO {self._s}.postings (term, chunk_id, tf, len) "
                        "SELECT u.lexeme, c.id, cardinality(u.positions), c.fts_len "
                        f"FROM {self._s}.chunks c, unnest(c.fts) u WHERE c.document_id = ANY(%s)",
                        (document_ids,),
                    )
                    conn.execute(
                        f"UPDATE {self._s}.stats SET chunks = chunks + s.n, "
                        "length = length + s.total FROM (SELECT count(*) AS n, "
                        f"coalesce(sum(fts_len), 0) AS total FROM {self._s}.chunks "
                        "WHERE document_id = ANY(%s)) s",
                        (document_ids,),
                    )
                self._bump(conn)

        self._run(work)

    def delete_documents(self, keys: Sequence[tuple[str, str]]) -> int:
        """Remove documents by (origin, source); returns how many existed."""

        def work(conn: Connection) -> int:
            with self._writing(conn):
                removed = self._delete(conn, keys)
                if removed:
                    self._bump(conn)
                return removed

        return self._run(work)

    # -- chunks -------------------------------------------------------------

    def counts(self) -> tuple[int, int, int]:
        row = self._run(
            lambda c: c.execute(
                f"SELECT (SELECT count(*) FROM {self._s}.documents), count(*), "
                f"coalesce(sum(tokens), 0) FROM {self._s}.chunks"
            ).fetchone()
        )
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    def vectors(self, dimensions: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        def work(conn: Connection) -> list[Any]:
            with conn.cursor(binary=True) as cur:
                return cur.execute(
                    f"SELECT id, embedding FROM {self._s}.chunks ORDER BY id"
                ).fetchall()

        rows = self._run(work)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if not rows:
            return ids, np.zeros((0, dimensions), dtype=np.float32)
        return ids, np.stack([r[1] for r in rows]).astype(np.float32)

    def nearest(
        self,
        query_vector: npt.NDArray[np.float32],
        limit: int,
        filters: Mapping[str, str] | None = None,
    ) -> list[tuple[int, float]]:
        """Cosine similarity in PostgreSQL: the HNSW index, or an exact scan when filtered
        (an index scan filters after the fact and could return fewer than asked)."""
        where, args = _where(filters)
        vector = _Vector(query_vector)
        query = (
            f"SELECT c.id, 1 - (c.embedding <=> %b) FROM {self._s}.chunks c "
            + (
                f"JOIN {self._s}.documents d ON d.id = c.document_id WHERE {where} "
                if where
                else ""
            )
            + "ORDER BY c.embedding <=> %b LIMIT %s"
        )
        ef = min(max(self.ef_search, limit), 1000)

        def work(conn: Connection) -> list[Any]:
            with conn.transaction():
                if where:
                    conn.execute("SET LOCAL enable_indexscan = off")
                else:
                    conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef)}")
                return conn.execute(query, [vector, *args, vector, limit]).fetchall()

        return [(int(r[0]), float(r[1])) for r in self._run(work)]

    def bm25(
        self,
        match: str,
        limit: int,
        allowed: set[int] | None = None,
        filters: Mapping[str, str] | None = None,
    ) -> list[tuple[int, float]]:
        """Okapi BM25 (k1 = 1.2, b = 0.75, FTS5's idf) over english lexemes, from the
        postings of the query's lexemes: document frequencies are their counts, term
        frequencies and lengths are in them, the chunk count and mean length in ``stats``."""
        words = [w for w in _QUOTED.findall(match) if re.fullmatch(r"\w+", w)]
        if not words:
            return []
        where, args = _where(filters)
        extra = ""
        if where:
            extra += (
                f" AND p.chunk_id IN (SELECT c.id FROM {self._s}.chunks c "
                f"JOIN {self._s}.documents d ON d.id = c.document_id WHERE {where})"
            )
        if allowed is not None:
            extra += " AND p.chunk_id = ANY(%s)"
            args.append(sorted(allowed))
        query = f"""
            WITH st AS (
                SELECT chunks::float8 AS n, greatest(length, 1)::float8 / greatest(chunks, 1)
                    AS avglen FROM {self._s}.stats
            ), p AS (
                SELECT term, chunk_id, tf, len FROM {self._s}.postings
                WHERE term = ANY(tsvector_to_array(to_tsvector('english', %s::text)))
            ), q AS (
                SELECT p.term, greatest(ln(greatest(
                    (st.n - count(*) + 0.5) / (count(*) + 0.5), 1e-9)), 1e-6) AS idf
                FROM p, st GROUP BY p.term, st.n
            )
            SELECT p.chunk_id, sum(q.idf * (p.tf * {K1 + 1}) /
                (p.tf + {K1} * ({1 - B} + {B} * p.len / st.avglen))) AS score
            FROM p JOIN q ON q.term = p.term CROSS JOIN st
            WHERE true{extra}
            GROUP BY p.chunk_id
            ORDER BY score DESC, p.chunk_id
            LIMIT %s
        """
        params = [" ".join(words), *args, limit]
        rows = self._run(lambda c: c.execute(query, params).fetchall())
        return [(int(r[0]), float(r[1])) for r in rows]

    def chunk_ids_matching(self, filters: Mapping[str, str]) -> set[int]:
        where, args = _where(filters)
        query = (
            f"SELECT c.id FROM {self._s}.chunks c "
            f"JOIN {self._s}.documents d ON d.id = c.document_id WHERE {where or 'true'}"
        )
        rows = self._run(lambda c: c.execute(query, args).fetchall())
        return {int(r[0]) for r in rows}

    def chunks(self, ids: Sequence[int]) -> dict[int, ChunkRow]:
        if not ids:
            return {}
        rows = self._run(
            lambda c: c.execute(
                f'SELECT c.id, c.document_id, c.idx, c.text, c.start, c."end", c.heading_path, '
                f"c.tokens, d.source, d.title, d.metadata FROM {self._s}.chunks c "
                f"JOIN {self._s}.documents d ON d.id = c.document_id WHERE c.id = ANY(%s)",
                ([int(i) for i in ids],),
            ).fetchall()
        )
        return {
            int(r[0]): ChunkRow(
                id=int(r[0]),
                document_id=int(r[1]),
                index=r[2],
                text=r[3],
                start=r[4],
                end=r[5],
                heading_path=list(r[6]),
                tokens=r[7],
                source=r[8],
                title=r[9],
                metadata=dict(r[10]),
            )
            for r in rows
        }

    def chunk_vectors(self, ids: Sequence[int], dimensions: int) -> npt.NDArray[np.float32]:
        if not ids:
            return np.zeros((0, dimensions), dtype=np.float32)

        def work(conn: Connection) -> list[Any]:
            with conn.cursor(binary=True) as cur:
                return cur.execute(
                    f"SELECT id, embedding FROM {self._s}.chunks WHERE id = ANY(%s)",
                    ([int(i) for i in ids],),
                ).fetchall()

        found = {int(r[0]): r[1] for r in self._run(work)}
        return np.stack([found[int(i)] for i in ids]).astype(np.float32)
