"""Embeddings: text to vectors. The default is all-MiniLM-L6-v2 on ONNX Runtime, no torch."""

from .base import Embedder, GatewayEmbedder
from .local import LOCAL_EMBEDDERS, LocalEmbedder

__all__ = ["LOCAL_EMBEDDERS", "Embedder", "GatewayEmbedder", "LocalEmbedder"]
