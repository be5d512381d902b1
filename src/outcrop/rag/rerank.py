"""Re-ranking: a closer second look at the top passages of a search.

Two re-rankers ship, neither needing a cross-encoder (none is packaged where outcrop
installs from):

- :class:`SentenceReranker` (``rerank="sentences"``) scores each passage by its one
  sentence closest in meaning to the query, with the knowledge base's own embedder. A
  passage embedded whole averages its sentences; a claim is usually supported by one of
  them. Sentence vectors are cached per process, so passages seen before cost nothing.
- :class:`LLMReranker` (``rerank="llm"`` or a local model id) asks a local chat model
  whether each passage is relevant and scores it by the logit gap between "Yes" and "No"
  as its next word — no text is generated. Slow on CPU, and on BEIR SciFact it made
  rankings worse (docs/rag.md has the figures).

A re-ranker's score is fused with the search's own score over the passages it judged:
``(1 - weight) × retrieval + weight × re-ranker``, both min-max scaled (:func:`fuse`);
``weight`` 1 lets the re-ranker alone order them.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from ..errors import InvalidRequestError
from ..types import Message

if TYPE_CHECKING:
    from ..embeddings.base import Embedder, Vectors
    from ..gateway import Gateway
    from .kb import KnowledgeBase

__all__ = [
    "RERANKERS",
    "LLMReranker",
    "Reranker",
    "SentenceReranker",
    "fuse",
    "reranker_for",
    "split_sentences",
]

RERANKERS = ("sentences", "llm")
DEFAULT_LLM = "local:qwen2.5-coder-0.5b"


@runtime_checkable
class Reranker(Protocol):
    """Anything that scores passages against a query, higher = more relevant.

    ``stage`` names its score in :attr:`SearchResult.scores`; ``weight`` is the share of
    that score in the final order of the passages it judged (see :func:`fuse`).
    """

    stage: str
    weight: float

    def score(self, query: str, passages: list[str]) -> list[float]: ...


def fuse(retrieval: Sequence[float], judged: Sequence[float], weight: float) -> list[float]:
    """``(1 - weight) × retrieval + weight × judged``, each min-max scaled to 0–1 over the
    passages judged; with ``weight`` 1, the re-ranker's own scores unchanged."""
    if not 0.0 <= weight <= 1.0:
        raise InvalidRequestError(
            f"A re-ranker's weight must be within 0 and 1 (got {weight})", field="rerank"
        )
    if weight == 1.0:
        return [float(v) for v in judged]
    a, b = _minmax(retrieval), _minmax(judged)
    return [(1 - weight) * x + weight * y for x, y in zip(a, b, strict=True)]


def _minmax(values: Sequence[float]) -> list[float]:
    if not values:
        return []
    low, high = min(values), max(values)
    if high <= low:
        return [1.0] * len(values)
    return [(v - low) / (high - low) for v in values]


