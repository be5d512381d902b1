"""The storage of a knowledge base: one interface, one implementation per engine.

:class:`KnowledgeStore` is what :class:`~outcrop.rag.kb.KnowledgeBase` needs from its
storage. :class:`KBStore` keeps one SQLite file per knowledge base (documents, chunks,
FTS5 for BM25, float32 vectors); ``outcrop.rag.pgstore.PgKBStore`` keeps it in
PostgreSQL with pgvector. The same tests run against both.

Writes are transactional, a batch of documents at a time: a process killed in
the middle of ``add`` leaves every document either fully indexed or not at all,
and the next ``add`` picks up where it stopped (content hashes tell what is done).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..errors import InvalidRequestError, UserError

__all__ = [
    "ChunkRow",
    "DocumentItem",
    "DocumentRow",
    "KBStore",
    "KnowledgeStore",
    "NewChunk",
    "check_filters",
    "copy_documents",
]

SCHEMA_VERSION = "1"


@dataclass
class DocumentRow:
    id: int
    origin: str
    source: str
    hash: str
    title: str | None
    metadata: dict[str, Any]
    chunks: int
    added_at: float


@dataclass
class ChunkRow:
    id: int
    document_id: int
    index: int
    text: str
    start: int
    end: int
    heading_path: list[str]
    tokens: int
    source: str
    title: str | None
    metadata: dict[str, Any]


@dataclass
class NewChunk:
    index: int
    text: str
    start: int
    end: int
    heading_path: Sequence[str]
    tokens: int


# (origin, source, hash, title, metadata, text, chunks): one document as it is written.
DocumentItem = tuple[str, str, str, str | None, dict[str, Any], str, list[NewChunk]]

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class KnowledgeStore(Protocol):
    """What a knowledge base needs from its storage, whatever the engine.

    Chunk ids are the store's own; scores are "higher is better". ``searches_vectors``
    says whether :meth:`nearest` runs inside the store's engine (PostgreSQL: pgvector, with
    the filters in the same query); when it is false the knowledge base searches the
    vectors in process (an exact matrix product, or an HNSW index past a threshold).
    """

    engine: str
    searches_vectors: bool

    @property
    def location(self) -> str:
        """Where the knowledge base lives, for people (never a password)."""
        ...

    def close(self) -> None: ...

    def meta(self) -> dict[str, str]: ...

    def set_meta(self, **values: str) -> None: ...

    def generation(self) -> int:
        """A counter that changes whenever the chunks change."""
        ...

    def documents(self, origin: str | None = None) -> list[DocumentRow]: ...

    def document_text(self, document_id: int) -> str: ...

    def read_documents(
        self, document_ids: Sequence[int]
    ) -> tuple[list[DocumentItem], npt.NDArray[np.float32]]:
        """Documents as :meth:`replace_documents` takes them, with their vectors: a copy."""
        ...

    def replace_documents(
        self, items: Sequence[DocumentItem], vectors: npt.NDArray[np.float32]
    ) -> None: ...

    def delete_documents(self, keys: Sequence[tuple[str, str]]) -> int: ...

    def counts(self) -> tuple[int, int, int]: ...

    def vectors(self, dimensions: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...

    def nearest(
        self,
        query_vector: npt.NDArray[np.float32],
        limit: int,
        filters: Mapping[str, str] | None = None,
    ) -> list[tuple[int, float]]:
        """Chunk ids by cosine similarity to ``query_vector`` (exact when filtered)."""
        ...

    def bm25(
        self,
        match: str,
        limit: int,
        allowed: set[int] | None = None,
        filters: Mapping[str, str] | None = None,
    ) -> list[tuple[int, float]]:
        """Chunk ids by BM25 for ``match``: quoted words joined by OR, e.g. '"a" OR "b"'."""
        ...

    def chunk_ids_matching(self, filters: Mapping[str, str]) -> set[int]: ...

    def chunks(self, ids: Sequence[int]) -> dict[int, ChunkRow]: ...

    def chunk_vectors(self, ids: Sequence[int], dimensions: int) -> npt.NDArray[np.float32]: ...


def check_filters(filters: Mapping[str, str]) -> None:
    """Refuse filter keys that are not plain field names (they reach SQL as JSON paths)."""
    for key in filters:
        if key not in ("source", "title") and not _FIELD.match(key):
            raise InvalidRequestError(f"Filter key {key!r} is not a field name", field=key)


def copy_documents(
    source: KnowledgeStore,
    target: KnowledgeStore,
    *,
    progress: Callable[[int, int], None] | None = None,
    batch_chunks: int = 512,
) -> int:
    """Copy every document of ``source`` with its chunks and vectors into ``target`` (nothing
    is re-embedded), a transaction per batch. Documents ``target`` already holds with the
    same content hash are skipped, so a copy that was stopped resumes where it stopped;
    documents ``target`` holds that ``source`` does not are removed. Returns how many
    documents were written."""
    wanted = source.documents()
    have = {(d.origin, d.source): d.hash for d in target.documents()}
    gone = set(have) - {(d.origin, d.source) for d in wanted}
    if gone:
        target.delete_documents(sorted(gone))
    todo = [d for d in wanted if have.get((d.origin, d.source)) != d.hash]
    done = len(wanted) - len(todo)
    if progress is not None:
        progress(done, len(wanted))
    batch: list[int] = []
    size = 0
    for n, document in enumerate(todo, 1):
        batch.append(document.id)
        size += max(document.chunks, 1)
        if size >= batch_chunks or n == len(todo):
            items, vectors = source.read_documents(batch)
            target.replace_documents(items, vectors)
            if progress is not None:
                progress(done + n, len(wanted))
            batch, size = [], 0
    return len(todo)


class KBStore:
    """The storage of one knowledge base in one SQLite file. Safe to share between threads
    of one process."""

    engine = "sqlite"
    searches_vectors = False

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._create()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise UserError(
                f"{path} is not a usable knowledge base ({exc}); move it aside and create the "
                "knowledge base again"
            ) from None

    def _create(self) -> None:
        with self.transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            db.execute(
                """
                CREATE TABLE IF NOT EXISTS documents (
                    id INTEGER PRIMARY KEY,
                    origin TEXT NOT NULL,
                    source TEXT NOT NULL,
                    hash TEXT NOT NULL,
                    title TEXT,
                    metadata TEXT NOT NULL DEFAULT '{}',
                    text TEXT NOT NULL,
                    chunks INTEGER NOT NULL DEFAULT 0,
                    added_at REAL NOT NULL,
                    UNIQUE (origin, source)
                )
                """
            )
            db.execute(
                """
                CREATE TABLE IF NOT EXISTS chunks (
                    id INTEGER PRIMARY KEY,
                    document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
                    idx INTEGER NOT NULL,
                    text TEXT NOT NULL,
                    start INTEGER NOT NULL,
                    end INTEGER NOT NULL,
                    heading_path TEXT NOT NULL DEFAULT '[]',
                    tokens INTEGER NOT NULL,
                    vector BLOB NOT NULL
                )
                """
            )
            db.execute("CREATE INDEX IF NOT EXISTS chunks_document ON chunks(document_id)")
            db.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5("
                "text, tokenize='porter unicode61 remove_diacritics 2')"
            )
            db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?), ('generation', '0')",
                (SCHEMA_VERSION,),
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @property
    def location(self) -> str:
        return str(self.path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- meta ---------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        with self._lock:
            return {r["key"]: r["value"] for r in self._db.execute("SELECT key, value FROM meta")}

    def set_meta(self, **values: str) -> None:
        with self.transaction() as db:
            for key, value in values.items():
                db.execute(
                    "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                    "SET value = excluded.value",
                    (key, value),
                )

    def generation(self) -> int:
        """A counter that changes whenever the chunks change (cached matrices check it)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute(
            "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) "
            "WHERE key = 'generation'"
        )

    # -- documents ----------------------------------------------------------

    def documents(self, origin: str | None = None) -> list[DocumentRow]:
        sql = "SELECT id, origin, source, hash, title, metadata, chunks, added_at FROM documents"
        args: tuple[Any, ...] = ()
        if origin is not None:
            sql += " WHERE origin = ?"
            args = (origin,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY origin, source", args).fetchall()
        return [
            DocumentRow(
                id=r["id"],
                origin=r["origin"],
                source=r["source"],
                hash=r["hash"],
                title=r["title"],
                metadata=json.loads(r["metadata"]),
                chunks=r["chunks"],
                added_at=r["added_at"],
            )
            for r in rows
        ]

    def document_text(self, document_id: int) -> str:
        with self._lock:
            row = self._db.execute(
                "SELECT text FROM documents WHERE id = ?", (document_id,)
            ).fetchone()
        return str(row[0]) if row else ""

    def read_documents(
        self, document_ids: Sequence[int]
    ) -> tuple[list[DocumentItem], npt.NDArray[np.float32]]:
        items: list[DocumentItem] = []
        vectors: list[npt.NDArray[np.float32]] = []
        with self._lock:
            for document_id in document_ids:
                doc = self._db.execute(
                    "SELECT origin, source, hash, title, metadata, text FROM documents "
                    "WHERE id = ?",
                    (document_id,),
                ).fetchone()
                if doc is None:
                    continue
                chunks = []
                for r in self._db.execute(
                    "SELECT idx, text, start, end, heading_path, tokens, vector FROM chunks "
                    "WHERE document_id = ? ORDER BY id",
                    (document_id,),
                ):
                    chunks.append(NewChunk(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]))
                    vectors.append(np.frombuffer(r[6], dtype=np.float32))
                items.append((doc[0], doc[1], doc[2], doc[3], json.loads(doc[4]), doc[5], chunks))
        if not vectors:
            return items, np.zeros((0, 0), dtype=np.float32)
        return items, np.stack(vectors).astype(np.float32)

    def replace_documents(
        self,
        items: Sequence[DocumentItem],
        vectors: npt.NDArray[np.float32],
    ) -> None:
        """Write documents with their chunks and vectors, replacing earlier versions, atomically.

        ``items``: (origin, source, hash, title, metadata, text, chunks); ``vectors``: one row
        per chunk, in order.
        """
        row = 0
        with self.transaction() as db:
            for origin, source, digest, title, metadata, text, chunks in items:
                self._delete(db, origin, source)
                cursor = db.execute(
                    "INSERT INTO documents (origin, source, hash, title, metadata, text, chunks, "
                    "added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        origin,
                        source,
                        digest,
                        title,
                        json.dumps(metadata),
                        text,
                        len(chunks),
                        time.time(),
                    ),
                )
                document_id = cursor.lastrowid
                for chunk in chunks:
                    vector = np.ascontiguousarray(vectors[row], dtype=np.float32)
                    row += 1
                    cursor = db.execute(
                        "INSERT INTO chunks (document_id, idx, text, start, end, heading_path, "
                        "tokens, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            document_id,
                            chunk.index,
                            chunk.text,
                            chunk.start,
                            chunk.end,
                            json.dumps(list(chunk.heading_path)),
                            chunk.tokens,
                            vector.tobytes(),
                        ),
                    )
                    db.execute(
                        "INSERT INTO chunks_fts(rowid, text) VALUES (?, ?)",
                        (cursor.lastrowid, _fts_text(chunk.text, chunk.heading_path, title)),
                    )
            self._bump(db)

    @staticmethod
    def _delete(db: sqlite3.Connection, origin: str, source: str) -> bool:
        found = db.execute(
            "SELECT id FROM documents WHERE origin = ? AND source = ?", (origin, source)
        ).fetchone()
        if found is None:
            return False
        db.execute(
            "DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE document_id = ?)",
            (found[0],),
        )
        db.execute("DELETE FROM documents WHERE id = ?", (found[0],))
        return True

    def delete_documents(self, keys: Sequence[tuple[str, str]]) -> int:
        """Remove documents by (origin, source); returns how many existed."""
        removed = 0
        with self.transaction() as db:
            for origin, source in keys:
                removed += self._delete(db, origin, source)
            if removed:
                self._bump(db)
        return removed

    # -- chunks -------------------------------------------------------------

    def counts(self) -> tuple[int, int, int]:
        """(documents, chunks, tokens)."""
        with self._lock:
            docs = self._db.execute("SELECT count(*) FROM documents").fetchone()[0]
            chunks, tokens = self._db.execute(
                "SELECT count(*), coalesce(sum(tokens), 0) FROM chunks"
            ).fetchone()
        return int(docs), int(chunks), int(tokens)

    def vectors(self, dimensions: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Every chunk id and its vector, as one matrix."""
        with self._lock:
            rows = self._db.execute("SELECT id, vector FROM chunks ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        return ids, matrix.reshape(len(rows), dimensions) if rows else matrix.reshape(0, dimensions)

    def nearest(
        self,
        query_vector: npt.NDArray[np.float32],
        limit: int,
        filters: Mapping[str, str] | None = None,
    ) -> list[tuple[int, float]]:
        """Exact search over every vector (the knowledge base caches the matrix instead)."""
        ids, matrix = self.vectors(int(query_vector.shape[0]))
        scores = matrix @ query_vector
        if filters:
            allowed = self.chunk_ids_matching(filters)
            mask = np.isin(ids, np.fromiter(allowed, dtype=np.int64, count=len(allowed)))
            scores = np.where(mask, scores, -np.inf)
        order = np.argsort(-scores, kind="stable")[:limit]
        return [(int(ids[i]), float(scores[i])) for i in order if np.isfinite(scores[i])]

    def bm25(
        self,
        match: str,
        limit: int,
        allowed: set[int] | None = None,
        filters: Mapping[str, str] | None = None,
    ) -> list[tuple[int, float]]:
        """Chunk ids by BM25 for an FTS5 match expression; higher score is better.
        ``allowed`` (and ``filters``) restrict the ranking to those chunks (inside SQL, so
        none are missed)."""
        if filters:
            matching = self.chunk_ids_matching(filters)
            allowed = matching if allowed is None else allowed & matching
        with self._lock:
            if allowed is None:
                rows = self._db.execute(
                    "SELECT rowid, bm25(chunks_fts) AS score FROM chunks_fts "
                    "WHERE chunks_fts MATCH ? ORDER BY score LIMIT ?",
                    (match, limit),
                ).fetchall()
            else:
                self._db.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS allowed_ids (id INTEGER PRIMARY KEY)"
                )
                self._db.execute("DELETE FROM allowed_ids")
                self._db.executemany(
                    "INSERT INTO allowed_ids(id) VALUES (?)", [(i,) for i in allowed]
                )
                rows = self._db.execute(
                    "SELECT chunks_fts.rowid, bm25(chunks_fts) AS score FROM chunks_fts "
                    "JOIN allowed_ids a ON a.id = chunks_fts.rowid "
                    "WHERE chunks_fts MATCH ? ORDER BY score LIMIT ?",
                    (match, limit),
                ).fetchall()
        return [(int(r[0]), -float(r[1])) for r in rows]

    def chunks(self, ids: Sequence[int]) -> dict[int, ChunkRow]:
        if not ids:
            return {}
        out: dict[int, ChunkRow] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                part = list(ids[start : start + 500])
                marks = ",".join("?" * len(part))
                for r in self._db.execute(
                    f"SELECT c.id, c.document_id, c.idx, c.text, c.start, c.end, c.heading_path, "
                    f"c.tokens, d.source, d.title, d.metadata FROM chunks c JOIN documents d "
                    f"ON d.id = c.document_id WHERE c.id IN ({marks})",
                    part,
                ):
                    out[r[0]] = ChunkRow(
                        id=r[0],
                        document_id=r[1],
                        index=r[2],
                        text=r[3],
                        start=r[4],
                        end=r[5],
                        heading_path=json.loads(r[6]),
                        tokens=r[7],
                        source=r[8],
                        title=r[9],
                        metadata=json.loads(r[10]),
                    )
        return out

    def chunk_vectors(self, ids: Sequence[int], dimensions: int) -> npt.NDArray[np.float32]:
        with self._lock:
            found = {}
            for start in range(0, len(ids), 500):
                part = list(ids[start : start + 500])
                marks = ",".join("?" * len(part))
                for r in self._db.execute(
                    f"SELECT id, vector FROM chunks WHERE id IN ({marks})", part
                ):
                    found[r[0]] = np.frombuffer(r[1], dtype=np.float32)
        if not ids:
            return np.zeros((0, dimensions), dtype=np.float32)
        return np.stack([found[i] for i in ids]).astype(np.float32)

    def chunk_ids_matching(self, filters: Mapping[str, str]) -> set[int]:
        """Chunks of the documents that match every filter: ``source`` takes a glob, ``title``
        an exact title, other keys match document metadata (numbers as their text)."""
        check_filters(filters)
        clauses, args = [], []
        for key, value in filters.items():
            if key == "source":
                clauses.append("d.source GLOB ?")
            elif key == "title":
                clauses.append("d.title = ?")
            else:
                clauses.append(f"CAST(json_extract(d.metadata, '$.{key}') AS TEXT) = ?")
            args.append(value)
        return self.filtered_chunk_ids(" AND ".join(clauses) or "1", args)

    def filtered_chunk_ids(self, where: str, args: Sequence[Any]) -> set[int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE " + where,
                list(args),
            ).fetchall()
        return {int(r[0]) for r in rows}


def _fts_text(text: str, heading_path: Sequence[str], title: str | None) -> str:
    """What BM25 indexes for a chunk: its title and headings too, so they count as words."""
    parts = [p for p in (title, *heading_path) if p]
    if parts and not text.startswith(parts[0]):
        return "\n".join(parts) + "\n" + text
    return text
