"""The local embedder's padded, length-sorted batches give the vectors of one text at a time."""

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime

from outcrop.embeddings.local import LOCAL_EMBEDDERS, LocalEmbedder

TEXTS = [
    "Vitamin D deficiency is associated with an increased risk of tuberculosis.",
    "A short one.",
    "Mean-pooled MiniLM vectors of a longer passage, with several clauses, numbers like 42 "
    "and 3.14, and a heading path\nIntroduction > Methods.",
]


def test_vectors_equal_those_of_a_plain_onnx_runtime_session() -> None:
    spec = LOCAL_EMBEDDERS["all-minilm-l6-v2"]
    embedder = LocalEmbedder("all-minilm-l6-v2")
    vectors = embedder.embed(TEXTS)
    folder = importlib.util.find_spec(spec.package).submodule_search_locations  # type: ignore[union-attr]
    plain = onnxruntime.InferenceSession(
        str(Path(next(iter(folder))) / spec.file), providers=["CPUExecutionProvider"]
    )
    _, encoder, _ = embedder._load()
    expected = []
    for text in TEXTS:  # one at a time, unpadded: the reference
        enc = encoder.encode(text)
        ids = np.array([enc.ids], dtype=np.int64)
        mask = np.array([enc.attention_mask], dtype=np.int64)
        (hidden,) = plain.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )
        pooled = hidden[0].mean(axis=0)
        expected.append(pooled / np.linalg.norm(pooled))
    np.testing.assert_allclose(vectors, np.array(expected), atol=2e-5)
