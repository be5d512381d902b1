"""One SQLite file per knowledge base: documents, chunks, FTS5 (BM25) and float32 vectors.

Writes are transactional, a batch of documents at a time: a process killed in
the middle of ``add`` leaves every document either fully indexed or not at all,
and the next ``add`` picks up where it stopped (content hashes tell what is done).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import UserError

__all__ = ["ChunkRow", "DocumentRow", "KBStore", "NewChunk"]

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


class KBStore:
    """The storage of one knowledge base. Safe to share between threads of one process."""

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

    def replace_documents(
        self,
        items: Sequence[tuple[str, str, str, str | None, dict[str, Any], str, list[NewChunk]]],
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

    def bm25(
        self, match: str, limit: int, allowed: set[int] | None = None
    ) -> list[tuple[int, float]]:
        """Chunk ids by BM25 for an FTS5 match expression; higher score is better.
        ``allowed`` restricts the ranking to those chunks (inside SQL, so none are missed)."""
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
