"""The LLM re-ranker on the real local model: a Yes/No logit gap, traced."""

from __future__ import annotations

import pytest

from outcrop import Gateway, InvalidRequestError, Settings, Store
from outcrop.rag import LLMReranker

pytestmark = pytest.mark.slow


def test_relevant_passages_score_higher(store: Store):
    gw = Gateway(settings=Settings(), store=store)
    reranker = LLMReranker(gw, "local:qwen2.5-coder-0.5b")
    scores = reranker.score(
        "How long does the password reset link stay valid?",
        [
            "The password reset link we email you expires after 30 minutes.",
            "Our shop sells second-hand books and ships across the EU.",
        ],
    )
    assert scores[0] > scores[1]
    row = store.recent(1)[0]
    assert (row.kind, row.model, row.status) == ("score", "local:qwen2.5-coder-0.5b", "ok")


def test_remote_models_cannot_score(store: Store):
    gw = Gateway(settings=Settings(), store=store)
    with pytest.raises(InvalidRequestError, match="needs the model's logits"):
        gw.yes_no([[]], model="openai:gpt-4o-mini")
