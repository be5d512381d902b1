"""Retrieval quality and speed of outcrop's knowledge bases on BEIR SciFact.

Real data from ../shared/datasets/beir_scifact: 5,183 abstracts, 300 test and 809
train queries with relevance judgements. Anything tuned (the hybrid weight) is
tuned on the train queries only; every reported quality figure is on the test split.

Figures, in one JSON line:
- nDCG@10 and recall@100 for BM25, dense, hybrid (weighted and RRF fusion), beside the
  published baselines;
- hybrid + sentence re-rank (each of the top --sentence-top passages scored by its sentence
  closest to the query, fused with the hybrid score at a weight tuned on train) on all test
  queries, with the train figure beside it and the re-rank stage's latency per query
  (cold: no sentence cached; warm: the same queries again);
- hybrid + LLM re-rank (on the first --rerank-queries test queries; it is slow on CPU);
- ingest throughput of the default embedder (tokens/s, chunks/s);
- query latency p50/p95 (hybrid, query embedding included) on SciFact;
- a synthetic 100,000-chunk index: p50/p95 hybrid latency with the approximate
  index, and its recall@10 against exact search.

Usage:
    .venv/bin/python benchmarks/retrieval.py [--rerank-queries 50] [--rerank-model MODEL]
        [--sentence-top 20] [--skip-llm-rerank] [--skip-synthetic]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "beir_scifact"
PUBLISHED = {
    "bm25_anserini_flat": 0.6789,
    "bm25_anserini_multifield": 0.6647,
    "all_minilm_l6_v2_mteb": 0.645,
}


def load_split(split: str) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    queries = {}
    with (DATA / "queries.jsonl").open() as fh:
        for line in fh:
            row = json.loads(line)
            queries[row["_id"]] = row["text"]
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with (DATA / "qrels" / f"{split}.tsv").open() as fh:
        next(fh)
        for line in fh:
            qid, did, score = line.strip().split("\t")
            qrels[qid][did] = int(score)
    return {q: queries[q] for q in qrels}, dict(qrels)


def ndcg_at(ranking: list[str], relevant: dict[str, int], k: int = 10) -> float:
    dcg = sum((2 ** relevant.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranking[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum((2**r - 1) / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranking: list[str], relevant: dict[str, int], k: int = 100) -> float:
    hits = sum(1 for d in ranking[:k] if relevant.get(d, 0) > 0)
    total = sum(1 for v in relevant.values() if v > 0)
    return hits / total if total else 0.0


def documents_of(results) -> list[str]:
    seen: dict[str, None] = {}
    for r in results:
        seen.setdefault(r.chunk.source, None)
    return list(seen)


def evaluate(kb, queries, qrels, **search) -> dict[str, float]:
    ndcgs, recalls = [], []
    for qid, text in queries.items():
        results = kb.search(text, k=300, candidates=300, **search)
        ranking = documents_of(results)
        ndcgs.append(ndcg_at(ranking, qrels[qid]))
        recalls.append(recall_at(ranking, qrels[qid]))
    return {
        "ndcg@10": round(statistics.fmean(ndcgs), 4),
        "recall@100": round(statistics.fmean(recalls), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rerank-queries", type=int, default=50)
    parser.add_argument("--rerank-model", default="local:qwen2.5-coder-0.5b")
    parser.add_argument("--rerank-top", type=int, default=20)
    parser.add_argument("--synthetic-chunks", type=int, default=100_000)
    parser.add_argument("--sentence-top", type=int, default=20)
    parser.add_argument("--skip-llm-rerank", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    args = parser.parse_args()
    os.environ["OUTCROP_HOME"] = tempfile.mkdtemp(prefix="outcrop-bench-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from outcrop import Gateway
    from outcrop.rag import KnowledgeBase
    from outcrop.rag.loaders import LoadedDocument
    from outcrop.rag.rerank import LLMReranker

    gateway = Gateway()
    kb = KnowledgeBase.create("scifact", gateway=gateway)
    docs = []
    with (DATA / "corpus.jsonl").open() as fh:
        for line in fh:
            row = json.loads(line)
            docs.append(
                LoadedDocument(
                    source=row["_id"],
                    path=DATA / "corpus.jsonl",
                    text=row["text"] or row["title"],
                    title=row["title"] or None,
                    metadata={"type": "jsonl"},
                )
            )
    report = kb.add_documents(docs, origin="scifact")
    ingest = {
        "documents": len(docs),
        "chunks": report.chunks,
        "chunk_tokens": report.tokens,
        "embedded_tokens": report.embedded_tokens,
        "seconds": round(report.seconds, 1),
        "tokens_per_s": round(report.embedded_tokens / report.seconds),
        "chunk_tokens_per_s": round(report.tokens / report.seconds),
        "chunks_per_s": round(report.chunks / report.seconds, 1),
    }

    train_q, train_rels = load_split("train")
    test_q, test_rels = load_split("test")

    # Tune the weighted-fusion weight on train only.
    best_weight, best_score = 0.5, -1.0
    for weight in (0.3, 0.4, 0.5, 0.6, 0.7):
        score = evaluate(kb, train_q, train_rels, mode="hybrid", dense_weight=weight)["ndcg@10"]
        if score > best_score:
            best_weight, best_score = weight, score

    quality = {
        "bm25": evaluate(kb, test_q, test_rels, mode="bm25"),
        "dense": evaluate(kb, test_q, test_rels, mode="dense"),
        "hybrid_rrf": evaluate(kb, test_q, test_rels, mode="hybrid", fusion="rrf"),
        "hybrid": evaluate(kb, test_q, test_rels, mode="hybrid", dense_weight=best_weight),
    }

    latencies = []
    for text in list(test_q.values()):
        started = time.perf_counter()
        kb.search(text, k=10)
        latencies.append((time.perf_counter() - started) * 1000)

    sentences = sentence_rerank(
        kb, train_q, train_rels, test_q, test_rels, best_weight, args.sentence_top
    )

    rerank = None
    if args.rerank_queries > 0 and not args.skip_llm_rerank:
        reranker = LLMReranker(gateway, args.rerank_model)
        subset = dict(list(test_q.items())[: args.rerank_queries])
        started = time.perf_counter()
        with_rerank = evaluate(
            kb,
            subset,
            test_rels,
            mode="hybrid",
            dense_weight=best_weight,
            rerank=reranker,
            rerank_top=args.rerank_top,
        )
        seconds = time.perf_counter() - started
        without = evaluate(kb, subset, test_rels, mode="hybrid", dense_weight=best_weight)
        rerank = {
            "queries": len(subset),
            "model": args.rerank_model,
            "top": args.rerank_top,
            "hybrid_same_queries": without,
            "hybrid_rerank": with_rerank,
            "seconds_per_query": round(seconds / len(subset), 2),
        }

    synthetic = None if args.skip_synthetic else synthetic_index(kb, test_q, args.synthetic_chunks)
    print(
        json.dumps(
            {
                "benchmark": "retrieval",
                "dataset": "BEIR SciFact (test split; fusion weight tuned on train)",
                "embedder": kb.embedder_id,
                "chunk_tokens": kb.chunking.max_tokens,
                "dense_weight_tuned_on_train": best_weight,
                "quality": quality,
                "published_ndcg@10": PUBLISHED,
                "sentence_rerank": sentences,
                "rerank": rerank,
                "ingest": ingest,
                "query_ms": {
                    "p50": round(statistics.median(latencies), 1),
                    "p95": round(float(np.percentile(latencies, 95)), 1),
                },
                "synthetic_100k": synthetic,
                "python": sys.version.split()[0],
            }
        )
    )


class Timed:
    """A re-ranker that records how long each call took."""

    def __init__(self, inner) -> None:
        self.inner, self.stage, self.weight = inner, inner.stage, inner.weight
        self.seconds: list[float] = []

    def score(self, query: str, passages: list[str]) -> list[float]:
        started = time.perf_counter()
        scores = self.inner.score(query, passages)
        self.seconds.append(time.perf_counter() - started)
        return scores


def judged(kb, queries, reranker, top: int, dense_weight: float) -> dict[str, list]:
    """Per query, the chunks in hybrid order: (source, hybrid score, re-ranker score or None)."""
    out = {}
    for qid, text in queries.items():
        results = kb.search(
            text,
            k=300,
            candidates=300,
            mode="hybrid",
            dense_weight=dense_weight,
            rerank=reranker,
            rerank_top=top,
        )
        rows = [(r.chunk.source, r.scores["hybrid"], r.scores.get(reranker.stage)) for r in results]
        head = sorted((r for r in rows if r[2] is not None), key=lambda r: -r[1])
        out[qid] = head + [r for r in rows if r[2] is None]
    return out


def fused_ndcg(rows_of: dict[str, list], qrels, weight: float) -> float:
    """nDCG@10 when the judged head is ordered by :func:`fuse` at ``weight``."""
    from outcrop.rag.rerank import fuse

    scores = []
    for qid, rows in rows_of.items():
        head = [r for r in rows if r[2] is not None]
        fused = fuse([r[1] for r in head], [r[2] for r in head], weight)
        order = [r for _, r in sorted(zip(fused, head, strict=True), key=lambda x: -x[0])]
        ranking = documents_of_sources([r[0] for r in order + rows[len(head) :]])
        scores.append(ndcg_at(ranking, qrels[qid]))
    return statistics.fmean(scores)


def documents_of_sources(sources: list[str]) -> list[str]:
    return list(dict.fromkeys(sources))


def sentence_rerank(kb, train_q, train_rels, test_q, test_rels, dense_weight: float, top: int):
    """The sentence re-ranker: its weight tuned on train, then all test queries."""
    from outcrop.rag.rerank import SentenceReranker

    probe = SentenceReranker(kb.embedder, weight=1.0)
    train_rows = judged(kb, train_q, probe, top, dense_weight)
    weights = [round(0.1 * i, 1) for i in range(11)]
    on_train = {w: round(fused_ndcg(train_rows, train_rels, w), 4) for w in weights}
    weight = max(weights, key=lambda w: (on_train[w], -w))
    probe.clear_cache()
    reranker = Timed(SentenceReranker(kb.embedder, weight=weight))
    cold = evaluate(
        kb,
        test_q,
        test_rels,
        mode="hybrid",
        dense_weight=dense_weight,
        rerank=reranker,
        rerank_top=top,
    )
    cold_ms = [s * 1000 for s in reranker.seconds]
    reranker.seconds = []
    evaluate(
        kb,
        test_q,
        test_rels,
        mode="hybrid",
        dense_weight=dense_weight,
        rerank=reranker,
        rerank_top=top,
    )
    warm_ms = [s * 1000 for s in reranker.seconds]
    return {
        "queries": len(test_q),
        "top": top,
        "weight_tuned_on_train": weight,
        "train_ndcg@10_by_weight": on_train,
        "train_hybrid_ndcg@10": on_train[0.0],
        "train_ndcg@10": on_train[weight],
        "hybrid_sentence": cold,
        "stage_ms_cold": {
            "mean": round(statistics.fmean(cold_ms), 1),
            "p50": round(statistics.median(cold_ms), 1),
            "p95": round(float(np.percentile(cold_ms, 95)), 1),
        },
        "stage_ms_warm": {
            "p50": round(statistics.median(warm_ms), 1),
            "p95": round(float(np.percentile(warm_ms, 95)), 1),
        },
    }


def synthetic_index(kb, queries: dict[str, str], size: int) -> dict[str, float]:
    """A knowledge base of ``size`` chunks built from SciFact's own (text, vector) pairs with
    small noise, so BM25 and vectors behave like real ones; no re-embedding needed."""
    from outcrop.rag import KnowledgeBase
    from outcrop.rag.store import NewChunk

    big = KnowledgeBase.create("synthetic", gateway=kb.gateway, ann_threshold=50_000)
    ids, matrix = kb.store.vectors(kb.embedder.dimensions)
    rows = kb.store.chunks([int(i) for i in ids])
    rng = np.random.default_rng(7)
    made = 0
    batch: list = []
    vectors: list[np.ndarray] = []
    while made < size:
        for i, cid in enumerate(ids):
            if made >= size:
                break
            row = rows[int(cid)]
            noisy = matrix[i] + rng.normal(0, 0.02, matrix.shape[1]).astype(np.float32)
            noisy /= np.linalg.norm(noisy)
            chunk = NewChunk(0, row.text, 0, len(row.text), [], row.tokens)
            batch.append(
                ("synthetic", f"{row.source}-{made}", "h", row.title, {}, row.text, [chunk])
            )
            vectors.append(noisy)
            made += 1
            if len(batch) == 5000:
                big.store.replace_documents(batch, np.stack(vectors))
                batch, vectors = [], []
    if batch:
        big.store.replace_documents(batch, np.stack(vectors))
    texts = list(queries.values())[:200]
    # Warm the caches (the matrix and the approximate index are built once per change).
    big.search(texts[0], k=10)
    latencies, recalls = [], []
    for text in texts:
        started = time.perf_counter()
        big.search(text, k=10)
        latencies.append((time.perf_counter() - started) * 1000)
        vector = big.embedder.embed_query(text)
        approximate = {cid for cid, _ in big._dense(vector, 10, None)}
        exact = {cid for cid, _ in big._dense(vector, 10, set(big._matrix[1].tolist()))}
        recalls.append(len(approximate & exact) / 10)
    return {
        "chunks": big.store.counts()[1],
        "hybrid_query_ms_p50": round(statistics.median(latencies), 1),
        "hybrid_query_ms_p95": round(float(np.percentile(latencies, 95)), 1),
        "ann_recall@10_vs_exact": round(statistics.fmean(recalls), 4),
    }


if __name__ == "__main__":
    main()
