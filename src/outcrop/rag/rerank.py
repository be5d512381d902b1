"""Re-ranking retrieved passages with the local LLM's Yes/No judgement.

No cross-encoder is packaged where outcrop installs from, so the re-ranker asks a
local chat model whether each passage is relevant to the query and scores it by
the logit gap between "Yes" and "No" as its next word — no text is generated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..types import Message

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["LLMReranker"]

SYSTEM = (
    "You judge search results. Given a query and a passage, answer Yes if the passage is "
    "relevant to the query (it answers, supports or refutes it), otherwise No. Answer with "
    "one word: Yes or No."
)


class LLMReranker:
    """Scores (query, passage) pairs by a local model's logit of Yes minus No."""

    def __init__(
        self,
        gateway: Gateway,
        model: str = "local:qwen2.5-coder-0.5b",
        *,
        max_passage_chars: int = 1500,
    ):
        self.gateway = gateway
        self.model = model
        self.max_passage_chars = max_passage_chars

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