# A sentence ends after . ! ? (and closing quotes or brackets) before whitespace and a
# capital, digit or opening bracket or quote; a line break ends one too.
_SENTENCE_END = re.compile(
    r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+(?=[A-Z0-9\"'\u201c\u2018(\[])|\s*\n\s*"
)


def split_sentences(text: str, *, min_words: int = 4) -> list[str]:
    """The sentences of ``text``; a fragment under ``min_words`` words joins the one before."""
    out: list[str] = []
    for part in _SENTENCE_END.split(text):
        part = part.strip()
        if not part:
            continue
        if out and len(part.split()) < min_words:
            out[-1] = f"{out[-1]} {part}"
        else:
            out.append(part)
    return out or [text.strip() or text]


class _VectorCache:
    """Sentence vectors of one embedder, least recently used dropped past ``size``."""

    def __init__(self, size: int):
        self.size = size
        self.lock = threading.Lock()
        self.rows: OrderedDict[str, Vectors] = OrderedDict()


_CACHES: dict[str, _VectorCache] = {}
_CACHES_LOCK = threading.Lock()


# The sentence score's weight picked on SciFact's train queries, per embedder (0.2 for
# others: the float MiniLM's, a middling choice on that curve).
TUNED_WEIGHTS = {"local:all-minilm-l6-v2-int8": 0.3, "local:all-minilm-l6-v2": 0.2}


class SentenceReranker:
    """Scores a passage by max cosine(query, sentence) over its sentences.

    ``embedder`` should be the knowledge base's own (``kb.embedder``). ``weight`` is the
    sentence score's share against the retrieval score; by default the one tuned on BEIR
    SciFact's train queries for the embedder (:data:`TUNED_WEIGHTS`), else 0.2.
    ``cache_size`` sentences' vectors are kept per embedder per process (384 floats each
    for MiniLM: 32,768 sentences ≈ 50 MB).
    """

    stage = "sentence"

    def __init__(
        self, embedder: Embedder, *, weight: float | None = None, cache_size: int = 32_768
    ):
        if weight is None:
            weight = TUNED_WEIGHTS.get(embedder.id, 0.2)
        if not 0.0 <= weight <= 1.0:
            raise InvalidRequestError(
                f"The sentence re-ranker's weight must be within 0 and 1 (got {weight})",
                field="weight",
            )
        self.embedder = embedder
        self.weight = weight
        with _CACHES_LOCK:
            cache = _CACHES.get(embedder.id)
            if cache is None:
                cache = _CACHES[embedder.id] = _VectorCache(cache_size)
            cache.size = max(cache.size, cache_size)
        self._cache = cache

    def clear_cache(self) -> None:
        """Forget every cached sentence vector of this embedder (in this process)."""
        with self._cache.lock:
            self._cache.rows.clear()

    def vectors(self, sentences: list[str]) -> Vectors:
        """The vectors of ``sentences``, embedding only those not cached."""
        cache = self._cache
        with cache.lock:
            missing = list(dict.fromkeys(s for s in sentences if s not in cache.rows))
        found: dict[str, Vectors] = {}
        if missing:
            embedded = self.embedder.embed(missing)
            found = {s: embedded[i] for i, s in enumerate(missing)}
        with cache.lock:
            rows = []
            for s in sentences:
                row = found.get(s)
                if row is None:
                    row = cache.rows[s]
                    cache.rows.move_to_end(s)
                rows.append(row)
            for s, row in found.items():
                cache.rows[s] = row
            while len(cache.rows) > cache.size:
                cache.rows.popitem(last=False)
        return np.stack(rows) if rows else np.zeros((0, self.embedder.dimensions), np.float32)

    def score(self, query: str, passages: list[str]) -> list[float]:
        if not passages:
            return []
        split = [split_sentences(p) for p in passages]
        matrix = self.vectors([s for sentences in split for s in sentences])
        similarity = matrix @ self.embedder.embed_query(query)
        out, at = [], 0
        for sentences in split:
            out.append(float(similarity[at : at + len(sentences)].max()))
            at += len(sentences)
        return out


SYSTEM = (
    "You judge search results. Given a query and a passage, answer Yes if the passage is "
    "relevant to the query (it answers, supports or refutes it), otherwise No. Answer with "
    "one word: Yes or No."
)


class LLMReranker:
    """Scores (query, passage) pairs by a local model's logit of Yes minus No."""

    stage = "llm"

    def __init__(
        self,
        gateway: Gateway,
        model: str = DEFAULT_LLM,
        *,
        max_passage_chars: int = 1500,
        weight: float = 1.0,
    ):
        self.gateway = gateway
        self.model = model
        self.max_passage_chars = max_passage_chars
        self.weight = weight

    def score(self, query: str, passages: list[str]) -> list[float]:
        conversations = [
            [
                Message.system(SYSTEM),
                Message.user(
                    f"Query: {query}\n\nPassage: {p[: self.max_passage_chars]}\n\n"
                    "Is the passage relevant to the query?"
                ),
            ]
            for p in passages
        ]
        return self.gateway.yes_no(conversations, model=self.model)


def reranker_for(rerank: str | Reranker, kb: KnowledgeBase) -> Reranker:
    """The re-ranker ``rerank`` names for ``kb``: ``sentences``, ``llm``, a local model id
    (the LLM judge on that model), or a re-ranker object, returned as it is."""
    if not isinstance(rerank, str):
        if not isinstance(rerank, Reranker):
            raise InvalidRequestError(
                f"rerank takes a name ({', '.join(RERANKERS)}) or an object with stage, weight "
                f"and score(query, passages); got {type(rerank).__name__}",
                field="rerank",
            )
        return rerank
    name = rerank.strip()
    if name == "sentences":
        return SentenceReranker(kb.embedder)
    if name == "llm":
        return LLMReranker(kb.gateway)
    if ":" in name:
        return LLMReranker(kb.gateway, name)
    raise InvalidRequestError(
        f"Unknown re-ranker {rerank!r}; choose one of: {', '.join(RERANKERS)}, or a local model "
        f"id for the LLM judge (e.g. {DEFAULT_LLM})",
        field="rerank",
    )
