"""The embedder interface, and the embedder that calls any model through the gateway."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ..errors import InvalidRequestError
from ..types import estimate_tokens

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["Embedder", "GatewayEmbedder", "Vectors"]

Vectors = npt.NDArray[np.float32]


class Embedder(ABC):
    """Turns texts into L2-normalised float32 vectors, one row per text.

    ``id`` names the model exactly (vectors of two embedders never mix in one index).
    """

    id: str
    dimensions: int

    @abstractmethod
    def embed(self, texts: list[str]) -> Vectors:
        """Vectors for passages to be searched."""

    def embed_query(self, text: str) -> Vectors:
        """The vector of a search query (some models embed queries differently)."""
        row: Vectors = self.embed([text])[0:1].reshape(-1)
        return row

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` for this model; an estimate where the model's tokenizer is absent."""
        return estimate_tokens(text)

    @property
    def max_tokens(self) -> int:
        """The longest input the model reads; longer text is cut."""
        return 512


def normalise(matrix: npt.NDArray[np.floating]) -> Vectors:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Vectors = (matrix / norms).astype(np.float32)
    return out


class GatewayEmbedder(Embedder):
    """Any embedding model the gateway can call (local or remote); every batch is traced."""

    def __init__(self, gateway: Gateway, model: str, *, batch_size: int = 64):
        self.gateway = gateway
        self.model = model
        self.id = gateway.resolve(model).id
        self.batch_size = batch_size
        self.tokens_read = 0  # tokens the model read, over this embedder's life
        self._dimensions: int | None = None
        resolved = gateway.resolve(model)
        local = getattr(resolved.provider, "embedder", None)
        self._local = local(resolved.name) if callable(local) else None

    @property
    def dimensions(self) -> int:  # type: ignore[override]
        if self._dimensions is None:
            if self._local is not None:
                self._dimensions = int(self._local.dimensions)
            else:
                self._dimensions = int(self.embed(["dimensions"]).shape[1])
        return self._dimensions

    def embed(self, texts: list[str]) -> Vectors:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            response = self.gateway.embed(batch, model=self.model)
            rows.extend(response.vectors)
            self.tokens_read += response.usage.input_tokens
        if not rows:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return normalise(np.asarray(rows, dtype=np.float32))

    def count_tokens(self, text: str) -> int:
        try:
            return self.gateway.count_tokens(text, self.model)
        except InvalidRequestError:  # a remote model without a tokenizer here
            return super().count_tokens(text)

    @property
    def max_tokens(self) -> int:
        if self._local is not None:
            return int(self._local.max_tokens)
        return 512
