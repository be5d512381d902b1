"""What a provider implements: one streaming method and capability flags.

A provider turns a validated :class:`~outcrop.types.ChatRequest` into a stream
of :class:`~outcrop.types.StreamEvent`. Non-streaming calls are the stream
collected, by the gateway. Only the gateway calls a provider.

The stream's contract:

- ``text`` and ``tool_call`` events as the answer is produced; each may carry
  ``usage`` with the tokens counted *so far*, so a cancelled stream can be
  recorded with exact partial usage;
- exactly one ``finish`` event last, with the final usage and finish reason;
- closing the generator early stops generation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import InvalidRequestError
from ..types import ChatRequest, StreamEvent, Usage

__all__ = ["EmbeddingResult", "ImageResult", "ModelInfo", "Provider"]


@dataclass
class EmbeddingResult:
    """One vector per input text, in order, and the tokens read."""

    vectors: list[list[float]]
    usage: Usage


@dataclass
class ImageResult:
    """Generated images as encoded bytes (PNG or JPEG as the provider sends them)."""

    images: list[bytes]


@dataclass(frozen=True)
class ModelInfo:
    """A model a provider can serve, as listed by ``outcrop models list``."""

    id: str
    provider: str
    description: str = ""
    installed: bool = True  # usable now, as far as outcrop can tell
    how_to_install: str = ""
    remote: bool = False
    details: dict[str, str] = field(default_factory=dict)


class Provider(ABC):
    """The interface between the gateway and one API shape."""

    name: str = "provider"
    can_stream: bool = True
    supports_tools: bool = False
    supports_json_schema: bool = False

    @abstractmethod
    def stream(
        self, model: str, request: ChatRequest, *, plain: bool = False
    ) -> Iterator[StreamEvent]:
        """Yield the answer's events; the last one is ``finish`` with exact usage.

        ``plain=True`` says the caller collects the whole answer anyway, so a
        provider may use its non-streaming API (same events, fewer of them).
        """

    def models(self) -> list[ModelInfo]:
        """The models this provider knows (installed or installable)."""
        return []

    def check_model(self, model: str) -> None:
        """Raise a :class:`~outcrop.errors.UserError` if ``model`` cannot be served."""
        return None

    def cost(self, model: str, usage: Usage) -> float | None:
        """Cost in US dollars of ``usage`` on ``model``; None when unknown."""
        return None

    def embed(self, model: str, texts: list[str]) -> EmbeddingResult:
        """Embed ``texts``; providers without embeddings say so."""
        raise InvalidRequestError(f"{self.name}:{model} does not make embeddings", field="model")

    def generate_image(
        self, model: str, prompt: str, *, size: str, count: int, seed: int | None
    ) -> ImageResult:
        """Generate images; providers without image models say so."""
        raise InvalidRequestError(f"{self.name}:{model} does not generate images", field="model")

    def image_cost(self, model: str, count: int) -> float | None:
        return None

    def count_tokens(self, model: str, text: str) -> int | None:
        """Tokens in ``text`` for ``model``'s tokenizer; None when the provider cannot tell."""
        return None

    def tokenize(self, model: str, text: str) -> list[tuple[int, str]] | None:
        """``text`` as (token id, piece) pairs; None when the provider has no tokenizer."""
        return None

    def render(self, model: str, request: ChatRequest) -> tuple[str, list[int]] | None:
        """The exact text and tokens the model reads for ``request``, when known."""
        return None

    def close(self) -> None:
        """Release connections the provider holds (a no-op for most)."""
        return None

    def context_window(self, model: str) -> int | None:
        """How many tokens the model reads and writes in one call, when known."""
        return None
