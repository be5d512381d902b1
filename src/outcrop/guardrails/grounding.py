"""Grounding: which sentences of an answer the retrieved context supports.

A sentence counts as supported when it is close in meaning to a sentence of
the context (cosine similarity of MiniLM embeddings at or above the threshold)
or when most of its content words appear in the context. Short sentences
without content ("Sure.", "I hope this helps.") are not judged.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["split_sentences", "unsupported_sentences"]

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_CITATION = re.compile(r"\s*\[\d+(?:,\s*\d+)*\]")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")
_STOP = set(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "i",
        "you",
        "we",
        "they",
        "he",
        "she",
        "them",
        "his",
        "her",
        "our",
        "your",
        "their",
        "not",
        "no",
        "yes",
        "do",
        "does",
        "did",
        "can",
        "could",
        "will",
        "would",
        "should",
        "may",
        "might",
        "must",
        "have",
        "has",
        "had",
    ]
)


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(_CITATION.sub("", text)) if s.strip()]


def _content(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP and len(w) > 2}


def unsupported_sentences(
    answer: str, context: str, embedder: Any, threshold: float = 0.5
) -> tuple[list[str], float]:
    """(sentences the context does not support, share of judged sentences it supports)."""
    import numpy as np

    sentences = [s for s in split_sentences(answer) if len(_content(s)) >= 3]
    if not sentences:
        return [], 1.0
    context_words = _content(context)
    pieces = split_sentences(context)[:400] or [context[:2000]]
    vectors = np.asarray(embedder.embed(sentences + pieces), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = (vectors / np.where(norms == 0, 1.0, norms)).astype(np.float32)
    ours, theirs = vectors[: len(sentences)], vectors[len(sentences) :]
    best = (ours @ theirs.T).max(axis=1)
    missing = []
    for sentence, similarity in zip(sentences, best, strict=True):
        words = _content(sentence)
        overlap = len(words & context_words) / len(words)
        if similarity < threshold and overlap < 0.7:
            missing.append(sentence)
    return missing, 1 - len(missing) / len(sentences)
